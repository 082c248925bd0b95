// Browser tests of the qwen-webgpu package: headless Chromium (SwiftShader WebGPU) loads the
// built pkg/ from a localhost server and drives it through the public API only.
// Usage: node run.mjs   (env: FIXTURES dir, CLI path, EXPECT_* from run.sh; FILTER=substring)
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { spawn } from "node:child_process";
import { startServer } from "./server.mjs";

const here = path.dirname(new URL(import.meta.url).pathname);
const root = path.resolve(here, "../..");
const fixtures = process.env.FIXTURES;
const expected = JSON.parse(fs.readFileSync(path.join(fixtures, "expected.json"), "utf8"));
const filter = process.env.FILTER || "";

const server = await startServer(root, fixtures);
const origin = `http://127.0.0.1:${server.address().port}`;
const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "qwen-webgpu-chromium-"));
const browser = await chromium.launchPersistentContext(userDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--enable-unsafe-webgpu",
    "--no-sandbox",
    "--headless=new",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    // Playwright passes its own --enable-features; Chromium keeps only the last one.
    "--enable-features=Vulkan,WebGPU",
    "--use-webgpu-adapter=swiftshader",
  ],
});

const page = await browser.newPage();
const logs = [];
page.on("console", (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}`));

async function freshPage() {
  await page.goto(`${origin}/tests/web/page.html`);
  await page.waitForFunction(() => window.qwenReady === true, null, { timeout: 60000 });
}

const tests = [];
/** A test; `opts.timeoutS` raises its time limit above TEST_TIMEOUT_S (long soak-like runs). */
const test = (name, fn, opts = {}) => tests.push({ name, fn, ...opts });
const eq = (a, b, what) => {
  if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${what}: got ${JSON.stringify(a)}, want ${JSON.stringify(b)}`);
};
const ok = (c, what) => { if (!c) throw new Error(what); };
const figures = [];

// ------------------------------------------------------------------ tests

test("streamed-body reader (node): random reads over random chunking", async () => {
  const { streamFile } = await import(path.join(root, "js/sources.js"));
  const data = new Uint8Array(100000).map((_, i) => (i * 7) & 255);
  for (let trial = 0; trial < 30; trial++) {
    let i = 0;
    const body = new ReadableStream({
      pull(c) { if (i >= data.length) return c.close(); const n = 1 + Math.floor(Math.random() * 5000); c.enqueue(data.slice(i, i + n)); i += n; },
    });
    const f = streamFile(body, data.length, "t");
    let p = 0;
    for (;;) {
      const s = p + Math.floor(Math.random() * 3000);
      if (s >= data.length) break;
      const e = Math.min(data.length, s + 1 + Math.floor(Math.random() * 9000));
      const got = await f.read(s, e);
      for (let k = 0; k < got.length; k++) if (got[k] !== data[s + k]) throw new Error(`trial ${trial}: byte ${s + k} differs`);
      p = e;
    }
    let threw = false;
    try { await f.read(data.length, data.length + 10); } catch (e) { threw = /truncated/.test(e.message); }
    ok(threw, "reading past the end names truncation");
  }
});

test("URL load (Range requests, worker) gives the CLI's greedy ids", async () => {
  const r = await page.evaluate(async ({ expectIds }) => {
    const progress = [];
    const t0 = performance.now();
    const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, onProgress: (p) => progress.push(p) });
    const loadS = (performance.now() - t0) / 1000;
    const out = await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
    const warm = await engine.generateIds({ promptIds: Array.from({ length: 32 }, (_, i) => i + 1), max_tokens: 64, temperature: 0 });
    const info = await engine.info();
    await engine.unload();
    return { ids: out.ids, usage: out.usage, warm: warm.usage, finish: out.finish_reason, loadS, info,
      phases: [...new Set(progress.map((p) => p.phase))], last: progress[progress.length - 1] };
  }, { expectIds: expected.tiny });
  eq(r.ids, expected.tiny, "greedy ids vs CLI");
  eq(r.finish, "length", "finish_reason");
  ok(r.phases.includes("weights") && r.phases.includes("ready"), `progress phases ${r.phases}`);
  ok(r.last.loaded === r.last.total && r.last.total > 0, "progress reaches total");
  figures.push(`tiny (hidden 64, 2 layers, vocab 301) on ${r.info.adapter}: load ${r.loadS.toFixed(2)}s; first call (compiles kernels) TTFT ${r.usage.time_to_first_token_s.toFixed(3)}s; warm: 32-token prompt TTFT ${r.warm.time_to_first_token_s.toFixed(3)}s = prefill ${r.warm.prefill_tokens_per_s.toFixed(0)} tok/s, decode ${r.warm.decode_tokens_per_s.toFixed(1)} tok/s over ${r.warm.completion_tokens} tokens`);
});


test("sampling on the GPU (temperature, top-k, top-p, penalty) gives the CLI's ids for the same seed", async () => {
  const r = await page.evaluate(async () => {
    const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false });
    const req = { promptIds: [1, 2, 3], max_tokens: 16, temperature: 0.9, top_k: 40, top_p: 0.9, repetition_penalty: 1.2, seed: 42 };
    const a = await engine.generateIds(req);
    const b = await engine.generateIds(req);
    const c = await engine.generateIds({ ...req, seed: 43 });
    await engine.unload();
    return { a: a.ids, b: b.ids, c: c.ids };
  });
  eq(r.a, expected.sampled, "sampled ids vs CLI");
  eq(r.b, r.a, "the same seed again");
  ok(JSON.stringify(r.c) !== JSON.stringify(r.a), "another seed draws other ids");
});

test("a second turn prefills only what is new (KV cache reused) and gives the CLI's ids for the whole sequence", async () => {
  const r = await page.evaluate(async ({ first }) => {
    const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false });
    const a = await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
    const b = await engine.generateIds({ promptIds: [1, 2, 3, ...first, 5, 6, 7], max_tokens: 16, temperature: 0 });
    // An edit early in the conversation: only its first two ids are reused.
    const c = await engine.generateIds({ promptIds: [1, 2, 4, ...first, 5, 6, 7], max_tokens: 16, temperature: 0 });
    await engine.unload();
    return { a: a.ids, b: b.ids, bCached: b.usage.prompt_tokens_details.cached_tokens, aCached: a.usage.prompt_tokens_details.cached_tokens,
      cCached: c.usage.prompt_tokens_details.cached_tokens };
  }, { first: expected.tiny });
  eq(r.a, expected.tiny, "first turn");
  eq(r.aCached, 0, "first turn cached tokens");
  eq(r.bCached, 3 + 15, "second turn cached tokens (the first turn's last id was never fed)");
  eq(r.b, expected.turn2, "second turn ids vs the CLI on the whole sequence");
  eq(r.cCached, 2, "edited turn cached tokens");
});

