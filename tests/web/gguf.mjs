// GGUF files in the browser (issue 15): a `.gguf` URL, a `.gguf` File (or a one-element list)
// loads as a model folder does. The fixtures are llama.cpp's own output (run.sh: the vocab
// model, real Qwen vocabulary, through scripts/gguf-tools.sh's converter to f16 and its
// llama-quantize to Q4_0: Q4_0 matrices, the tied embedding Q8_0, norms and biases F32), and
// the CLI's greedy ids on each file are the reference. Registered from run.mjs; skipped when
// run.sh could not make the fixtures (no vocabulary, no gguf-tools).
//
// The CLI stops a --prompt-ids generation at no eos for a GGUF file (it reads eos ids from
// config.json), while the engine takes the file's tokenizer.ggml.eos_token_id as its eos: the
// comparisons ask for ignore_eos.
import fs from "node:fs";
import path from "node:path";

const PROMPT = [9707, 11, 1879];

/** The byte offset of tensor `name`'s ggml type id in a GGUF file's header. */
function typeOffset(buf, name) {
  const key = Buffer.from(name, "utf8");
  for (let at = buf.indexOf(key); at >= 8; at = buf.indexOf(key, at + 1)) {
    // A tensor info: u64 name length, the name, u32 n_dims, n_dims × u64, u32 type, u64 offset.
    if (Number(buf.readBigUInt64LE(at - 8)) !== key.length) continue;
    const dims = buf.readUInt32LE(at + key.length);
    if (dims < 1 || dims > 4) continue;
    return at + key.length + 4 + 8 * dims;
  }
  throw new Error(`no tensor info for ${name}`);
}

