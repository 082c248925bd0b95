// Browser tests (issue 12): the load's GPU memory estimate arrives before any weight byte is
// requested; numeric load options are checked; the tokenizer and index size caps. Registered
// by run.mjs: `(await import("./caps.mjs")).default(ctx)`.
import fs from "node:fs";
import path from "node:path";

export default function capsTests({ test, eq, ok, page, fixtures, expected, figures }) {
  const tiny = path.join(fixtures, "tiny");
  const tinyConfig = fs.readFileSync(path.join(tiny, "config.json"), "utf8");
  // Valid files made too big by trailing spaces: refused for their size, not their syntax.
  const padded = (text, size) => text + " ".repeat(size - Buffer.byteLength(text));
  const MiB = 1 << 20;
  const folder = (name, files) => {
    const d = path.join(fixtures, name);
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(d, "config.json"), tinyConfig);
    fs.copyFileSync(path.join(tiny, "model.safetensors"), path.join(d, "model.safetensors"));
    for (const [n, body] of Object.entries(files)) fs.writeFileSync(path.join(d, n), body);
  };
  const tokBody = padded('{"version":"1.0","model":{"type":"BPE","vocab":{},"merges":[]}}', 64 * MiB + 1);
  folder("bigtokjson", { "tokenizer.json": tokBody });
  folder("bigtiktoken", { "qwen.tiktoken": "IQ== 0\n".repeat(Math.ceil((64 * MiB + 1) / 7)) });
  // An index over 16 MiB: a valid weight_map naming the one shard, then spaces.
  const index = JSON.stringify({ metadata: {}, weight_map: { "model.embed_tokens.weight": "model.safetensors" } });
  folder("bigindex", { "model.safetensors.index.json": padded(index, 16 * MiB + 1) });

  test("caps: an oversized tokenizer.json / qwen.tiktoken / index is refused with its code and limit (URL, streamed, Blob); the engine loads after", async () => {
    const r = await page.evaluate(async () => {
      const out = [];
      const attempt = async (what, f) => {
        try {
          const e = await f();
          await e.unload();
          out.push(`${what}: loaded?!`);
        } catch (e) { out.push(`${what}: ${e.name} ${e.code} ${e.message}`); }
      };
      // A body with no Content-Length that never ends: only the streamed cap stops it.
      const endless = () => new Response(new ReadableStream({ pull: (c) => c.enqueue(new Uint8Array(1 << 16).fill(32)) }));
      const endlessFetch = (name) => (url, init) => (String(url).endsWith(`/${name}`) ? endless() : fetch(url, init));
      for (const useWorker of [true, false]) {
        const w = useWorker ? "worker" : "thread";
        await attempt(`tokenizer.json URL (${w})`, () => qwen.createEngine({ model: "/fx/bigtokjson/", useCache: false, useWorker }));
        await attempt(`qwen.tiktoken URL (${w})`, () => qwen.createEngine({ model: "/fx/bigtiktoken/", useCache: false, useWorker }));
        await attempt(`index URL (${w})`, () => qwen.createEngine({ model: "/fx/bigindex/", useCache: false, useWorker }));
        await attempt(`index URL, cache (${w})`, () => qwen.createEngine({ model: "/fx/bigindex/", useCache: true, useWorker }));
      }
      await attempt("tokenizer.json endless body (thread)", () => qwen.createEngine({ model: "/fx/tiny/", useCache: false, useWorker: false, fetch: endlessFetch("tokenizer.json") }));
      await attempt("index endless body (thread)", () => qwen.createEngine({ model: "/fx/bigindex/", useCache: false, useWorker: false, fetch: endlessFetch("model.safetensors.index.json") }));
      const buf = async (n) => (await fetch(`/fx/tiny/${n}`)).arrayBuffer();
      const files = { "config.json": await buf("config.json"), "model.safetensors": await buf("model.safetensors") };
      await attempt("tokenizer.json Blob (worker)", async () => qwen.createEngine({ model: { ...files, "tokenizer.json": new Blob([new Uint8Array(64 * 1048576 + 1).fill(32)]) } }));
      await attempt("index Blob (thread)", async () => qwen.createEngine({ model: { ...files, "model.safetensors.index.json": new Blob([new Uint8Array(16 * 1048576 + 1).fill(32)]) }, useWorker: false }));
      // A cache entry left by a refused load would be found (and used) by the next one.
      const cached = (await (await caches.open(qwen.CACHE_NAME)).keys()).map((q) => q.url).filter((u) => u.includes("/big"));
      const ids = {};
      for (const useWorker of [true, false]) {
        const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, useWorker });
        ids[useWorker ? "worker" : "thread"] = (await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
        await engine.unload();
      }
      return { out, cached, ids };
    });
    const want = [
      [/^tokenizer\.json/, /: TokenizerError tokenizer_invalid .*tokenizer\.json is larger than its 64 MiB limit$/],
      [/^qwen\.tiktoken/, /: TokenizerError tokenizer_invalid .*qwen\.tiktoken is larger than its 64 MiB limit$/],
      [/^index/, /: WeightsError weights_corrupt .*model\.safetensors\.index\.json is larger than its 16 MiB limit$/],
    ];
    eq(r.out.length, 12, "attempts");
    for (const line of r.out) {
      const [, re] = want.find(([k]) => k.test(line));
      ok(re.test(line), line);
    }
    eq(r.cached, [], "cache entries left by refused loads");
    eq(r.ids.worker, expected.tiny, "ids after the refused loads (worker)");
    eq(r.ids.thread, expected.tiny, "ids after the refused loads (thread)");
  });

  test("maxGpuBytes / maxBindingBytes that are not whole numbers from 1 (maxBindingBytes: 65536) to 2^53-1 are RequestErrors naming the field", async () => {
    const r = await page.evaluate(async () => {
      const out = [];
      const values = [-1, 0, 1.5, "1000000000", NaN, Infinity, 2 ** 53, 2 ** 64, -(2 ** 64), true, [4096]];
      for (const useWorker of [true, false]) {
        for (const field of ["maxGpuBytes", "maxBindingBytes"]) {
          for (const value of field === "maxBindingBytes" ? [...values, 16, 65535] : values) {
            const label = `${field}=${typeof value === "string" ? JSON.stringify(value) : Array.isArray(value) ? `[${value}]` : value} (${useWorker ? "worker" : "thread"})`;
            try {
              const e = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, useWorker, [field]: value });
              const info = await e.info();
              await e.unload();
              out.push(`${label}: loaded (${info.gpuBytes} B)`);
            } catch (e) {
              out.push(`${label}: ${e.name} ${e.code} ${e.message}`);
            }
          }
        }
      }
      // Sane values work, and limits below the model's needs are still the fit check's
      // refusals (the smallest binding limit cannot hold the run state's 98304-byte buffer).
      const ids = [];
      for (const o of [{ maxGpuBytes: 2 ** 40, maxBindingBytes: 1 << 20 }, { maxGpuBytes: Number.MAX_SAFE_INTEGER, maxBindingBytes: Number.MAX_SAFE_INTEGER }]) {
        const good = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, ...o });
        ids.push((await good.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids);
        await good.unload();
      }
      let small = "";
      try { await qwen.createEngine({ model: "/fx/tiny/", useCache: false, maxGpuBytes: 1000 }); small = "loaded?!"; } catch (e) { small = `${e.name} ${e.code}`; }
      let binding = "";
      try { await qwen.createEngine({ model: "/fx/tiny/", useCache: false, maxBindingBytes: 65536 }); binding = "loaded?!"; } catch (e) { binding = `${e.name} ${e.code} ${e.message}`; }
      return { out, ids, small, binding };
    });
    eq(r.out.length, 48, "attempts");
    for (const line of r.out) {
      const field = line.split("=")[0];
      const min = field === "maxBindingBytes" ? 65536 : 1;
      ok(new RegExp(`: RequestError request_invalid ${field} must be a whole number from ${min} to 9007199254740991 \\(got `).test(line), line);
    }
    eq(r.ids, [expected.tiny, expected.tiny], "ids with maxGpuBytes and maxBindingBytes set");
    eq(r.small, "GpuError gpu_out_of_memory", "a budget below the need");
    ok(/^GpuError gpu_out_of_memory .*storage binding limit of 65536 bytes/.test(r.binding), r.binding);
  });

  test("estimate: the GPU memory estimate (weights + state, by format) arrives before any weight byte is requested, and equals info().gpuBytes", async () => {
    const r = await page.evaluate(async () => {
      // The header's length: the loader may read bytes [0, 8 + n) before the estimate.
      const head = new DataView(await (await fetch("/fx/tiny/model.safetensors", { headers: { Range: "bytes=0-7" } })).arrayBuffer());
      const headerEnd = 8 + Number(head.getBigUint64(0, true));
      const runs = [];
      for (const [useCache, weights, kvCache] of [[false, "f16", "f32"], [true, "q4", "q8"]]) {
        // Every request the loader makes, in order, with the estimate's arrival among them.
        const log = [];
        const logged = (url, init) => {
          const h = init?.headers;
          log.push({ url: String(url), range: (h && (typeof h.get === "function" ? h.get("Range") : h.Range)) || null });
          return fetch(url, init);
        };
        if (useCache) await qwen.deleteModelCache("/fx/tiny/");
        const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache, cache: false, weights, kvCache, useWorker: false, fetch: logged,
          onProgress: (p) => { if (p.estimate) log.push({ estimate: p.estimate, phase: p.phase }); } });
        const info = await engine.info();
        await engine.unload();
        if (useCache) await qwen.deleteModelCache("/fx/tiny/");
        runs.push({ useCache, weights, kvCache, log, info: { gpuBytes: info.gpuBytes, weights: info.weights, kvCache: info.kvCache } });
      }
      // Through the worker: the estimate comes before the download and weight events.
      const phases = [];
      const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: true, cache: false, onProgress: (p) => phases.push(p.estimate ? "estimate" : p.phase) });
      const info = await engine.info();
      await engine.unload();
      await qwen.deleteModelCache("/fx/tiny/");
      return { headerEnd, runs, phases, workerGpuBytes: info.gpuBytes };
    });
    for (const run of r.runs) {
      const what = `useCache ${run.useCache}, ${run.weights}/${run.kvCache}`;
      const at = run.log.findIndex((e) => e.estimate);
      ok(at > 0, `${what}: no estimate event`);
      eq(run.log.filter((e) => e.estimate).length, 1, `${what}: estimate events`);
      const est = run.log[at].estimate;
      eq(run.log[at].phase, "config", `${what}: the estimate's phase`);
      // Before it: config.json and probes, and of the checkpoint only its 8-byte prefix and header.
      const shardReqs = (list) => list.filter((e) => e.url && e.url.endsWith("/model.safetensors"));
      const before = shardReqs(run.log.slice(0, at));
      ok(before.length >= 1, `${what}: the header was read before the estimate: ${JSON.stringify(before)}`);
      for (const q of before) {
        const m = /^bytes=(\d+)-(\d+)$/.exec(q.range || "");
        ok(m && Number(m[2]) < r.headerEnd, `${what}: requested before the estimate: ${q.range ?? "the whole file"} (header ends at ${r.headerEnd})`);
      }
      // After it: the weights themselves (so the log sees them: the check above can fail).
      ok(shardReqs(run.log.slice(at + 1)).some((q) => !q.range || Number(/-(\d+)$/.exec(q.range)[1]) >= r.headerEnd), `${what}: no weight request after the estimate`);
      eq([est.weights, est.kvCache], [run.weights, run.kvCache], `${what}: formats in the estimate`);
      eq(est.totalBytes, est.weightBytes + est.stateBytes, `${what}: total`);
      ok(est.weightBytes > 0 && est.stateBytes > 0, `${what}: ${JSON.stringify(est)}`);
      eq(est.totalBytes, run.info.gpuBytes, `${what}: estimate vs info().gpuBytes after loading`);
      figures.push(`estimate (${what}): weights ${est.weightBytes} B + state ${est.stateBytes} B = ${est.totalBytes} B; ${before.length} header reads before it`);
    }
    const [f16, q4] = r.runs.map((x) => x.log.find((e) => e.estimate).estimate);
    ok(q4.weightBytes < f16.weightBytes && q4.stateBytes < f16.stateBytes, `q4/q8 ${JSON.stringify(q4)} not below f16/f32 ${JSON.stringify(f16)}`);
    const e = r.phases.indexOf("estimate");
    ok(e > 0 && e < r.phases.indexOf("download") && r.phases.indexOf("download") < r.phases.indexOf("weights"), `worker phases: ${r.phases.join(",")}`);
    eq(r.workerGpuBytes, f16.totalBytes, "worker: info().gpuBytes vs the in-thread estimate (same options)");
  });
}