test("streamed-body fallback (server ignores Range) gives the same ids", async () => {
  const r = await page.evaluate(async () => {
    const engine = await qwen.createEngine({ model: "/norange/tiny/", useCache: false });
    const out = await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
    await engine.unload();
    return out.ids;
  });
  eq(r, expected.tiny, "greedy ids vs CLI");
});

test("sharded checkpoint (index.json + 2 shards, tied embeddings) gives the CLI's ids", async () => {
  const r = await page.evaluate(async () => {
    const engine = await qwen.createEngine({ model: "/fx/sharded", useCache: false });
    const out = await engine.generateIds({ promptIds: [5, 6, 7, 8], max_tokens: 12, temperature: 0 });
    await engine.unload();
    return out.ids;
  });
  eq(r, expected.sharded, "greedy ids vs CLI");
});

test("q4 weights + q8 KV cache give the CLI's ids with the same options", async () => {
  const r = await page.evaluate(async () => {
    const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, weights: "q4", kvCache: "q8" });
    const out = await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
    await engine.unload();
    return out.ids;
  });
  eq(r, expected.quant, "greedy ids vs CLI --weights q4 --kv-cache q8");
});

test("pre-quantized q4 folder: weights omitted = the file's format (one file; shards via the cache); f16 asked is refused", async () => {
  const r = await page.evaluate(async () => {
    const infos = [];
    const run = async (model, opts) => {
      const engine = await qwen.createEngine({ model, ...opts });
      const out = await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
      const info = await engine.info();
      infos.push([info.weights, info.kvCache]);
      await engine.unload();
      return out.ids;
    };
    const single = await run("/fx/tiny-q4/", { useCache: false });
    const auto = await run("/fx/tiny-q4/", { useCache: false, weights: "auto", kvCache: "q8" });
    await qwen.deleteModelCache("/fx/tiny-q4-sharded/");
    const sharded = await run("/fx/tiny-q4-sharded/", { weights: "q4" });
    const cached = await qwen.hasModelInCache("/fx/tiny-q4-sharded/");
    await qwen.deleteModelCache("/fx/tiny-q4-sharded/");
    let err = "";
    try { await run("/fx/tiny-q4/", { useCache: false, weights: "f16" }); err = "loaded?!"; } catch (e) { err = `${e.name}: ${e.message}`; }
    return { single, auto, sharded, cached, err, infos };
  });
  eq(r.single, expected.prequant, "pre-quantized folder vs the CLI on it");
  eq(r.auto, expected.prequant, "weights: auto");
  eq(r.infos, [["q4", "f32"], ["q4", "q8"], ["q4", "f32"]], "info() weights and kvCache (auto resolved)");
  eq(r.sharded, expected.prequant, "sharded pre-quantized folder (cached) vs the CLI");
  ok(r.cached, "the shards were cached");
  ok(/^WeightsError: .*pre-quantized to q4/.test(r.err), r.err);
});

test("File objects (input type=file, no worker) give the CLI's ids", async () => {
  await page.setInputFiles("#files", [path.join(fixtures, "tiny/config.json"), path.join(fixtures, "tiny/model.safetensors")]);
  const r = await page.evaluate(async () => {
    const files = document.getElementById("files").files;
    const engine = await qwen.createEngine({ model: files, useWorker: false });
    const out = await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
    await engine.unload();
    // ArrayBuffers by name, through the worker.
    const buf = async (n) => (await fetch(`/fx/tiny/${n}`)).arrayBuffer();
    const e2 = await qwen.createEngine({ model: { "config.json": await buf("config.json"), "model.safetensors": await buf("model.safetensors") } });
    const out2 = await e2.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
    await e2.unload();
    return [out.ids, out2.ids];
  });
  eq(r[0], expected.tiny, "File ids vs CLI");
  eq(r[1], expected.tiny, "ArrayBuffer ids vs CLI");
});

// ------------------------------------------------------------------ hostile servers and files

