// Loading a full-size Qwen-1.8B-shaped bf16 checkpoint in headless Chromium (issue 13): the
// first load from a URL (download, quantize, upload, store) against the reload from the
// browser's model store, for each weight format. A manual measurement, not a test: it takes
// tens of minutes on a 2-core machine with SwiftShader. Prints a markdown table (the README's
// "Loading Qwen-1.8B in the browser") and writes every figure as JSON.
//
//   scripts/load-bench-browser.sh            # writes the 3.7 GB folder when missing, builds pkg/
//   node scripts/load-bench-browser.mjs      # the same, with the folder and pkg/ already there
//
// Options are environment variables (no arguments):
//   LOAD_BENCH_DIR  the bf16 model folder (config.json + model.safetensors); written by
//                   `cargo run --release --example load_bench -- --write DIR` when missing
//                   (default ~/.cache/qwen-webgpu/load-bench/qwen18b-bf16)
//   FORMATS         weight formats, first load then reload each (default q4,q8)
//   GPU_ENCODER     formats also loaded once with encoder "gpu" (no store; default q8, "" = none)
//   GPU_ENCODER_LIMIT_S  give that load up after this long (default 600)
//   CONTEXT         KV cache tokens (default 1024); PKG the package folder (default pkg/)
//   COMPARE_WITH    an earlier results.json: the GPU encoder's ids are also checked against
//                   its loads (for a run of GPU_ENCODER alone, FORMATS="")
//   WORK            where the Chromium profile, the served copy of pkg/ and results.json go
//                   (default ~/.cache/qwen-webgpu/load-bench; the profile is made anew)
//
// What is measured, per load, in the page (the engine runs in its Web Worker, as by default):
// createEngine's time to resolve, split by its progress events and `engine.info().load`
// (`weightsS`: the weights phase, which overlaps the download with `put`; `uploadS`: the time
// in `put`, i.e. the CPU encoder plus the copy to the GPU, or only the copy for a stored
// copy; `finishS`: until the GPU has every tensor; `store.seconds`: writing the store); the
// first `generateIds` call's time to first token (kernel compilation + a 1-token prompt) and
// a second call's on another 1-token prompt (the pass alone); the server's count of model requests
// and bytes sent; `info().gpuBytes`; the wasm memory of the engine's worker; and the peak
// resident memory of Chromium's GPU process (SwiftShader keeps "GPU" buffers there) and
// renderer processes. The reload runs in a new browser process on the same profile, so the
// model comes from the origin private file system on disk, not from anything in memory
// (the OS page cache may still hold the file: it was just written).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { spawnSync } from "node:child_process";
import { startServer } from "../tests/web/server.mjs";
import { workerSessions } from "../tests/web/cdp.mjs";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const { chromium } = createRequire(path.join(root, "tests/web/package.json"))("playwright-core");
const env = process.env;
const cacheHome = path.join(os.homedir(), ".cache/qwen-webgpu");
const modelDir = path.resolve(env.LOAD_BENCH_DIR || path.join(cacheHome, "load-bench/qwen18b-bf16"));
const formats = (env.FORMATS ?? "q4,q8").split(",").filter(Boolean);
const gpuFormats = (env.GPU_ENCODER ?? "q8").split(",").filter(Boolean);
const gpuLimitS = Number(env.GPU_ENCODER_LIMIT_S || 600);
const context = Number(env.CONTEXT || 1024);
const pkgDir = path.resolve(env.PKG || path.join(root, "pkg"));
const work = path.resolve(env.WORK || path.join(cacheHome, "load-bench"));
const MAX_TOKENS = 4;