export default function ggufTests({ test, eq, ok, page, server, fixtures, expected, figures, root }) {
  if (!expected.ggufQ4?.length) {
    test("GGUF: fixtures missing (run.sh needs the vocabulary and scripts/gguf-tools.sh): skipped", async () => {});
    return;
  }
  const dir = path.join(fixtures, "gguf");
  const q4 = fs.readFileSync(path.join(dir, "vocab-q4_0.gguf"));
  // Broken copies, made once: a header cut short, a file without its last tensor bytes,
  // bytes that are no GGUF at all, and a Q4_0 tensor relabelled IQ4_NL (the same 18-byte
  // blocks of 32, a type the engine does not load).
  fs.writeFileSync(path.join(dir, "cut-header.gguf"), q4.subarray(0, 1 << 20));
  fs.writeFileSync(path.join(dir, "cut-data.gguf"), q4.subarray(0, q4.length - 100));
  fs.writeFileSync(path.join(dir, "garbage.gguf"), Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131 + 7) & 255)));
  const unsupported = Buffer.from(q4);
  const at = typeOffset(unsupported, "blk.0.ffn_up.weight");
  eq(unsupported.readUInt32LE(at), 2, "blk.0.ffn_up.weight is Q4_0 (ggml type 2) in the fixture");
  unsupported.writeUInt32LE(20, at); // GGML_TYPE_IQ4_NL
  fs.writeFileSync(path.join(dir, "unsupported.gguf"), unsupported);

  test("GGUF header reader (node): growing prefixes from a streamed body of known or unknown size; a body ending inside the header is truncated", async () => {
    const { initWasm, readGgufHeader } = await import(path.join(root, "pkg/engine.js"));
    const { streamFile } = await import(path.join(root, "js/sources.js"));
    await initWasm(fs.readFileSync(path.join(root, "pkg/qwen_webgpu_bg.wasm")));
    // The header's end: the data section's start, where the first tensor (aligned) begins.
    const body = (data) => {
      let i = 0;
      return new ReadableStream({ pull(c) {
        if (i >= data.length) return c.close();
        const n = 1 + Math.floor(Math.random() * 200000);
        c.enqueue(new Uint8Array(data.subarray(i, i + n)));
        i += n;
      } });
    };
    for (const [size, first] of [[q4.length, 4096], [NaN, 4096], [NaN, 8 << 20], [q4.length, 8 << 20]]) {
      const h = await readGgufHeader(streamFile(body(q4), size, "x.gguf"), "x.gguf", first);
      ok(h.header.length >= 5.9e6 && h.header.length <= Math.max(first, 12e6), `size ${size}, first ${first}: ${h.header.length} bytes read`);
      eq(Buffer.compare(Buffer.from(h.header), q4.subarray(0, h.header.length)), 0, "the prefix's bytes");
      eq(h.size, Number.isFinite(size) || h.header.length === q4.length ? q4.length : Number.MAX_SAFE_INTEGER, "the size it reports");
    }
    // Unknown size, the body ends inside the vocabulary: the size becomes known, the header is truncated.
    let err = null;
    try { await readGgufHeader(streamFile(body(q4.subarray(0, 3e6)), NaN, "cut.gguf"), "cut.gguf", 65536); } catch (e) { err = e; }
    ok(err?.name === "WeightsError" && err.code === "weights_corrupt" && /truncated|past the end/.test(err.message), `cut body: ${err?.name} ${err?.code} ${err?.message}`);
  });

  test("GGUF by URL (Range requests, worker): the CLI's greedy ids, the file's types kept, the tokenizer from its metadata", async () => {
    const r = await page.evaluate(async ({ prompt }) => {
      const progress = [];
      const t0 = performance.now();
      const engine = await qwen.createEngine({ model: "/fx/gguf/vocab-q4_0.gguf?download=true", useCache: false, context: 256,
        onProgress: (p) => progress.push(p) });
      const loadS = (performance.now() - t0) / 1000;
      const out = await engine.generateIds({ promptIds: prompt, max_tokens: 8, temperature: 0, ignore_eos: true });
      const info = await engine.info();
      const hello = await engine.tokenize("Hello");
      const text = "你好，世界 🙂 héllo";
      const round = await engine.detokenize(await engine.tokenize(text));
      const chat = await engine.chat.completions.create({ messages: [{ role: "user", content: "Hello" }], temperature: 0, max_tokens: 4 });
      await engine.unload();
      const est = progress.find((p) => p.estimate)?.estimate;
      return { ids: out.ids, info, hello, text, round: round.text, chat: chat.usage, est, loadS,
        phases: [...new Set(progress.map((p) => p.phase))], last: progress[progress.length - 1] };
    }, { prompt: PROMPT });
    eq(r.ids, expected.ggufQ4, "greedy ids vs the CLI on the same file");
    eq(r.info.weights, "gguf", "info().weights");
    eq(r.info.weightTypes, ["F32", "Q4_0", "Q8_0"], "info().weightTypes (llama-quantize's Q4_0 file)");
    eq(r.info.load.gguf, true, "info().load.gguf");
    ok(r.info.hasTokenizer, "a tokenizer from the GGUF metadata");
    eq(r.info.eos, [151645], "eos: tokenizer.ggml.eos_token_id");
    for (const id of [151643, 151644, 151645]) ok(r.info.chatStopIds.includes(id), `chat stop ids ${r.info.chatStopIds} lack ${id}`);
    eq(r.hello, [9707], "tokenize(\"Hello\")");
    eq(r.round, r.text, "detokenize(tokenize(text))");
    // The file's own chat template (Qwen3's, from the converter's tokenizer_config.json):
    // `<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n`, no system prompt added.
    eq(r.info.chatTemplate, "jinja", "info().chatTemplate: the GGUF's tokenizer.chat_template");
    ok(r.chat.prompt_tokens === 9 && r.chat.completion_tokens >= 1, `chat usage ${JSON.stringify(r.chat)}`);
    ok(r.est && r.est.weights === "gguf" && r.est.totalBytes === r.info.gpuBytes, `estimate ${JSON.stringify(r.est)} vs gpuBytes ${r.info.gpuBytes}`);
    eq(r.est.weightTypes, ["F32", "Q4_0", "Q8_0"], "the estimate's weightTypes");
    for (const p of ["config", "weights", "tokenizer", "ready"]) ok(r.phases.includes(p), `progress phases ${r.phases}`);
    ok(r.last.phase === "ready" && r.last.bytesLoaded === r.last.bytesTotal && r.last.bytesTotal >= 11e6, `last event ${JSON.stringify(r.last)}`);
    figures.push(`GGUF Q4_0 (vocab 151936, hidden 32, ${(fs.statSync(path.join(dir, "vocab-q4_0.gguf")).size / 1e6).toFixed(1)} MB) by URL: loaded in ${r.loadS.toFixed(2)} s (header, tokenizer from the metadata, weights)`);
  });

  test("GGUF as a File (no worker; the header read in growing prefixes) and as a one-element list (worker); f16 GGUF too", async () => {
    await page.setInputFiles("#files", [path.join(dir, "vocab-q4_0.gguf")]);
    const q4File = await page.evaluate(async ({ prompt }) => {
      const file = document.getElementById("files").files[0];
      const engine = await qwen.createEngine({ model: file, useWorker: false, context: 256, _testGgufFirstRead: 65536 });
      const ids = (await engine.generateIds({ promptIds: prompt, max_tokens: 8, temperature: 0, ignore_eos: true })).ids;
      const info = await engine.info();
      await engine.unload();
      return { ids, source: info.load.source, model: info.model };
    }, { prompt: PROMPT });
    eq(q4File.ids, expected.ggufQ4, "File: greedy ids vs the CLI");
    eq(q4File.source, "files", "load source");
    await page.setInputFiles("#files", [path.join(dir, "vocab-f16.gguf")]);
    const f16 = await page.evaluate(async ({ prompt }) => {
      const files = document.getElementById("files").files;
      const engine = await qwen.createEngine({ model: [files[0]], context: 256 });
      const ids = (await engine.generateIds({ promptIds: prompt, max_tokens: 8, temperature: 0, ignore_eos: true })).ids;
      const info = await engine.info();
      await engine.unload();
      return { ids, types: info.weightTypes };
    }, { prompt: PROMPT });
    eq(f16.ids, expected.ggufF16, "f16 GGUF in a list: greedy ids vs the CLI");
    eq(f16.ids, expected.vocab, "the f16 GGUF gives the safetensors folder's ids");
    eq(f16.types, ["F16", "F32"], "f16 GGUF types");
  });

  test("GGUF downloads: once into the Cache API (then read from it), streamed when the server ignores Range; not in the model store", async () => {
    const url = "/fx/gguf/vocab-q4_0.gguf";
    server.reset();
    const r = await page.evaluate(async ({ url, prompt }) => {
      await qwen.deleteModelCache(url);
      const run = async (model, opts) => {
        const phases = new Set();
        const warnings = [];
        const engine = await qwen.createEngine({ model, context: 256, ...opts,
          onProgress: (p) => { phases.add(p.phase); if (p.phase === "warning") warnings.push(p.code); } });
        const ids = (await engine.generateIds({ promptIds: prompt, max_tokens: 8, temperature: 0, ignore_eos: true })).ids;
        const info = await engine.info();
        await engine.unload();
        return { ids, download: phases.has("download"), warnings, store: info.load.store };
      };
      const first = await run(url, { cache: true });
      const cached = await qwen.hasModelInCache(url);
      const second = await run(url, {});
      const removed = await qwen.deleteModelCache(url);
      const after = await qwen.hasModelInCache(url);
      const streamed = await run("/norange/gguf/vocab-q4_0.gguf", { useCache: false });
      return { first, second, cached, removed, after, streamed };
    }, { url, prompt: PROMPT });
    eq(r.first.ids, expected.ggufQ4, "first load (downloading into the Cache API)");
    eq(r.second.ids, expected.ggufQ4, "second load (from the Cache API)");
    ok(r.first.download && !r.second.download, `download phase: first ${r.first.download}, second ${r.second.download}`);
    eq(r.first.warnings, ["cache_unsupported"], "cache: true on a GGUF URL warns that the model store does not keep it");
    eq(r.second.store?.code, "cache_unsupported", "info().load.store says why it was not stored");
    ok(r.cached && r.removed === 1 && !r.after, `hasModelInCache / deleteModelCache: ${JSON.stringify([r.cached, r.removed, r.after])}`);
    eq(r.streamed.ids, expected.ggufQ4, "streamed body (server ignores Range)");
    const whole = server.log.filter((e) => e.path.endsWith(".gguf") && e.status === 200);
    eq(whole.length, 1, `whole-file responses: ${JSON.stringify(whole.map((e) => e.path))} (the streamed load's one body)`);
  });

  test("broken GGUF files reject with WeightsError (truncated, not a GGUF; an unsupported tensor type is named), by URL and as Files", async () => {
    const r = await page.evaluate(async () => {
      const out = {};
      const attempt = async (label, model, opts = {}) => {
        const t0 = performance.now();
        try {
          const e = await qwen.createEngine({ model, useCache: false, ...opts });
          await e.unload();
          out[label] = "loaded?!";
        } catch (e) {
          out[label] = { name: e.name, code: e.code, message: e.message, s: (performance.now() - t0) / 1000 };
        }
      };
      for (const n of ["cut-header", "cut-data", "garbage", "unsupported"]) await attempt(n, `/fx/gguf/${n}.gguf`);
      const file = async (n) => new File([await (await fetch(`/fx/gguf/${n}.gguf`)).arrayBuffer()], `${n}.gguf`);
      await attempt("cut-header (File)", await file("cut-header"), { useWorker: false });
      await attempt("unsupported (File)", [await file("unsupported")]);
      await attempt("two GGUF files", [await file("garbage"), await file("cut-data")]);
      // The engine still loads a good file afterwards (same wasm instance as the File attempts).
      const e = await qwen.createEngine({ model: "/fx/gguf/vocab-q4_0.gguf", useCache: false, useWorker: false, context: 256 });
      out.after = (await e.generateIds({ promptIds: [9707, 11, 1879], max_tokens: 8, temperature: 0, ignore_eos: true })).ids;
      await e.unload();
      return out;
    });
    for (const [k, v] of Object.entries(r)) if (k !== "after") console.log(`     ${k}: ${v.name}/${v.code} (${v.s?.toFixed(2)} s): ${v.message}`);
    for (const k of ["cut-header", "cut-data", "garbage", "cut-header (File)"]) {
      ok(r[k]?.name === "WeightsError" && r[k].code === "weights_corrupt", `${k}: ${JSON.stringify(r[k])}`);
    }
    ok(/truncated|past the end|file/.test(r["cut-header"].message), `cut-header message: ${r["cut-header"].message}`);
    ok(/GGUF|magic/i.test(r.garbage.message), `garbage message: ${r.garbage.message}`);
    for (const k of ["unsupported", "unsupported (File)"]) {
      ok(r[k]?.name === "WeightsError" && r[k].code === "weights_format", `${k}: ${JSON.stringify(r[k])}`);
      ok(/IQ4_NL/.test(r[k].message) && /blk\.0\.ffn_up\.weight/.test(r[k].message), `${k} names the type and tensor: ${r[k].message}`);
    }
    ok(r["two GGUF files"]?.code === "request_invalid", `two GGUF files: ${JSON.stringify(r["two GGUF files"])}`);
    eq(r.after, expected.ggufQ4, "a good GGUF after the failures");
  });
}