test("test server (node): encoded dot-dot, a FIFO and an unreadable file are refused; the server lives on", async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qwen-web-server-"));
  fs.chmodSync(tmp, 0o755);
  for (const d of ["root", "fx/a", "fx-secret"]) fs.mkdirSync(path.join(tmp, d), { recursive: true });
  fs.writeFileSync(path.join(tmp, "fx-secret/s.txt"), "secret");
  fs.writeFileSync(path.join(tmp, "fx/a/ok.txt"), "ok");
  fs.writeFileSync(path.join(tmp, "fx/a/noread.bin"), "hidden");
  fs.chmodSync(path.join(tmp, "fx/a/noread.bin"), 0o000);
  await new Promise((r) => spawn("mkfifo", [path.join(tmp, "fx/a/fifo.bin")]).on("exit", r));
  // chmod 000 stops only a non-root reader: as root, run the server as nobody.
  const asRoot = process.getuid?.() === 0;
  const args = [path.join(here, "server.mjs"), path.join(tmp, "root"), path.join(tmp, "fx")];
  const child = asRoot ? spawn("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, ...args], { stdio: ["ignore", "pipe", "pipe"] })
    : spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => { err += d; });
  try {
    const port = await new Promise((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d) => { out += d; const m = out.match(/listening (\d+)/); if (m) resolve(m[1]); });
      child.on("exit", (c) => reject(new Error(`server exited ${c}: ${err}`)));
      setTimeout(() => reject(new Error("server printed no port")), 10000);
    });
    const get = async (p) => {
      try {
        const r = await fetch(`http://127.0.0.1:${port}${p}`, { signal: AbortSignal.timeout(5000) });
        return { status: r.status, body: await r.text() };
      } catch (e) { return { status: -1, body: String(e) }; }
    };
    const ok1 = await get("/fx/a/ok.txt");
    ok(ok1.status === 200 && ok1.body === "ok", `plain file: ${ok1.status}`);
    const sec = await get("/fx/..%2ffx-secret/s.txt");
    ok(sec.status === 403 && !sec.body.includes("secret"), `/fx/..%2ffx-secret/s.txt: ${sec.status} ${sec.body}`);
    const fifo = await get("/fx/a/fifo.bin");
    ok(fifo.status === 404, `FIFO: ${fifo.status} ${fifo.body.slice(0, 80)}`);
    const nr = await get("/fx/a/noread.bin");
    ok(nr.status === 403 && !nr.body.includes("hidden"), `unreadable file: ${nr.status} ${nr.body.slice(0, 80)}`);
    await new Promise((r) => setTimeout(r, 200));
    ok(child.exitCode === null, `the server died: ${err.slice(0, 300)}`);
    ok((await get("/fx/a/ok.txt")).status === 200, "the server stopped answering");
  } finally {
    child.kill();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test("a server that answers later Range requests with the whole file: each shard is downloaded once, ids unchanged", async () => {
  for (const k of [...server.counts.keys()]) if (k.startsWith("/rangeonce/")) server.counts.delete(k);
  const r = await page.evaluate(async () => {
    const out = [];
    for (const [model, ids, n] of [["/rangeonce/tiny/", [1, 2, 3], 16], ["/rangeonce/sharded/", [5, 6, 7, 8], 12]]) {
      const engine = await qwen.createEngine({ model, useCache: false });
      out.push((await engine.generateIds({ promptIds: ids, max_tokens: n, temperature: 0 })).ids);
      await engine.unload();
    }
    return out;
  });
  eq(r[0], expected.tiny, "greedy ids vs CLI (one file)");
  eq(r[1], expected.sharded, "greedy ids vs CLI (shards)");
  const whole = Object.fromEntries([...server.counts].filter(([k]) => k.startsWith("/rangeonce/") && k.endsWith(".safetensors")));
  ok(Object.keys(whole).length >= 1 && Object.values(whole).every((n) => n <= 1), `whole-file downloads per shard: ${JSON.stringify(whole)}`);
});

test("context / maxBatch that are not whole numbers from 1 to 2^20 are RequestErrors naming the field", async () => {
  const r = await page.evaluate(async () => {
    const out = [];
    const bad = [["context", -1], ["context", 2 ** 32 + 64], ["context", 1.5], ["context", "64"], ["context", 0], ["context", NaN],
      ["maxBatch", 2 ** 32 + 4], ["maxBatch", -8], ["maxBatch", Infinity]];
    for (const useWorker of [true, false]) {
      for (const [field, value] of bad) {
        try {
          const e = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, useWorker, [field]: value });
          const info = await e.info();
          await e.unload();
          out.push(`${field}=${value} (${useWorker ? "worker" : "thread"}): loaded with context ${info.context}`);
        } catch (e) {
          out.push(`${field}=${value} (${useWorker ? "worker" : "thread"}): ${e.name} ${e.code} ${e.message}`);
        }
      }
    }
    const good = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, context: 64, maxBatch: 8 });
    const info = await good.info();
    await good.unload();
    return { out, context: info.context };
  });
  for (const line of r.out) ok(/: RequestError request_invalid (context|maxBatch) must be a whole number/.test(line) && line.includes(line.split("=")[0]), line);
  eq(r.context, 64, "a good context is used");
});

// Index files naming shards outside the folder.
const tinyConfig = fs.readFileSync(path.join(fixtures, "tiny/config.json"), "utf8");
const badShards = ["../tiny/model.safetensors", "..%2ftiny%2fmodel.safetensors", "/fx/tiny/model.safetensors", "sub\\model.safetensors",
  `${origin}/fx/tiny/model.safetensors`, "..", ""];
badShards.forEach((name, i) => {
  const d = path.join(fixtures, `badshard${i}`);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, "config.json"), tinyConfig);
  fs.writeFileSync(path.join(d, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: { "model.embed_tokens.weight": name } }));
});
// A config.json over its 1 MiB cap (valid JSON: the tiny config and 2 MiB of spaces).
fs.mkdirSync(path.join(fixtures, "bigconfig"), { recursive: true });
fs.writeFileSync(path.join(fixtures, "bigconfig/config.json"), tinyConfig + " ".repeat(2 << 20));
fs.copyFileSync(path.join(fixtures, "tiny/model.safetensors"), path.join(fixtures, "bigconfig/model.safetensors"));

test("index shard names that leave the folder (../, %2f, absolute, backslash) are refused", async () => {
  const r = await page.evaluate(async (n) => {
    const out = [];
    for (let i = 0; i < n; i++) {
      try {
        const e = await qwen.createEngine({ model: `/fx/badshard${i}/`, useCache: false });
        await e.unload();
        out.push("loaded?!");
      } catch (e) { out.push(`${e.name} ${e.code} ${e.message}`); }
    }
    return out;
  }, badShards.length);
  r.forEach((line, i) => ok(/^WeightsError weights_corrupt .*bad shard name/.test(line), `${JSON.stringify(badShards[i])}: ${line}`));
});

test("whole files are capped: an oversized config.json and an endless one are refused, naming the file and limit", async () => {
  const r = await page.evaluate(async () => {
    const out = [];
    const tries = [["/bigconfig/ URL", () => qwen.createEngine({ model: "/fx/bigconfig/", useCache: false })],
      ["endless URL", () => qwen.createEngine({ model: "/endless/tiny/", useCache: false })],
      ["endless URL, cache", () => qwen.createEngine({ model: "/endless/tiny/", useCache: true })],
      ["big Blob", async () => qwen.createEngine({ model: { "config.json": new Blob([await (await fetch("/fx/bigconfig/config.json")).arrayBuffer()]), "model.safetensors": new ArrayBuffer(8) }, useWorker: false })]];
    for (const [what, f] of tries) {
      const t0 = performance.now();
      try {
        const e = await Promise.race([f(), new Promise((_, rej) => setTimeout(() => rej(new Error("still reading after 20 s")), 20000))]);
        await e.unload();
        out.push(`${what}: loaded?!`);
      } catch (e) { out.push(`${what}: ${e.name} ${e.code} ${e.message} [${((performance.now() - t0) / 1000).toFixed(1)} s]`); }
    }
    return out;
  });
  for (const line of r) ok(/: ConfigError config_invalid .*config\.json is larger than its 1 MiB limit/.test(line), line);
  figures.push(...r.map((l) => `cap: ${l}`));
});