const log = (...a) => console.log(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
const die = (m) => { console.error(`load-bench: ${m}`); process.exit(1); };
for (const f of [...formats, ...gpuFormats]) if (!["q4", "q8", "f16"].includes(f)) die(`unknown weight format ${f}`);

// ------------------------------------------------------------------ the model folder
const weightsFile = path.join(modelDir, "model.safetensors");
if (!fs.existsSync(path.join(modelDir, "config.json")) || !fs.existsSync(weightsFile)) {
  log(`writing ${modelDir} (cargo run --release --example load_bench -- --write; 3.7 GB)`);
  const r = spawnSync("cargo", ["run", "--release", "--example", "load_bench", "--", "--write", modelDir], {
    cwd: root, stdio: "inherit", env: { ...env, CARGO_TARGET_DIR: env.CARGO_TARGET_DIR || path.join(cacheHome, "target") },
  });
  if (r.status !== 0) die(`writing the model folder failed (status ${r.status})`);
}
const modelBytes = fs.statSync(weightsFile).size;
const config = JSON.parse(fs.readFileSync(path.join(modelDir, "config.json"), "utf8"));
// One-token prompts (ids within a shrunk vocabulary too): a prompt of 3 tokens or more is
// prefilled by the tiled matmul, which SwiftShader runs ~20x slower per token than the
// mat-vec (4 tokens took 26 s on a 2-layer model whose single token took 1.2 s).
const PROMPT = [9707 % config.vocab_size];
const PROMPT2 = [2610 % config.vocab_size];
if (!fs.existsSync(path.join(pkgDir, "qwen_webgpu_bg.wasm"))) die(`no package in ${pkgDir} (scripts/build-pkg.sh)`);

// ------------------------------------------------------------------ what is served
// A copy of pkg/ and the test page of our own, so that a rebuild of pkg/ by someone else
// during the run changes nothing; the model folder's parent as the fixtures (/fx/NAME/).
fs.mkdirSync(work, { recursive: true });
const serveRoot = path.join(work, "www");
fs.rmSync(serveRoot, { recursive: true, force: true });
fs.mkdirSync(path.join(serveRoot, "tests/web"), { recursive: true });
fs.cpSync(pkgDir, path.join(serveRoot, "pkg"), { recursive: true });
fs.copyFileSync(path.join(root, "tests/web/page.html"), path.join(serveRoot, "tests/web/page.html"));
const profile = path.join(work, "profile");
fs.rmSync(profile, { recursive: true, force: true });

const server = await startServer(serveRoot, path.dirname(modelDir));
const origin = `http://127.0.0.1:${server.address().port}`;
const url = `/fx/${path.basename(modelDir)}/`;
/** Requests for the model folder: method, path, range, bytes sent, when. */
const requests = [];
server.on("request", (req, res) => {
  if (!decodeURIComponent(req.url.split("?")[0]).startsWith(url)) return;
  const r = { method: req.method, path: req.url, range: req.headers.range || null, sent: 0, t0: Date.now(), t1: null };
  requests.push(r);
  const write = res.write.bind(res);
  res.write = (chunk, ...rest) => { r.sent += chunk?.length || 0; return write(chunk, ...rest); };
  res.on("close", () => { r.t1 = Date.now(); });
});

// ------------------------------------------------------------------ memory of Chromium's processes
/** Chromium's processes (descendants of this one): pid → type (browser, gpu-process, renderer, …). */
function chromiumProcesses() {
  const parent = new Map();
  for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      parent.set(Number(pid), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch { /* gone */ }
  }
  const mine = new Map();
  for (const pid of parent.keys()) {
    let p = pid;
    for (let i = 0; i < 64 && p > 1 && p !== process.pid; i++) p = parent.get(p);
    if (p !== process.pid || pid === process.pid) continue;
    try {
      // Chromium rewrites its command line as one string (arguments separated by spaces).
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
      if (path.basename(cmd.split(" ")[0]) !== "chromium") continue;
      mine.set(pid, /--type=([\w-]+)/.exec(cmd)?.[1] || "browser");
    } catch { /* gone */ }
  }
  return mine;
}
const rssKiB = (pid) => {
  try { return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))[1]); } catch { return 0; }
};
/** Peak resident bytes per process type (summed over the processes of a type) since `reset()`. */
const memory = {
  peak: {},
  reset() { this.peak = {}; },
  sample() {
    const sum = {};
    for (const [pid, type] of chromiumProcesses()) sum[type] = (sum[type] || 0) + rssKiB(pid) * 1024;
    for (const [t, b] of Object.entries(sum)) this.peak[t] = Math.max(this.peak[t] || 0, b);
  },
};
const sampler = setInterval(() => memory.sample(), 1000);

