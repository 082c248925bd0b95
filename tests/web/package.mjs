// Tests of the npm package as users get it (issue 13, item 5): `npm pack` of pkg/ (files,
// package.json fields), plain Node importing it (no WebGPU: a clear gpu_unavailable, not a
// fetch error), a worker that fails to start (createEngine rejects with worker_failed in
// seconds, never hangs), and real bundlers (webpack 5, Vite 8 and 7, esbuild) building a small
// app that uses the package's own worker and a worker file of its own
// (`import "qwen-webgpu/worker.js"`), each bundle then run in Chromium on the tiny fixture;
// and Vite's dev server (7 without optimizeDeps.exclude: worker_failed at once, not a hang).
// The bundlers are installed once from tests/web/bundlers/package-lock.json into
// $QWEN_BUNDLERS_DIR (default ~/.cache/qwen-webgpu/bundlers) and reused.
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const here = path.dirname(new URL(import.meta.url).pathname);

/** Runs a command; resolves with its stdout, rejects with its stderr's tail on failure. */
function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...opts });
    let out = "", err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("error", reject);
    p.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(" ")} exited ${code}: ${err.slice(-2000)}`))));
  });
}

/** The bundlers of bundlers/package-lock.json, installed (npm ci) only when the lockfile changed. */
async function ensureBundlers() {
  const dir = process.env.QWEN_BUNDLERS_DIR || path.join(os.homedir(), ".cache/qwen-webgpu/bundlers");
  const lock = fs.readFileSync(path.join(here, "bundlers/package-lock.json"));
  const stamp = path.join(dir, "node_modules/.qwen-webgpu-lock.json");
  if (!fs.existsSync(stamp) || !fs.readFileSync(stamp).equals(lock)) {
    fs.mkdirSync(dir, { recursive: true });
    for (const f of ["package.json", "package-lock.json"]) fs.copyFileSync(path.join(here, "bundlers", f), path.join(dir, f));
    await run("npm", ["ci", "--no-audit", "--no-fund"], { cwd: dir });
    fs.writeFileSync(stamp, lock);
  }
  return path.join(dir, "node_modules");
}

/** `npm pack` of pkg/ into a fresh folder: { tgz, files (paths in the tarball) }. Once per run. */
let packed = null;
function packPkg(root) {
  packed ??= (async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qwen-webgpu-pack-"));
    const json = JSON.parse(await run("npm", ["pack", "--json", "--pack-destination", dir], { cwd: path.join(root, "pkg") }));
    return { dir, tgz: path.join(dir, json[0].filename), files: json[0].files.map((f) => f.path).sort() };
  })();
  return packed;
}

/** The app a user writes (js/README.md, "Bundlers"): the package's own worker, and a worker file of one's own. */
const APP = {
  "main.js": `import { createEngine } from "qwen-webgpu";
// The package's own worker: nothing to do.
window.viaPackageWorker = (model) => createEngine({ model, useCache: false, workerStartTimeoutMs: 15000 });
// A worker file of one's own.
window.viaOwnWorker = (model) => createEngine({ model, useCache: false, workerStartTimeoutMs: 15000,
  worker: new Worker(new URL("./my-worker.js", import.meta.url), { type: "module" }) });