test("bad URL / corrupt files reject with named errors; a later good load works", async () => {
  const r = await page.evaluate(async () => {
    const errs = [];
    const codes = [];
    for (const model of ["/fx/nope/", "/fx/truncated/", "/fx/garbage/", "http://127.0.0.1:9/none/"]) {
      try {
        await qwen.createEngine({ model, useCache: false });
        errs.push(`${model}: loaded?!`);
      } catch (e) {
        errs.push(`${model}: ${e.name}: ${e.message}`);
        codes.push(e.code);
      }
    }
    // Files: truncated safetensors, inline (same wasm module instance as later loads).
    const tr = new File([await (await fetch("/fx/truncated/model.safetensors")).arrayBuffer()], "model.safetensors");
    const cfg = new File([await (await fetch("/fx/tiny/config.json")).arrayBuffer()], "config.json");
    try { await qwen.createEngine({ model: [cfg, tr], useWorker: false }); errs.push("files: loaded?!"); }
    catch (e) { errs.push(`files: ${e.name}: ${e.message}`); codes.push(e.code); }
    const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, useWorker: false });
    const out = await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
    await engine.unload();
    return { errs, codes, ids: out.ids };
  });
  console.log(r.errs.map((e) => `     ${e}`).join("\n"));
  ok(/^\/fx\/nope\/: ConfigError: .*config\.json.*404/.test(r.errs[0]), r.errs[0]);
  ok(/^\/fx\/truncated\/: WeightsError: .*(truncated|out of range|does not fit)/.test(r.errs[1]), r.errs[1]);
  ok(/^\/fx\/garbage\/: WeightsError: /.test(r.errs[2]), r.errs[2]);
  ok(/NetworkError: cannot fetch/.test(r.errs[3]), r.errs[3]);
  ok(/^files: WeightsError: /.test(r.errs[4]), r.errs[4]);
  // Codes: through the worker (the first four) and on this thread (the File load).
  eq(r.codes, ["config_missing", "weights_corrupt", "weights_corrupt", "network", "weights_corrupt"], "error codes");
  eq(r.ids, expected.tiny, "ids after failed loads");
});

test("fit check refuses before downloading weights", async () => {
  const r = await page.evaluate(async () => {
    const phases = [];
    try {
      await qwen.createEngine({ model: "/fx/tiny/", useCache: false, maxGpuBytes: 1000, onProgress: (p) => phases.push(p.phase) });
      return "loaded?!";
    } catch (e) {
      return { err: `${e.name}: ${e.message}`, phases };
    }
  });
  ok(/^GpuError: .*the model needs .* MiB of GPU memory/.test(r.err), r.err);
  ok(!r.phases.includes("weights"), `phases ${r.phases}`);
});

test("abort mid-stream stops promptly, then the engine generates again; calls are queued", async () => {
  const r = await page.evaluate(async () => {
    const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false });
    const ctl = new AbortController();
    const seen = [];
    const aborted = await engine.generateIds({
      promptIds: [1, 2, 3], max_tokens: 200, temperature: 0, ignore_eos: true, signal: ctl.signal,
      onToken: (t) => { seen.push(t); if (seen.length === 3) ctl.abort(); },
    });
    // Two calls made at once: run one after the other, each with its own answer.
    const [a, b] = await Promise.all([
      engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 }),
      engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 5, temperature: 0 }),
    ]);
    // Sampling with a seed repeats.
    const s1 = await engine.generateIds({ promptIds: [4, 5], max_tokens: 8, temperature: 0.8, top_p: 0.9, seed: 42 });
    const s2 = await engine.generateIds({ promptIds: [4, 5], max_tokens: 8, temperature: 0.8, top_p: 0.9, seed: 42 });
    // A bad request is a RequestError and leaves the engine usable.
    let bad = "";
    try { await engine.generateIds({ promptIds: [1, 99999], max_tokens: 4 }); } catch (e) { bad = `${e.name}: ${e.message}`; }
    // Numbers wasm would wrap or truncate are refused by name.
    const refused = [];
    for (const req of [{ max_tokens: -1 }, { max_tokens: 2.5 }, { top_k: -3 }, { seed: "7" }, { promptIds: [1, -2] },
      { promptIds: [1.5] }, { temperature: "hot" }, { top_p: NaN }, { stop_token_ids: [1e10] }]) {
      try { await engine.generateIds({ promptIds: [1, 2], max_tokens: 2, ...req }); refused.push("accepted"); } catch (e) { refused.push(e.name); }
    }
    const after = await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
    await engine.unload();
    let unloaded = "";
    try { await engine.generateIds({ promptIds: [1], max_tokens: 1 }); } catch (e) { unloaded = `${e.name}: ${e.message}`; }
    return { aborted: { n: aborted.ids.length, finish: aborted.finish_reason }, a: a.ids, b: b.ids, s1: s1.ids, s2: s2.ids, bad, refused, after: after.ids, unloaded };
  });
  ok(r.aborted.finish === "abort", `finish_reason ${r.aborted.finish}`);
  ok(r.aborted.n >= 3 && r.aborted.n <= 5, `aborted after ${r.aborted.n} tokens`);
  eq(r.a, expected.tiny, "queued call 1");
  eq(r.b, expected.tiny.slice(0, 5), "queued call 2");
  eq(r.s1, r.s2, "seeded sampling repeats");
  ok(/^RequestError: .*99999/.test(r.bad), r.bad);
  eq(r.refused, Array(9).fill("RequestError"), "bad numbers refused");
  eq(r.after, expected.tiny, "ids after abort and error");
  ok(/^RequestError: .*unloaded/.test(r.unloaded), r.unloaded);
});

