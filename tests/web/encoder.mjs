// The GPU weight encoder in the browser (shaders/quantize.wgsl through WebGPU): a plain bf16
// checkpoint loaded with encoder "gpu" gives the CLI's ids (whose weights the CPU encoder made),
// for q4, q8 and f16; a bad encoder value is a RequestError. Registered from run.mjs.
export default function encoderTests({ test, eq, ok, page, expected, figures }) {
  test("encoder gpu: q4 + q8 KV, f16, and sharded f16 loads give the CLI's ids (CPU-encoded there); encoder cpu too; bad value refused", async () => {
    const r = await page.evaluate(async () => {
      const run = async (model, opts) => {
        const t0 = performance.now();
        const engine = await qwen.createEngine({ model, useCache: false, cache: false, ...opts });
        const loadS = (performance.now() - t0) / 1000;
        const prompt = model.includes("sharded") ? [5, 6, 7, 8] : [1, 2, 3];
        const n = model.includes("sharded") ? 12 : 16;
        const out = await engine.generateIds({ promptIds: prompt, max_tokens: n, temperature: 0 });
        await engine.unload();
        return { ids: out.ids, loadS };
      };
      const q4 = await run("/fx/tiny/", { weights: "q4", kvCache: "q8", encoder: "gpu" });
      const q4cpu = await run("/fx/tiny/", { weights: "q4", kvCache: "q8", encoder: "cpu" });
      const f16 = await run("/fx/tiny/", { weights: "f16", encoder: "gpu" });
      const sharded = await run("/fx/sharded/", { weights: "f16", encoder: "gpu" });
      let bad = null;
      try {
        await qwen.createEngine({ model: "/fx/tiny/", useCache: false, cache: false, encoder: "tpu" });
      } catch (e) {
        bad = { name: e.name, code: e.code, message: e.message };
      }
      return { q4, q4cpu, f16, sharded, bad };
    });
    eq(r.q4.ids, expected.quant, "q4 (GPU-encoded) + q8 KV vs the CLI");
    eq(r.q4cpu.ids, expected.quant, "q4 (CPU-encoded) + q8 KV vs the CLI");
    eq(r.f16.ids, expected.tiny, "f16 (GPU-encoded) vs the CLI");
    eq(r.sharded.ids, expected.sharded, "sharded f16 (GPU-encoded) vs the CLI");
    ok(r.bad && r.bad.code === "request_invalid" || (r.bad && /encoder/.test(r.bad.message)), `bad encoder: ${JSON.stringify(r.bad)}`);
    ok(/encoder/.test(r.bad.message) && /tpu/.test(r.bad.message), `the message names the value: ${r.bad.message}`);
    figures.push(`tiny q4 load: encoder gpu ${r.q4.loadS.toFixed(2)} s, encoder cpu ${r.q4cpu.loadS.toFixed(2)} s (SwiftShader)`);
  });
}