window.appReady = true;
`,
  "my-worker.js": `import "qwen-webgpu/worker.js";\n`,
  "index.html": `<!doctype html><meta charset="utf-8"><script type="module" src="./main.js"></script>\n`,
};

/** Each bundler: builds APP (in `app`, the package in its node_modules) into `out`. */
const BUILDERS = {
  async webpack(mods, app, out) {
    const webpack = createRequire(path.join(mods, "x.js"))("webpack");
    const compiler = webpack({
      mode: "production", context: app, entry: "./main.js", devtool: false, performance: { hints: false },
      output: { path: out, clean: true },
    });
    const stats = await new Promise((res, rej) => compiler.run((e, s) => (e ? rej(e) : res(s))));
    await new Promise((res) => compiler.close(res));
    if (stats.hasErrors()) throw new Error(stats.toString("errors-only"));
    fs.writeFileSync(path.join(out, "index.html"), `<!doctype html><meta charset="utf-8"><script src="./main.js"></script>\n`);
  },
  async vite8(mods, app, out) {
    await viteBuild(path.join(mods, "vite/dist/node/index.js"), app, out);
  },
  async vite7(mods, app, out) {
    await viteBuild(path.join(mods, "vite7/dist/node/index.js"), app, out);
  },
  // esbuild leaves `new Worker(new URL(...))` alone: each worker is an entry point of its own,
  // and the package's files (here the .wasm) are served next to the bundle (js/README.md).
  async esbuild(mods, app, out) {
    const esbuild = createRequire(path.join(mods, "x.js"))("esbuild");
    fs.rmSync(out, { recursive: true, force: true });
    await esbuild.build({
      absWorkingDir: app, entryPoints: ["main.js", "my-worker.js"], bundle: true, splitting: true, format: "esm",
      minify: true, outdir: out, logLevel: "silent",
    });
    fs.copyFileSync(path.join(app, "node_modules/qwen-webgpu/qwen_webgpu_bg.wasm"), path.join(out, "qwen_webgpu_bg.wasm"));
    fs.writeFileSync(path.join(out, "index.html"), APP["index.html"]);
  },
};

async function viteBuild(entry, app, out) {
  const vite = await import(pathToFileURL(entry).href);
  await vite.build({ root: app, base: "./", configFile: false, logLevel: "error", build: { outDir: out, emptyOutDir: true } });
}

/** Every .js file under `dir` (relative path → text). */
function jsFiles(dir) {
  const out = {};
  for (const f of fs.readdirSync(dir, { recursive: true })) if (f.endsWith(".js")) out[f] = fs.readFileSync(path.join(dir, f), "utf8");
  return out;
}

export default function packageTests({ test, eq, ok, page, origin, root, fixtures, expected, figures }) {
  const pkgJson = () => JSON.parse(fs.readFileSync(path.join(root, "pkg/package.json"), "utf8"));

  test("package (node): npm pack ships the licenses and the worker; package.json has repository, homepage, bugs, engines, sideEffects", async () => {
    const { files } = await packPkg(root);
    for (const f of ["LICENSE-MIT", "LICENSE-APACHE", "README.md", "package.json", "index.js", "index.d.ts", "worker.js", "engine.js",
      "sources.js", "errors.js", "stream.js", "cache.js", "qwen_webgpu.js", "qwen_webgpu_bg.wasm"]) ok(files.includes(f), `the tarball lacks ${f}: ${files}`);
    // Every module of js/ (a new one left out of "files" breaks every import of the package).
    for (const f of fs.readdirSync(path.join(root, "js")).filter((n) => n.endsWith(".js"))) ok(files.includes(f), `the tarball lacks js/${f}: ${files}`);
    eq(fs.readFileSync(path.join(root, "pkg/LICENSE-MIT"), "utf8"), fs.readFileSync(path.join(root, "LICENSE-MIT"), "utf8"), "pkg/LICENSE-MIT");
    ok(/Copyright \(c\) the qwen-webgpu developers/.test(fs.readFileSync(path.join(root, "pkg/LICENSE-MIT"), "utf8")), "MIT copyright line");
    ok(/Apache License\s+Version 2\.0, January 2004/.test(fs.readFileSync(path.join(root, "pkg/LICENSE-APACHE"), "utf8")), "Apache text");
    const p = pkgJson();
    eq(p.license, "MIT OR Apache-2.0", "license");
    ok(/^git\+https:\/\/.+\.git$/.test(p.repository?.url) && p.repository.type === "git", `repository ${JSON.stringify(p.repository)}`);
    const base = p.repository.url.slice(4, -4);
    eq(p.homepage, `${base}#readme`, "homepage");
    eq(p.bugs?.url, `${base}/issues`, "bugs");
    ok(/^>=\d+$/.test(p.engines?.node), `engines ${JSON.stringify(p.engines)}`);
    eq(p.sideEffects, ["./worker.js"], "sideEffects (worker.js's top-level code must be kept)");
    for (const f of p.files) ok(fs.existsSync(path.join(root, "pkg", f)), `"files" names ${f}, which pkg/ lacks`);
  });

  test("package (node): in Node createEngine and benchmark reject with gpu_unavailable \"WebGPU is not available here\", fetching nothing", async () => {
    const script = `
      let fetches = 0;
      const realFetch = globalThis.fetch;
      globalThis.fetch = (...a) => { fetches++; return realFetch(...a); };
      const q = await import(${JSON.stringify(pathToFileURL(path.join(root, "pkg/index.js")).href)});
      const out = {};
      const code = async (f) => { try { await f(); return "resolved"; } catch (e) { return { name: e.name, code: e.code, message: e.message }; } };
      out.url = await code(() => q.createEngine({ model: ${JSON.stringify(`${origin}/fx/tiny/`)} }));
      out.files = await code(() => q.createEngine({ model: { "config.json": "{}" }, useWorker: false }));
      out.worker = await code(() => q.createEngine({ model: "/fx/tiny/", useWorker: true }));
      out.bench = await code(() => q.benchmark({ layers: 1 }));
      out.noModel = await code(() => q.createEngine({}));
      out.cached = await q.hasModelInCache(${JSON.stringify(`${origin}/fx/tiny/`)});
      out.fetches = fetches;
      console.log(JSON.stringify(out));`;
    const r = JSON.parse(await run(process.execPath, ["--input-type=module", "-e", script], { cwd: os.tmpdir() }));
    for (const k of ["url", "files", "worker", "bench"]) {
      eq([r[k].name, r[k].code], ["GpuError", "gpu_unavailable"], `${k}: ${r[k].message}`);
      ok(/^WebGPU is not available here \(Node\.js [\d.]+ has no navigator\.gpu\)/.test(r[k].message), `${k}: message ${r[k].message}`);
    }
    eq(r.noModel.code, "request_invalid", "no model: the option check comes first");
    eq(r.cached, false, "hasModelInCache without the Cache API");
    eq(r.fetches, 0, "fetch calls (the wasm, the model)");
  });

  test("package: a worker that fails to start (404, throwing script, failing import, empty, no worker.js next to index.js) rejects createEngine and benchmark with worker_failed in seconds", async () => {
    // A copy of the package's main-thread files without worker.js, and one with a 0-byte
    // worker.js (what sideEffects: false made of a bundled worker): the default spawn path.
    for (const [dir, worker] of [["pkg-noworker", null], ["pkg-emptyworker", ""]]) {
      const d = path.join(fixtures, dir);
      fs.rmSync(d, { recursive: true, force: true });
      fs.mkdirSync(d);
      for (const f of ["index.js", "errors.js", "stream.js", "cache.js"]) fs.copyFileSync(path.join(root, "pkg", f), path.join(d, f));
      if (worker !== null) fs.writeFileSync(path.join(d, "worker.js"), worker);
    }
    const r = await page.evaluate(async () => {
      const blob = (src) => URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
      const mod = (url) => new Worker(url, { type: "module" });
      const noWorker = await import("/fx/pkg-noworker/index.js");
      const emptyWorker = await import("/fx/pkg-emptyworker/index.js");
      const cases = {
        http404: () => qwen.createEngine({ model: "/fx/tiny/", worker: mod("/tests/web/no-such-worker.js") }),
        throws: () => qwen.createEngine({ model: "/fx/tiny/", worker: mod(blob("throw new Error('boom at top level');")) }),
        importFails: () => qwen.createEngine({ model: "/fx/tiny/", worker: mod(blob(`import "${location.origin}/pkg/no-such-module.js";`)) }),
        empty: () => qwen.createEngine({ model: "/fx/tiny/", worker: mod(blob("")), workerStartTimeoutMs: 1500 }),
        noWorkerJs: () => noWorker.createEngine({ model: "/fx/tiny/" }),
        emptyWorkerJs: () => emptyWorker.createEngine({ model: "/fx/tiny/", workerStartTimeoutMs: 1500 }),
        bench404: () => qwen.benchmark({ layers: 1, worker: mod("/tests/web/no-such-worker.js") }),
        badTimeout: () => qwen.createEngine({ model: "/fx/tiny/", workerStartTimeoutMs: -1 }),
        aborted: () => { const c = new AbortController(); setTimeout(() => c.abort(), 300); return qwen.createEngine({ model: "/fx/tiny/", worker: mod(blob("")), signal: c.signal }); },
      };
      const out = {};
      for (const [k, f] of Object.entries(cases)) {
        const t0 = performance.now();
        const res = await Promise.race([f().then(() => "resolved", (e) => `${e.name}/${e.code}: ${e.message}`),
          new Promise((r) => setTimeout(() => r("hung for 10 s"), 10000))]);
        out[k] = { res, ms: Math.round(performance.now() - t0) };
      }
      // A worker of one's own made long before createEngine (its unasked "ready" long gone) still starts.
      const w = mod(blob(`import "${location.origin}/pkg/worker.js";`));
      await new Promise((r) => setTimeout(r, 1000));
      // (A blob worker resolves a relative model URL against its blob: URL: give an absolute one.)
      const engine = await qwen.createEngine({ model: `${location.origin}/fx/tiny/`, useCache: false, worker: w, workerStartTimeoutMs: 5000 });
      out.lateIds = (await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 4, temperature: 0 })).ids;
      await engine.unload();
      return out;
    });
    for (const k of ["http404", "throws", "importFails", "empty", "noWorkerJs", "emptyWorkerJs", "bench404"]) {
      ok(r[k].res.startsWith("GpuError/worker_failed: the "), `${k}: ${r[k].res}`);
      ok(/failed to start: .*optimizeDeps\.exclude/.test(r[k].res), `${k}: the message says what to check: ${r[k].res}`);
      ok(r[k].ms < 5000, `${k}: took ${r[k].ms} ms`);
    }
    ok(/boom at top level/.test(r.throws.res), `throws: the script's error is named: ${r.throws.res}`);
    ok(/no "ready" message within 1\.5 s/.test(r.empty.res) && r.empty.ms >= 1400, `empty: ${r.empty.res} after ${r.empty.ms} ms`);
    ok(/no "ready" message/.test(r.emptyWorkerJs.res), `emptyWorkerJs: ${r.emptyWorkerJs.res}`);
    ok(r.badTimeout.res.startsWith("RequestError/request_invalid: workerStartTimeoutMs"), `badTimeout: ${r.badTimeout.res}`);
    ok(r.aborted.res.startsWith("AbortError/aborted") && r.aborted.ms < 2000, `aborted: ${r.aborted.res} after ${r.aborted.ms} ms`);
    eq(r.lateIds, expected.tiny.slice(0, 4), "a worker made a second before createEngine");
    figures.push(`worker start failures reject in: ${Object.entries(r).filter(([, v]) => v.ms !== undefined).map(([k, v]) => `${k} ${v.ms} ms`).join(", ")}`);
  });

  test("package (bundlers): webpack 5, Vite 8, Vite 7 and esbuild keep worker.js (package's worker and `import \"qwen-webgpu/worker.js\"`); each bundle runs the tiny model in Chromium", async () => {
    const t0 = Date.now();
    const mods = await ensureBundlers();
    const tInstall = Date.now() - t0;
    const { tgz } = await packPkg(root);
    const app = fs.mkdtempSync(path.join(os.tmpdir(), "qwen-webgpu-app-"));
    try {
      for (const [f, src] of Object.entries(APP)) fs.writeFileSync(path.join(app, f), src);
      const dest = path.join(app, "node_modules/qwen-webgpu");
      fs.mkdirSync(dest, { recursive: true });
      await run("tar", ["-xzf", tgz, "-C", dest, "--strip-components=1"]);
      const times = [];
      for (const [name, build] of Object.entries(BUILDERS)) {
        const out = path.join(fixtures, "bundles", name);
        const tb = Date.now();
        await build(mods, app, out);
        times.push(`${name} ${((Date.now() - tb) / 1000).toFixed(1)}s`); // the build alone
        // Statically: some emitted chunk holds worker.js's message handler, and none is empty.
        const js = jsFiles(out);
        const handlers = Object.entries(js).filter(([, t]) => t.includes("unknown message type") && /type:\s*["'`]ready["'`]/.test(t));
        ok(handlers.length > 0, `${name}: no emitted chunk holds worker.js's handler (${Object.keys(js)})`);
        for (const [f, t] of Object.entries(js)) ok(t.trim().length > 0, `${name}: ${f} is empty`);
        // For real: both workers load the tiny model and give the CLI's ids.
        await page.goto(`${origin}/fx/bundles/${name}/index.html`);
        await page.waitForFunction(() => window.appReady === true, null, { timeout: 30000 });
        const r = await page.evaluate(async (ways) => {
          const res = {};
          for (const k of ways) {
            try {
              const e = await window[k]("/fx/tiny/");
              res[k] = (await e.generateIds({ promptIds: [1, 2, 3], max_tokens: 4, temperature: 0 })).ids;
              await e.unload();
            } catch (e) { res[k] = `${e.name}/${e.code}: ${e.message}`; }
          }
          return res;
        }, name === "esbuild" ? ["viaOwnWorker"] : ["viaPackageWorker", "viaOwnWorker"]);
        for (const [k, v] of Object.entries(r)) eq(v, expected.tiny.slice(0, 4), `${name}: ${k}`);
      }
      figures.push(`bundlers: install ${(tInstall / 1000).toFixed(1)}s (0 when cached); builds: ${times.join(", ")}`);
    } finally {
      fs.rmSync(app, { recursive: true, force: true });
    }
  });

  test("package (bundlers): Vite 7's dev server without optimizeDeps.exclude rejects createEngine with worker_failed at once; with it, and on Vite 8's, the tiny model loads", async () => {
    const mods = await ensureBundlers();
    const { tgz } = await packPkg(root);
    const app = fs.mkdtempSync(path.join(os.tmpdir(), "qwen-webgpu-devapp-"));
    try {
      for (const [f, src] of Object.entries(APP)) fs.writeFileSync(path.join(app, f), src);
      const dest = path.join(app, "node_modules/qwen-webgpu");
      fs.mkdirSync(dest, { recursive: true });
      await run("tar", ["-xzf", tgz, "-C", dest, "--strip-components=1"]);
      const got = {};
      for (const [name, viteDir, exclude] of [["vite7", "vite7", false], ["vite7+exclude", "vite7", true], ["vite8", "vite", false]]) {
        const vite = await import(pathToFileURL(path.join(mods, viteDir, "dist/node/index.js")).href);
        fs.rmSync(path.join(app, "node_modules/.vite"), { recursive: true, force: true });
        const dev = await vite.createServer({
          root: app, configFile: false, logLevel: "error", server: { host: "127.0.0.1", port: 0, proxy: { "/fx": origin } },
          optimizeDeps: exclude ? { exclude: ["qwen-webgpu"] } : {},
        });
        try {
          await dev.listen();
          // Vite's dependency optimiser may reload the page while it first loads: the
          // navigation is then aborted (net::ERR_ABORTED); the reloaded page is the one to test.
          try {
            await page.goto(dev.resolvedUrls.local[0]);
          } catch (e) {
            if (!/ERR_ABORTED/.test(String(e))) throw e;
            await page.goto(dev.resolvedUrls.local[0]);
          }
          await page.waitForFunction(() => window.appReady === true, null, { timeout: 60000 });
          got[name] = await page.evaluate(async () => {
            const t0 = performance.now();
            try {
              const e = await window.viaPackageWorker("/fx/tiny/");
              const ids = (await e.generateIds({ promptIds: [1, 2, 3], max_tokens: 4, temperature: 0 })).ids;
              await e.unload();
              return { ids, ms: Math.round(performance.now() - t0) };
            } catch (e) { return { err: `${e.name}/${e.code}: ${e.message}`, ms: Math.round(performance.now() - t0) }; }
          });
        } finally {
          await dev.close();
        }
      }
      ok(/^GpuError\/worker_failed: the engine worker failed to start: .*optimizeDeps\.exclude/.test(got.vite7.err) && got.vite7.ms < 5000,
        `vite7 dev without exclude: ${JSON.stringify(got.vite7)}`);
      eq(got["vite7+exclude"].ids, expected.tiny.slice(0, 4), `vite7 dev with exclude (${got["vite7+exclude"].err})`);
      eq(got.vite8.ids, expected.tiny.slice(0, 4), `vite8 dev (${got.vite8.err})`);
      figures.push(`Vite dev servers: vite7 without exclude rejects in ${got.vite7.ms} ms; load + 4 tokens: vite7 with exclude ${got["vite7+exclude"].ms} ms, vite8 ${got.vite8.ms} ms`);
    } finally {
      fs.rmSync(app, { recursive: true, force: true });
    }
  });
}