test("Cache API: download cached, reused, deleted; a failed download leaves nothing", async () => {
  const r = await page.evaluate(async () => {
    await qwen.deleteModelCache("/fx/tiny/");
    const before = await qwen.hasModelInCache("/fx/tiny/");
    const phases = new Set();
    const e1 = await qwen.createEngine({ model: "/fx/tiny/", cache: false, onProgress: (p) => phases.add(p.phase) });
    const ids1 = (await e1.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
    await e1.unload();
    const cached = await qwen.hasModelInCache("/fx/tiny/");
    const phases2 = new Set();
    const e2 = await qwen.createEngine({ model: "/fx/tiny/", cache: false, onProgress: (p) => phases2.add(p.phase) });
    const ids2 = (await e2.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
    await e2.unload();
    const removed = await qwen.deleteModelCache("/fx/tiny/");
    const after = await qwen.hasModelInCache("/fx/tiny/");
    let err = "";
    try { await qwen.createEngine({ model: "/fx/truncated/", cache: false }); } catch (e) { err = e.name; }
    const poisoned = (await (await caches.open(qwen.CACHE_NAME)).keys()).map((q) => q.url).filter((u) => u.includes("truncated"));
    return { before, cached, after, removed, ids1, ids2, d1: phases.has("download"), d2: phases2.has("download"), err, poisoned };
  });
  ok(!r.before && r.cached && !r.after && r.removed >= 2, JSON.stringify(r));
  ok(r.d1 && !r.d2, `download phase first time only: ${r.d1} ${r.d2}`);
  eq(r.ids1, expected.tiny, "ids (downloading)");
  eq(r.ids2, expected.tiny, "ids (from cache)");
  ok(r.err === "WeightsError", `truncated load error ${r.err}`);
  eq(r.poisoned, [], "cache entries left by the failed load");
});

test("error codes survive the worker: load, request, context, format, tokenizer, unload, abort", async () => {
  const r = await page.evaluate(async () => {
    const got = {};
    const attempt = async (label, fn) => {
      try { await fn(); got[label] = "resolved?!"; } catch (e) { got[label] = { name: e.name, code: e.code, message: e.message }; }
    };
    await attempt("fit", () => qwen.createEngine({ model: "/fx/tiny/", useCache: false, maxGpuBytes: 1000 }));
    await attempt("format", () => qwen.createEngine({ model: "/fx/tiny-q4/", useCache: false, weights: "f16" }));
    await attempt("badOption", () => qwen.createEngine({ model: "/fx/tiny/", useCache: false, context: -5 }));
    const ctl = new AbortController();
    await attempt("abortLoad", () => qwen.createEngine({ model: "/slow/tiny/", useCache: false, signal: ctl.signal,
      onProgress: (p) => { if (p.phase === "weights") ctl.abort(); } }));
    // A missing shard of an index: /fx/sharded/ without one of its files, as Files.
    const get = async (n) => (await fetch(`/fx/sharded/${n}`)).arrayBuffer();
    const index = JSON.parse(new TextDecoder().decode(await get("model.safetensors.index.json")));
    const shards = [...new Set(Object.values(index.weight_map))].sort();
    await attempt("missingShard", async () => qwen.createEngine({ model: {
      "config.json": await get("config.json"), "model.safetensors.index.json": await get("model.safetensors.index.json"),
      [shards[0]]: await get(shards[0]) } }));
    const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, context: 16 });
    await attempt("maxTokens", () => engine.generateIds({ promptIds: [1, 2], max_tokens: -1 }));
    await attempt("tokenId", () => engine.generateIds({ promptIds: [1, 99999], max_tokens: 2 }));
    await attempt("longPrompt", () => engine.generateIds({ promptIds: Array.from({ length: 20 }, (_, i) => i + 1), max_tokens: 2 }));
    await attempt("chatNoTokenizer", async () => { for await (const c of engine.chat.completions.create({ messages: [{ role: "user", content: "hi" }], stream: true })) void c; });
    await attempt("tokenize", () => engine.tokenize("hi"));
    const ok = (await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 4, temperature: 0 })).ids.length;
    await engine.unload();
    await attempt("unloaded", () => engine.generateIds({ promptIds: [1], max_tokens: 1 }));
    return { got, ok, table: qwen.ERROR_CODES };
  });
  const want = {
    fit: ["GpuError", "gpu_out_of_memory"], format: ["WeightsError", "weights_format"], badOption: ["RequestError", "request_invalid"],
    abortLoad: ["AbortError", "aborted"], missingShard: ["WeightsError", "weights_missing"],
    maxTokens: ["RequestError", "request_invalid"], tokenId: ["RequestError", "request_invalid"], longPrompt: ["RequestError", "context_full"],
    chatNoTokenizer: ["TokenizerError", "tokenizer_missing"], tokenize: ["TokenizerError", "tokenizer_missing"],
    unloaded: ["RequestError", "engine_unloaded"],
  };
  for (const k of ["maxTokens", "badOption", "longPrompt", "chatNoTokenizer"]) console.log(`     ${k}: ${r.got[k]?.name}/${r.got[k]?.code}: ${r.got[k]?.message}`);
  for (const [k, [name, code]] of Object.entries(want)) {
    const g = r.got[k];
    ok(g && g.name === name && g.code === code, `${k}: want ${name}/${code}, got ${JSON.stringify(g)}`);
    ok(r.table[code] === name, `ERROR_CODES[${code}] = ${r.table[code]}`);
  }
  ok(/max_tokens/.test(r.got.maxTokens.message), `the field is named: ${r.got.maxTokens.message}`);
  ok(/context/.test(r.got.badOption.message), `the option is named: ${r.got.badOption.message}`);
  eq(r.ok, 4, "the engine works after refused requests");
});

test("worker mode: the page's thread imports no engine code (engine.js, sources.js, wasm glue); useWorker: false does", async () => {
  // Chromium reports the worker's module fetches in the page's resource timing too, so the
  // page's own module graph is what was fetched before the first engine, and what the worker
  // fetched comes after worker.js; the server sends no-store, so each realm fetches anew.
  const r = await page.evaluate(async () => {
    const names = () => performance.getEntriesByType("resource").map((e) => new URL(e.name).pathname).filter((p) => p.startsWith("/pkg/"));
    const atLoad = names();
    const engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false });
    const ids = (await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
    await engine.unload();
    const worker = names();
    const e2 = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, useWorker: false });
    const ids2 = (await e2.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
    await e2.unload();
    return { atLoad, worker, inThread: names(), ids, ids2 };
  });
  console.log(`     page thread at load: ${r.atLoad.join(" ")}`);
  eq(r.ids, expected.tiny, "worker ids");
  eq(r.ids2, expected.tiny, "in-thread ids");
  eq([...r.atLoad].sort(), ["/pkg/cache.js", "/pkg/errors.js", "/pkg/index.js", "/pkg/stream.js"], "the page's module graph");
  const count = (list, m) => list.filter((p) => p === m).length;
  const w = r.worker.indexOf("/pkg/worker.js");
  ok(w >= r.atLoad.length, `worker.js at ${w} in ${r.worker}`);
  for (const m of ["/pkg/engine.js", "/pkg/sources.js", "/pkg/qwen_webgpu.js"]) {
    eq(count(r.worker, m), 1, `fetches of ${m} after a worker load (the worker's own)`);
    ok(r.worker.indexOf(m) > w, `${m} was fetched before the worker started`);
    eq(count(r.inThread, m), 2, `fetches of ${m} after a useWorker: false load`);
  }
  // The worker's own fetch() calls are in its own timeline: the wasm shows only when the page fetched it.
  eq(count(r.worker, "/pkg/qwen_webgpu_bg.wasm"), 0, "wasm fetched by the page in worker mode");
  eq(count(r.inThread, "/pkg/qwen_webgpu_bg.wasm"), 1, "wasm fetched by the page with useWorker: false");
});