// ------------------------------------------------------------------ the browser
let phaseLog = null;
async function launch() {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--enable-unsafe-webgpu", "--no-sandbox", "--headless=new", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
      "--enable-features=Vulkan,WebGPU", "--use-webgpu-adapter=swiftshader",
    ],
  });
  const page = context.pages()[0] || await context.newPage();
  page.on("console", (m) => {
    if ((m.type() === "error" || m.type() === "warning") && !/status of 404/.test(m.text())) log(`[console.${m.type()}] ${m.text()}`); // 404: the favicon
  });
  page.on("pageerror", (e) => log(`[pageerror] ${e.message}`));
  page.on("crash", () => log("[page crashed]"));
  await page.exposeFunction("benchLog", (s) => { phaseLog?.(s); log(`  ${s}`); });
  await page.goto(`${origin}/tests/web/page.html`);
  await page.waitForFunction(() => window.qwenReady === true, null, { timeout: 120000 });
  // The engine's worker, through the DevTools protocol, for its wasm memory.
  const cdp = await context.newCDPSession(page);
  const { workers, send } = await workerSessions(cdp);
  const wasmBytes = async () => {
    const ids = [...workers.keys()];
    if (ids.length !== 1) return null;
    const r = await send(ids[0], "Runtime.evaluate", {
      expression: 'import("/pkg/qwen_webgpu.js").then((m) => m.default()).then((w) => w.memory.buffer.byteLength)', awaitPromise: true, returnByValue: true });
    return r.exceptionDetails ? null : r.result.value;
  };
  return { context, page, wasmBytes, close: () => context.close() };
}

/**
 * One load of `weights` in a fresh browser process: createEngine, the two timed calls,
 * figures, unload. `limitS`: give up (close the browser) after that long.
 */
async function runLoad({ weights, encoder = "auto", cache = true, label, limitS = 0 }) {
  log(`${label}: ${weights}, encoder ${encoder}, cache ${cache}`);
  const b = await launch();
  requests.length = 0;
  memory.reset();
  let last = null;
  phaseLog = (s) => { last = s; };
  const t0 = Date.now();
  const loadP = b.page.evaluate(async ({ url, weights, encoder, cache, context }) => {
    const marks = {};
    let estimate = null;
    const warnings = [];
    let phase = null;
    let tenth = -1;
    const t0 = performance.now();
    const s = () => (performance.now() - t0) / 1000;
    const onProgress = (p) => {
      if (p.estimate) estimate = p.estimate;
      if (p.phase === "warning") warnings.push({ code: p.code, text: p.text });
      if (p.phase !== phase) {
        if (phase) marks[phase].end = s();
        phase = p.phase;
        marks[phase] ??= { start: s() };
        tenth = -1;
        window.benchLog(`${s().toFixed(1)} s: ${phase}`);
      }
      marks[phase].end = s();
      const t = p.total ? Math.floor((10 * p.loaded) / p.total) : 0;
      if ((p.phase === "weights" || p.phase === "store") && t > tenth) {
        tenth = t;
        window.benchLog(`${s().toFixed(1)} s: ${p.phase} ${(p.loaded / 1e9).toFixed(2)} / ${(p.total / 1e9).toFixed(2)} GB` +
          (p.bytesPerSecond ? `, ${(p.bytesPerSecond / 1e6).toFixed(0)} MB/s` : ""));
      }
    };
    // cache: false turns the Cache API off too, so that every load streams the same way.
    const e = await qwen.createEngine({ model: url, weights, encoder, cache, useCache: cache ? undefined : false, context, onProgress });
    window.benchEngine = e;
    const info = await e.info();
    return { loadS: s(), marks, estimate, warnings, info };
  }, { url, weights, encoder, cache, context });
  let load;
  if (limitS > 0) {
    let timer;
    const limit = new Promise((resolve) => { timer = setTimeout(() => resolve(null), limitS * 1000); });
    load = await Promise.race([loadP.catch((e) => ({ error: String(e) })), limit]);
    clearTimeout(timer);
    if (load === null) {
      memory.sample();
      const r = { label, weights, encoder, gaveUp: true, afterS: (Date.now() - t0) / 1000, lastProgress: last, memoryPeak: { ...memory.peak },
        modelBytesSent: requests.reduce((s, q) => s + q.sent, 0) };
      log(`${label}: gave up after ${r.afterS.toFixed(0)} s (last: ${last})`);
      await b.close().catch(() => {});
      return r;
    }
  } else {
    load = await loadP.catch((e) => ({ error: String(e) }));
  }
  if (load.error) {
    log(`${label}: load failed: ${load.error}`);
    await b.close().catch(() => {});
    return { label, weights, encoder, error: load.error, lastProgress: last, memoryPeak: { ...memory.peak } };
  }
  const wasmAfterLoad = await b.wasmBytes().catch(() => null);
  const calls = await b.page.evaluate(async ({ p1, p2, n }) => {
    const e = window.benchEngine;
    const a = await e.generateIds({ promptIds: p1, max_tokens: n, temperature: 0, ignore_eos: true });
    const c = await e.generateIds({ promptIds: p2, max_tokens: 1, temperature: 0, ignore_eos: true });
    return { ids: a.ids, first: a.usage, second: c.usage };
  }, { p1: PROMPT, p2: PROMPT2, n: MAX_TOKENS });
  memory.sample();
  const wasm = await b.wasmBytes().catch(() => null);
  const memoryPeak = { ...memory.peak };
  await b.page.evaluate(async () => { await window.benchEngine.unload(); window.benchEngine = null; });
  const modelRequests = requests.map(({ method, path, range, sent }) => ({ method, path, range, sent }));
  const sent = requests.filter((q) => q.sent > 0);
  const download = sent.length ? { bytes: sent.reduce((s, q) => s + q.sent, 0),
    seconds: (Math.max(...sent.map((q) => q.t1 || Date.now())) - Math.min(...sent.map((q) => q.t0))) / 1000 } : { bytes: 0, seconds: 0 };
  await b.close();
  const r = { label, weights, encoder, cache, ...load, calls, wasmAfterLoad, wasm, memoryPeak, requests: modelRequests.length,
    requestList: modelRequests.slice(0, 20), download };
  const l = load.info.load;
  log(`${label}: ready in ${load.loadS.toFixed(1)} s (weights ${l.weightsS.toFixed(1)} s, put ${l.uploadS.toFixed(1)} s, finish ${l.finishS.toFixed(1)} s` +
    (l.store ? `, store ${l.store.seconds?.toFixed(1)} s` : "") + `); first call TTFT ${calls.first.time_to_first_token_s.toFixed(1)} s; ` +
    `${r.requests} model requests, ${(download.bytes / 1e9).toFixed(3)} GB sent; bytesRead ${l.bytesRead}; ids ${calls.ids}`);
  return r;
}