test("chat rules come from wasm: ChatML constants, stop ids (config + generation_config eos), prompt budget", async () => {
  const rs = fs.readFileSync(path.join(root, "src/tokenizer/chat.rs"), "utf8");
  const system = JSON.parse(rs.match(/default_system: ("(?:[^"\\]|\\.)*")/)[1]);
  const endOfText = Number(rs.match(/end_of_text_id: (\d+)/)[1]);
  const r = await page.evaluate(async ({ stopAt }) => {
    const tiny = await qwen.createEngine({ model: "/fx/tiny/", useCache: false });
    const plain = await tiny.info();
    await tiny.unload();
    // eos ids from config.json and generation_config.json: generation stops at them.
    const get = async (n) => (await fetch(`/fx/tiny/${n}`)).arrayBuffer();
    const cfg = JSON.parse(new TextDecoder().decode(await get("config.json")));
    const weights = await get("model.safetensors");
    const files = (c, g) => ({ "config.json": JSON.stringify(c), "model.safetensors": weights, ...(g ? { "generation_config.json": JSON.stringify(g) } : {}) });
    const e = await qwen.createEngine({ model: files({ ...cfg, eos_token_id: [300, 299] }, { eos_token_id: stopAt }) });
    const info = await e.info();
    const stopped = await e.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
    const ignored = await e.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0, ignore_eos: true });
    await e.unload();
    let big = "";
    try { await qwen.createEngine({ model: files({ ...cfg, eos_token_id: 2 ** 32 }) }); big = "loaded?!"; } catch (err) { big = `${err.name}/${err.code}: ${err.message}`; }
    return { plain, info, stopped, ignored, big };
  }, { stopAt: expected.tiny[3] });
  eq(r.plain.chatFormat.default_system, system, "default system prompt vs src/tokenizer/chat.rs");
  eq(r.plain.chatFormat.end_of_text_id, endOfText, "end_of_text_id vs src/tokenizer/chat.rs");
  eq(r.plain.eos, [], "no eos in the tiny config");
  eq(r.plain.stopIds, [endOfText], "stop ids without eos or tokenizer: <|endoftext|>");
  eq(r.plain.chatPromptBudget, r.plain.context - Math.min(256, Math.floor(r.plain.context / 2)), "prompt budget rule");
  const eos = [...new Set([300, 299, expected.tiny[3]])];
  eq(r.info.eos, eos, "eos from config.json then generation_config.json");
  eq(r.info.stopIds, [...eos].sort((a, b) => a - b), "stop ids");
  const at = expected.tiny.findIndex((id) => eos.includes(id));
  eq(r.stopped.finish_reason, "stop", "stopped at an eos");
  eq(r.stopped.ids, expected.tiny.slice(0, at + 1), "ids up to (and with) the first eos");
  eq(r.ignored.ids, expected.tiny, "ignore_eos");
  ok(/^ConfigError\/config_invalid: .*eos_token_id/.test(r.big), r.big);
});

if (expected.vocab.length) {
  test("chat with the real tokenizer: the default system prompt is CHATML's, the prompt budget is the crate's", async () => {
    const rs = fs.readFileSync(path.join(root, "src/tokenizer/chat.rs"), "utf8");
    const system = JSON.parse(rs.match(/default_system: ("(?:[^"\\]|\\.)*")/)[1]);
    const r = await page.evaluate(async ({ system }) => {
      const engine = await qwen.createEngine({ model: "/fx/vocab/", useCache: false, context: 256 });
      const info = await engine.info();
      const ask = (messages, max_tokens = 4) => engine.chat.completions.create({ messages, temperature: 0, max_tokens });
      const user = [{ role: "user", content: "你好" }];
      const a = await ask(user);
      // The same conversation with the default system prompt spelled out: the same prompt, so
      // all of it but its last token is still in the KV cache.
      const b = await ask([{ role: "system", content: system }, ...user]);
      // A long history with max_tokens 200 in a 256-token context: the prompt may take
      // 256 - min(200, 128) = 128 tokens (the old JS rule allowed 56), older turns dropped.
      const turn = "这是一段比较长的历史对话内容，用来测试提示词的预算。";
      const history = [];
      for (let i = 0; i < 8; i++) history.push({ role: "user", content: `${i} ${turn}` }, { role: "assistant", content: `${i} ${turn}` });
      const c = await ask([...history, ...user], 200);
      let full = "";
      try { await ask([{ role: "user", content: turn.repeat(20) }], 200); full = "resolved?!"; } catch (e) { full = `${e.name}/${e.code}`; }
      await engine.unload();
      return { info, a: a.usage, b: b.usage, c: c.usage, aText: a.choices[0].message.content, bText: b.choices[0].message.content, full };
    }, { system });
    eq(r.info.chatStopIds, [...new Set([...r.info.eos, 151643, 151644, 151645])].sort((x, y) => x - y), "chat stop ids: <|endoftext|>, <|im_start|>, <|im_end|>");
    eq(r.b.prompt_tokens, r.a.prompt_tokens, "prompt with the default system prompt spelled out");
    eq(r.b.prompt_tokens_details.cached_tokens, r.b.prompt_tokens - 1, "the implicit system prompt is CHATML.default_system");
    eq(r.bText, r.aText, "same reply");
    ok(r.c.prompt_tokens > 56 && r.c.prompt_tokens <= 128, `prompt of the long chat: ${r.c.prompt_tokens} tokens (budget 128)`);
    eq(r.full, "RequestError/context_full", "a last message over the budget");
  });

  test("leaving a streamed chat early (break) aborts it and the engine answers the next call (worker and in-thread)", async () => {
    const r = await page.evaluate(async () => {
      const out = {};
      for (const useWorker of [true, false]) {
        const engine = await qwen.createEngine({ model: "/fx/vocab/", useCache: false, context: 256, useWorker });
        const messages = [{ role: "user", content: "你好" }];
        const whole = await engine.chat.completions.create({ messages, temperature: 0, max_tokens: 8 });
        let k = 0;
        const t0 = performance.now();
        for await (const chunk of engine.chat.completions.create({ messages, stream: true, temperature: 0, max_tokens: 200, ignore_eos: true })) {
          void chunk;
          if (++k === 3) break;
        }
        const again = await engine.chat.completions.create({ messages, temperature: 0, max_tokens: 8 });
        const seconds = (performance.now() - t0) / 1000;
        await engine.unload();
        out[useWorker ? "worker" : "inThread"] = { whole: whole.choices[0].message.content, again: again.choices[0].message.content,
          seconds, tps: whole.usage.decode_tokens_per_s };
      }
      return out;
    });
    for (const [mode, v] of Object.entries(r)) {
      eq(v.again, v.whole, `${mode}: the reply after a broken-off stream`);
      console.log(`     ${mode}: break after 3 chunks of a 200-token request, next reply in ${v.seconds.toFixed(2)} s (decode ${v.tps.toFixed(1)} tok/s)`);
      // Not aborted, the 200 tokens would run first: at least 100 tokens' time.
      ok(v.tps > 0 && v.seconds < 100 / v.tps, `${mode}: ${v.seconds.toFixed(2)} s, as long as 100+ tokens at ${v.tps.toFixed(1)} tok/s`);
    }
  });

  test("real tokenizer: ids match the CLI, chat streams whole characters, usage is filled", async () => {
    const r = await page.evaluate(async () => {
      const engine = await qwen.createEngine({ model: "/fx/vocab/", useCache: false, context: 256 });
      const raw = await engine.generateIds({ promptIds: [9707, 11, 1879], max_tokens: 8, temperature: 0 });
      const sampled = await engine.generateIds({ promptIds: [9707, 11, 1879], max_tokens: 8, temperature: 1.1, top_p: 0.95, seed: 9 });
      // Decode speed over the whole 151936-token vocabulary, greedy vs sampled (both on the GPU).
      const long = { promptIds: [9707, 11, 1879], max_tokens: 48, ignore_eos: true };
      const g = await engine.generateIds({ ...long, temperature: 0 });
      const t = await engine.generateIds({ ...long, temperature: 0.7, seed: 1 });
      const s = await engine.generateIds({ ...long, temperature: 0.8, top_k: 40, top_p: 0.9, seed: 1 });
      const text = "你好，世界 🙂 𠮷𝔘𝔫𝔦 龘 héllo";
      const ids = await engine.tokenize(text);
      const dt = await engine.detokenize(ids);
      const messages = [{ role: "user", content: "你好 🙂" }];
      let streamed = "";
      let last = null;
      let n = 0;
      for await (const chunk of engine.chat.completions.create({ messages, stream: true, temperature: 0, max_tokens: 12 })) {
        streamed += chunk.choices[0].delta.content ?? "";
        last = chunk;
        n++;
      }
      const whole = await engine.chat.completions.create({ messages, temperature: 0, max_tokens: 12 });
      // Abort a chat stream after two chunks, then chat again.
      const ctl = new AbortController();
      let k = 0;
      let finish = null;
      for await (const chunk of engine.chat.completions.create({ messages, stream: true, temperature: 0, max_tokens: 100, ignore_eos: true, signal: ctl.signal })) {
        if (++k === 2) ctl.abort();
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      const again = await engine.chat.completions.create({ messages, temperature: 0, max_tokens: 12 });
      await engine.unload();
      return { raw: raw.ids, sampled: sampled.ids, greedyTps: g.usage.decode_tokens_per_s, tempTps: t.usage.decode_tokens_per_s, sampledTps: s.usage.decode_tokens_per_s, text, ids, dt, streamed, n, last, whole, finish, again: again.choices[0].message.content };
    });
    eq(r.raw, expected.vocab, "greedy ids vs CLI (vocab 151936)");
    eq(r.sampled, expected.vocabSampled, "sampled ids vs CLI (vocab 151936)");
    figures.push(`vocab 151936 (hidden 32): decode ${r.greedyTps.toFixed(1)} tok/s greedy, ${r.tempTps.toFixed(1)} tok/s at temperature 0.7, ${r.sampledTps.toFixed(1)} tok/s sampled (temperature 0.8, top-k 40, top-p 0.9)`);
    eq(r.dt.text, r.text, "decode(encode(text))");
    eq(r.dt.chunks.join(""), r.text, "streamed chunks join to the text");
    ok(r.dt.chunks.every((c) => !c.includes("\uFFFD")), `a chunk split a character: ${JSON.stringify(r.dt.chunks)}`);
    ok(r.dt.chunks.filter((c) => c === "").length >= 2, `no token was held back: ${JSON.stringify(r.dt.chunks)} for ${r.ids}`);
    eq(r.streamed, r.whole.choices[0].message.content, "stream == non-stream content");
    eq(r.again, r.streamed, "chat after abort");
    ok(r.finish === "abort", `aborted stream finish_reason ${r.finish}`);
    const u = r.last.usage;
    ok(u && u.prompt_tokens > 5 && u.completion_tokens >= 1 && u.time_to_first_token_s > 0 && u.prefill_tokens_per_s > 0, JSON.stringify(u));
    figures.push(`vocab 151936 (hidden 32): chat prompt ${u.prompt_tokens} tok, TTFT ${u.time_to_first_token_s.toFixed(3)}s, prefill ${u.prefill_tokens_per_s.toFixed(1)} tok/s, decode ${u.decode_tokens_per_s.toFixed(1)} tok/s`);
  });
}

test("device loss (worker and in-thread): the call in flight and later calls reject with gpu_lost, engine.lost resolves, a reload gives the same ids", async () => {
  const r = await page.evaluate(async () => {
    const within = (p, ms) => Promise.race([p, new Promise((res) => setTimeout(() => res("timeout"), ms))]);
    const code = async (f) => { try { await f(); return "resolved"; } catch (e) { return `${e.name}/${e.code}`; } };
    const out = {};
    for (const useWorker of [true, false]) {
      const k = useWorker ? "worker" : "thread";
      const o = (out[k] = {});
      // During generation (tokens streaming to onToken).
      let engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, useWorker });
      o.before = (await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
      let n = 0;
      o.inFlight = await code(() => engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 400, temperature: 0, ignore_eos: true,
        onToken: () => { if (++n === 3) engine._loseDeviceForTest(); } }));
      o.tokensSeen = n;
      o.lost = await within(engine.lost, 10000);
      o.later = await code(() => engine.generateIds({ promptIds: [1], max_tokens: 2 }));
      o.reset = await code(() => engine.resetChat());
      o.unload = await code(() => engine.unload());
      engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, useWorker });
      o.reloaded = (await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
      // While idle: lost resolves without any call; the next call is gpu_lost.
      engine._loseDeviceForTest();
      o.idleLost = await within(engine.lost, 10000);
      o.idleLater = await code(() => engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 4 }));
      o.idleUnload = await code(() => engine.unload());
      // Unload is not a loss: lost stays pending.
      engine = await qwen.createEngine({ model: "/fx/tiny/", useCache: false, useWorker });
      o.again = (await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
      await engine.unload();
      o.afterUnload = await within(engine.lost, 1000);
    }
    return out;
  });
  for (const [k, o] of Object.entries(r)) {
    eq(o.before, expected.tiny, `${k}: ids before the loss`);
    eq(o.inFlight, "GpuError/gpu_lost", `${k}: the call in flight (after ${o.tokensSeen} tokens)`);
    ok(o.tokensSeen < 400, `${k}: generation ran on after the loss (${o.tokensSeen} tokens)`);
    ok(o.lost && o.lost.reason === "destroyed" && typeof o.lost.message === "string", `${k}: engine.lost gave ${JSON.stringify(o.lost)}`);
    eq(o.later, "GpuError/gpu_lost", `${k}: a later call`);
    eq(o.reset, "GpuError/gpu_lost", `${k}: resetChat after the loss`);
    eq(o.unload, "resolved", `${k}: unload after the loss`);
    eq(o.reloaded, expected.tiny, `${k}: ids after a reload`);
    ok(o.idleLost && o.idleLost.reason === "destroyed", `${k}: engine.lost while idle gave ${JSON.stringify(o.idleLost)}`);
    eq(o.idleLater, "GpuError/gpu_lost", `${k}: a call after an idle loss`);
    eq(o.idleUnload, "resolved", `${k}: unload after an idle loss`);
    eq(o.again, expected.tiny, `${k}: ids after the second reload`);
    eq(o.afterUnload, "timeout", `${k}: engine.lost after unload()`);
  }
});