// ------------------------------------------------------------------ the run
const results = { date: new Date().toISOString(), machine: `${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
  chromium: null, modelDir, modelBytes, config: { layers: config.num_hidden_layers, vocab: config.vocab_size, hidden: config.hidden_size },
  context, prompt: PROMPT, maxTokens: MAX_TOKENS, rawDownload: null, runs: [], checks: [] };
const check = (cond, what) => { results.checks.push({ ok: !!cond, what }); log(`${cond ? "ok  " : "FAIL"} ${what}`); };

try {
  {
    // The download alone: the bf16 file fetched by the page and dropped (localhost).
    const b = await launch();
    results.chromium = b.context.browser()?.version() ?? (await b.page.evaluate(() => navigator.userAgent)).match(/Chrome\/([\d.]+)/)?.[1];
    results.adapter = await b.page.evaluate(async () => {
      const a = await navigator.gpu.requestAdapter();
      return a ? `${a.info.vendor} ${a.info.architecture} ${a.info.device || ""}`.trim() : null;
    });
    requests.length = 0;
    results.rawDownload = await b.page.evaluate(async (u) => {
      const t0 = performance.now();
      const r = await fetch(u, { cache: "no-store" });
      const reader = r.body.getReader();
      let n = 0;
      for (;;) { const { done, value } = await reader.read(); if (done) break; n += value.length; }
      return { bytes: n, seconds: (performance.now() - t0) / 1000 };
    }, `${url}model.safetensors`);
    log(`download alone: ${(results.rawDownload.bytes / 1e9).toFixed(2)} GB in ${results.rawDownload.seconds.toFixed(1)} s`);
    await b.close();
  }

  for (const weights of formats) {
    {
      const b = await launch();
      const removed = await b.page.evaluate((u) => qwen.deleteModelCache(u), url);
      const has = await b.page.evaluate((u) => qwen.hasModelInCache(u), url);
      await b.close();
      check(!has, `${weights}: nothing stored before the first load (deleteModelCache removed ${removed} files)`);
    }
    const first = await runLoad({ weights, label: `${weights} first load` });
    results.runs.push(first);
    if (first.error) continue;
    const reload = await runLoad({ weights, label: `${weights} reload` });
    results.runs.push(reload);
    if (reload.error) continue;
    const stored = first.info.load.store;
    check(stored?.stored === true, `${weights}: stored after the first load (${JSON.stringify({ stored: stored?.stored, code: stored?.code, bytes: stored?.bytes })})`);
    check(first.info.load.source === "url" && reload.info.load.source === "store", `${weights}: sources url then store (${first.info.load.source}, ${reload.info.load.source})`);
    check(reload.requests === 0, `${weights}: reload made ${reload.requests} model requests`);
    check(reload.info.load.prequantized === true, `${weights}: reload loaded the stored copy as pre-quantized (nothing quantized)`);
    const ratio = reload.info.load.bytesRead / stored?.fileBytes;
    check(ratio <= 1.1, `${weights}: reload read ${reload.info.load.bytesRead} B = ${ratio.toFixed(4)}x the stored weights file (${stored?.fileBytes} B)`);
    check(JSON.stringify(reload.calls.ids) === JSON.stringify(first.calls.ids), `${weights}: reload's greedy ids ${reload.calls.ids} equal the first load's ${first.calls.ids}`);
    check(reload.info.gpuBytes === first.info.gpuBytes, `${weights}: GPU bytes ${reload.info.gpuBytes} equal the first load's ${first.info.gpuBytes}`);
    check(first.warnings.length === 0 && reload.warnings.length === 0, `${weights}: no warnings (${JSON.stringify([...first.warnings, ...reload.warnings])})`);
    {
      const b = await launch();
      const removed = await b.page.evaluate((u) => qwen.deleteModelCache(u), url);
      const has = await b.page.evaluate((u) => qwen.hasModelInCache(u), url);
      await b.close();
      check(!has && removed > 0, `${weights}: deleteModelCache removed ${removed} files, nothing left`);
    }
  }

  for (const weights of gpuFormats) {
    const r = await runLoad({ weights, encoder: "gpu", cache: false, label: `${weights} first load, GPU encoder`, limitS: gpuLimitS });
    results.runs.push(r);
    const earlier = env.COMPARE_WITH ? JSON.parse(fs.readFileSync(env.COMPARE_WITH, "utf8")).runs : [];
    const auto = [...results.runs, ...earlier].find((x) => x.weights === weights && x.encoder === "auto" && x.calls);
    if (r.calls && auto) check(JSON.stringify(r.calls.ids) === JSON.stringify(auto.calls.ids), `${weights}: GPU encoder's ids ${r.calls.ids} equal the CPU encoder's ${auto.calls.ids}`);
  }
} finally {
  clearInterval(sampler);
  server.close();
  fs.writeFileSync(path.join(work, "results.json"), JSON.stringify(results, null, 1));
  log(`figures: ${path.join(work, "results.json")}`);
}