if (expected.vocab.length) {
  test("device loss during a streaming chat: the stream rejects with gpu_lost, lost resolves, a reloaded engine streams the same text", async () => {
    const r = await page.evaluate(async () => {
      const out = {};
      const messages = [{ role: "user", content: "Hello, GPU!" }];
      const req = { messages, stream: true, temperature: 0, max_tokens: 24, ignore_eos: true };
      for (const useWorker of [true, false]) {
        let engine = await qwen.createEngine({ model: "/fx/vocab/", useCache: false, context: 256, useWorker });
        let first = "";
        for await (const c of engine.chat.completions.create(req)) first += c.choices[0].delta.content ?? "";
        let k = 0;
        let err = "none";
        try {
          for await (const c of engine.chat.completions.create({ ...req, max_tokens: 400 })) { if (++k === 3) engine._loseDeviceForTest(); }
        } catch (e) { err = `${e.name}/${e.code}`; }
        const lost = await engine.lost;
        await engine.unload();
        engine = await qwen.createEngine({ model: "/fx/vocab/", useCache: false, context: 256, useWorker });
        let again = "";
        for await (const c of engine.chat.completions.create(req)) again += c.choices[0].delta.content ?? "";
        await engine.unload();
        out[useWorker ? "worker" : "thread"] = { first, err, k, lost, again };
      }
      return out;
    });
    for (const [k, o] of Object.entries(r)) {
      eq(o.err, "GpuError/gpu_lost", `${k}: the stream in flight (after ${o.k} chunks)`);
      ok(o.lost?.reason === "destroyed", `${k}: lost ${JSON.stringify(o.lost)}`);
      ok(o.first.length > 0, `${k}: no text before the loss`);
      eq(o.again, o.first, `${k}: text after the reload`);
    }
  });
}

(await import("./downloads.mjs")).default({ test, eq, ok, page, server, origin, expected, fixtures, figures, root });
(await import("./encoder.mjs")).default({ test, eq, ok, page, expected, figures });
(await import("./gguf.mjs")).default({ test, eq, ok, page, server, fixtures, expected, figures, root });
(await import("./agent.mjs")).default({ test, eq, ok, page, fixtures, root });
(await import("./longchat.mjs")).default({ test, eq, ok, page, fixtures, expected, figures });

(await import("./package.mjs")).default({ test, eq, ok, page, origin, root, fixtures, expected, figures });

(await import("./caps.mjs")).default({ test, eq, ok, page, fixtures, expected, figures });
(await import("./soak.mjs")).default({ test, eq, ok, page, expected, figures });

(await import("./store.mjs")).default({ test, eq, ok, browser, server, fixtures, expected, figures, root });

// ------------------------------------------------------------------ run

let passed = 0;
let failed = 0;
for (const t of tests) {
  // FILTER: a substring of the test names, or several separated by "|".
  if (filter && !filter.split("|").some((f) => t.name.includes(f))) continue;
  const t0 = Date.now();
  logs.length = 0;
  try {
    await freshPage();
    let timer;
    const limit = Math.max(Number(process.env.TEST_TIMEOUT_S || 180), t.timeoutS || 0);
    await Promise.race([
      t.fn(),
      new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${limit}s`)), limit * 1000); }),
    ]).finally(() => clearTimeout(timer));
    passed++;
    console.log(`ok   ${t.name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${t.name} (${((Date.now() - t0) / 1000).toFixed(1)}s)\n     ${String(e.message || e).split("\n").join("\n     ")}`);
    for (const l of logs.slice(-20)) console.log(`     ${l}`);
  }
}
for (const f of figures) console.log(`figures: ${f}`);
await browser.close();
server.close();
fs.rmSync(userDir, { recursive: true, force: true });
console.log(`web: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