// ------------------------------------------------------------------ the table
const GB = (b) => (b / 1e9).toFixed(2);
const sec = (x) => (x === undefined || x === null ? "–" : `${x.toFixed(1)} s`);
const lines = [
  `Chromium ${results.chromium} (headless, ${results.adapter}), ${results.machine}, ${results.date.slice(0, 10)}; ` +
  `model: ${results.config.layers} layers, vocab ${results.config.vocab}, bf16 ${modelBytes.toLocaleString("en")} B; context ${context}; ` +
  `download alone (localhost): ${GB(results.rawDownload.bytes)} GB in ${sec(results.rawDownload.seconds)}.`,
  "",
  "| weights | load | bytes read | model requests | waiting for bytes | quantize + upload (`put`) | GPU finish | store write | createEngine | first call TTFT (kernel compile + 1 token) | next call TTFT (1 token) | ready to chat | GPU bytes | peak RSS: GPU process / renderer | wasm memory |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
];
for (const r of results.runs) {
  if (!r.info) {
    lines.push(`| ${r.weights} | ${r.label.replace(/^\S+ /, "")} | ${r.gaveUp ? `gave up after ${sec(r.afterS)} (${r.lastProgress})` : `failed: ${r.error}`} ||||||||||||`);
    continue;
  }
  const l = r.info.load;
  const read = l.source === "store" ? l.bytesRead : r.download.bytes;
  const mem = r.memoryPeak;
  lines.push(`| ${r.weights} | ${r.label.replace(/^\S+ /, "")} (${l.source}) | ${GB(read)} GB | ${r.requests} | ${sec(l.weightsS - l.uploadS)} | ` +
    `${sec(l.uploadS)} | ${sec(l.finishS)} | ${l.store ? sec(l.store.seconds) : "–"} | ${sec(r.loadS)} | ${sec(r.calls.first.time_to_first_token_s)} | ` +
    `${sec(r.calls.second.time_to_first_token_s)} | ${sec(r.loadS + r.calls.first.time_to_first_token_s)} | ${r.info.gpuBytes.toLocaleString("en")} | ` +
    `${GB(mem["gpu-process"] || 0)} / ${GB(mem.renderer || 0)} GB | ${r.wasm ? `${(r.wasm / 2 ** 20).toFixed(0)} MiB` : "–"} |`);
}
console.log(`\n${lines.join("\n")}\n`);
const failed = results.checks.filter((c) => !c.ok);
console.log(`load-bench: ${results.checks.length - failed.length} checks passed, ${failed.length} failed`);
process.exit(failed.length ? 1 : 0);
