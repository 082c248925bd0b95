// The model store (js/store.js, issue 13 items 2-3): after a load from a URL, what the GPU
// holds is kept in the origin private file system; a reload reads it with no network request.
// These tests run on an origin of their own (a proxy in front of the test server that can
// refuse every model request, as a stopped server would), so their storage is their own.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";

/** A proxy to the test server at `port`; while `offline`, every request outside /pkg/ and
 *  /tests/ (and the favicon) is refused (the connection is closed) and counted. */
function startProxy(port) {
  const state = { offline: false, refused: [], modelRequests: [] };
  const server = http.createServer((req, res) => {
    const ours = req.url.startsWith("/pkg/") || req.url.startsWith("/tests/") || req.url === "/favicon.ico";
    if (!ours) state.modelRequests.push(`${req.method} ${req.url}`);
    if (state.offline && !ours) {
      state.refused.push(`${req.method} ${req.url}`);
      req.socket.destroy();
      return;
    }
    const headers = { ...req.headers, host: `127.0.0.1:${port}` }; // the test server checks Host
    const up = http.request({ host: "127.0.0.1", port, path: req.url, method: req.method, headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, state, origin: `http://127.0.0.1:${server.address().port}` })));
}

/** A safetensors file's tensors: name → { dtype, shape, bytes }; and its metadata. */
function tensors(buf) {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const out = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    out.set(name, { dtype: t.dtype, shape: t.shape, bytes: buf.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]) });
  }
  return { tensors: out, metadata: header.__metadata__ || {} };
}

/** Values of an F32 or BF16 tensor. */
function values({ dtype, bytes }) {
  const out = [];
  for (let i = 0; i < bytes.length; i += dtype === "F32" ? 4 : 2) {
    out.push(dtype === "F32" ? bytes.readFloatLE(i) : new Float32Array(new Uint32Array([bytes.readUInt16LE(i) << 16]).buffer)[0]);
  }
  return out;
}

export default function storeTests({ test, eq, ok, browser, server, fixtures, expected, figures, root }) {
  const url = "/fx/tiny/";

  /** A page of the proxy's origin, ready (index.js imported), and the proxy. */
  async function openPage() {
    const proxy = await startProxy(server.address().port);
    const page = await browser.newPage();
    await page.goto(`${proxy.origin}/tests/web/page.html`);
    await page.waitForFunction(() => window.qwenReady === true, null, { timeout: 60000 });
    return { proxy, page, close: async () => { await page.close(); proxy.server.close(); } };
  }

  /** Every folder and file under the store's OPFS folder, with sizes. */
  const listStore = (page) => page.evaluate(async () => {
    const out = [];
    const walk = async (dir, at) => {
      for await (const [name, h] of dir.entries()) {
        if (h.kind === "directory") { out.push(`${at}${name}/`); await walk(h, `${at}${name}/`); }
        else out.push(`${at}${name} ${(await h.getFile()).size}`);
      }
    };
    try { await walk(await (await navigator.storage.getDirectory()).getDirectoryHandle("qwen-webgpu-store"), ""); } catch { /* no store yet */ }
    return out;
  });

  test("model store: q4 kept after the first load (GPU-quantized tensors equal the CLI's quantize); a reload with the server refusing every request gives the CLI's ids, reads <= 1.1x the stored bytes, quantizes nothing; deleteModelCache removes everything", async () => {
    const { proxy, page, close } = await openPage();
    try {
      const first = await page.evaluate(async (url) => {
        await qwen.deleteModelCache(url);
        const before = await qwen.hasModelInCache(url);
        const events = [];
        const t0 = performance.now();
        // Quantized on the GPU (encoder "gpu"; "auto" picks the CPU encoder on SwiftShader): the
        // stored words and scales are what the GPU made.
        const e = await qwen.createEngine({ model: url, weights: "q4", encoder: "gpu", onProgress: (p) => events.push([p.phase, p.code || "", p.text || ""]) });
        const loadS = (performance.now() - t0) / 1000;
        const out = await e.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
        const info = await e.info();
        await e.unload();
        const has = { any: await qwen.hasModelInCache(url), q4: await qwen.hasModelInCache(url, { weights: "q4" }),
          q8: await qwen.hasModelInCache(url, { weights: "q8" }), auto: await qwen.hasModelInCache(url, { weights: "auto" }) };
        const cacheApi = (await (await caches.open(qwen.CACHE_NAME)).keys()).map((r) => r.url).filter((u) => u.includes(url));
        // The stored weights file, for the comparison with the CLI's.
        let file = null;
        let manifest = null;
        try {
          const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("qwen-webgpu-store");
          for await (const [, h] of dir.entries()) {
            file = Array.from(new Uint8Array(await (await (await h.getFileHandle("model.safetensors")).getFile()).arrayBuffer()));
            manifest = JSON.parse(await (await (await h.getFileHandle("manifest.json")).getFile()).text());
          }
        } catch (e) { manifest = { error: String(e) }; }
        return { before, ids: out.ids, ttft: out.usage.time_to_first_token_s, loadS, load: info.load, has, cacheApi, file, manifest,
          phases: [...new Set(events.map((x) => x[0]))], warnings: events.filter((x) => x[0] === "warning") };
      }, url);
      ok(!first.before, "not cached before");
      eq(first.ids, expected.prequant, "first load (q4 from bf16) vs the CLI's --weights q4 ids");
      eq(first.warnings, [], "warnings while storing");
      ok(first.phases.includes("store"), `phases ${first.phases}`);
      eq(first.load.source, "url", "first load's source");
      ok(first.load.store?.stored === true, `stored: ${JSON.stringify(first.load.store)}`);
      eq(first.has, { any: true, q4: true, q8: false, auto: false }, "hasModelInCache");
      eq(first.cacheApi, [], "raw downloads in the Cache API while the store is on");
      eq(first.manifest.weights, "q4", "manifest format");
      eq(first.manifest.files["model.safetensors"], first.file.length, "manifest size");

      // Byte for byte what `qwen-webgpu quantize --format q4` wrote for the same fixture.
      const cli = tensors(fs.readFileSync(path.join(fixtures, "tiny-q4/model.safetensors")));
      const mine = tensors(Buffer.from(first.file));
      eq(mine.metadata, cli.metadata, "__metadata__ (format, group, version)");
      eq([...mine.tensors.keys()].sort(), [...cli.tensors.keys()].sort(), "tensor names");
      let sameBytes = 0;
      let sameValues = 0;
      for (const [name, c] of cli.tensors) {
        const m = mine.tensors.get(name);
        eq(m.shape, c.shape, `${name} shape`);
        if (c.dtype === "U32" || (c.dtype === "F16" && m.dtype === "F16")) {
          eq(m.dtype, c.dtype, `${name} dtype`);
          ok(Buffer.compare(m.bytes, c.bytes) === 0, `${name}: stored bytes differ from the CLI's quantize`);
          sameBytes++;
        } else {
          eq(values(m), values(c), `${name} values (${m.dtype} vs ${c.dtype})`);
          sameValues++;
        }
      }
      ok(sameBytes >= 10 && [...cli.tensors.keys()].some((n) => n.endsWith(".qweight")), `only ${sameBytes} tensors compared by bytes`);

      // Reload with every model request refused (a stopped server), on the page's thread.
      proxy.state.offline = true;
      proxy.state.modelRequests.length = 0;
      const again = await page.evaluate(async (url) => {
        const events = [];
        const t0 = performance.now();
        const e = await qwen.createEngine({ model: url, weights: "q4", useWorker: false, onProgress: (p) => events.push([p.phase, p.code || ""]) });
        const loadS = (performance.now() - t0) / 1000;
        const out = await e.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 });
        const info = await e.info();
        await e.unload();
        return { ids: out.ids, ttft: out.usage.time_to_first_token_s, loadS, load: info.load, weights: info.weights,
          phases: [...new Set(events.map((x) => x[0]))], warnings: events.filter((x) => x[0] === "warning") };
      }, url);
      proxy.state.offline = false;
      eq(proxy.state.refused, [], "model requests during the reload");
      eq(proxy.state.modelRequests, [], "model requests during the reload");
      eq(again.ids, expected.prequant, "reload from the store vs the CLI's ids");
      eq(again.warnings, [], "warnings on the reload");
      eq(again.load.source, "store", "reload's source");
      eq(again.weights, "q4", "reload's format");
      ok(again.load.prequantized, "the stored copy is pre-quantized: its words and scales go to the GPU as stored (nothing is quantized)");
      ok(!again.phases.includes("download") && !again.phases.includes("store"), `reload phases ${again.phases}`);
      const stored = first.file.length;
      const ratio = again.load.bytesRead / stored;
      ok(ratio >= 1 && ratio <= 1.1, `the reload read ${again.load.bytesRead} bytes for ${stored} stored (x${ratio.toFixed(3)})`);
      const l1 = first.load;
      const l2 = again.load;
      figures.push(`store (tiny, q4 from bf16, GPU encoder): first load ${first.loadS.toFixed(2)} s (weights ${l1.weightsS.toFixed(3)} s of which put ${l1.uploadS.toFixed(3)} s, finish ${l1.finishS.toFixed(3)} s; storing ${l1.store.bytes} B in ${l1.store.seconds.toFixed(3)} s, GPU readback ${l1.store.gpuReadS.toFixed(3)} s, persisted ${l1.store.persisted}), first call ${first.ttft.toFixed(3)} s`);
      figures.push(`store reload (server refusing, in-thread): ${again.loadS.toFixed(2)} s (weights ${l2.weightsS.toFixed(3)} s of which put ${l2.uploadS.toFixed(3)} s, finish ${l2.finishS.toFixed(3)} s), read ${l2.bytesRead} B for a ${stored} B stored file (x${ratio.toFixed(3)}), 0 requests, nothing quantized; first call (kernel compilation) ${again.ttft.toFixed(3)} s`);

      // Deleting removes every file of the model, from the store and the Cache API.
      const del = await page.evaluate(async (url) => {
        const removed = await qwen.deleteModelCache(url);
        return { removed, has: await qwen.hasModelInCache(url), q4: await qwen.hasModelInCache(url, { weights: "q4" }),
          cacheApi: (await (await caches.open(qwen.CACHE_NAME)).keys()).map((r) => r.url).filter((u) => u.includes(url)) };
      }, url);
      ok(del.removed >= 3, `files removed: ${del.removed}`);
      eq([del.has, del.q4, del.cacheApi], [false, false, []], "after deleteModelCache");
      eq(await listStore(page), [], "the store's folder after deleteModelCache");
    } finally {
      await close();
    }
  });

  test("model store: a failed write (quota exceeded mid-way) and a model over the quota leave nothing and still load; a damaged copy is replaced; cache: false stores nothing", async () => {
    const { page, close } = await openPage();
    try {
      const r = await page.evaluate(async (url) => {
        await qwen.deleteModelCache(url);
        const load = async (opts) => {
          const warnings = [];
          const e = await qwen.createEngine({ model: url, weights: "q4", ...opts, onProgress: (p) => { if (p.phase === "warning") warnings.push(p.code); } });
          const ids = (await e.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
          const info = await e.info();
          await e.unload();
          return { ids, warnings, source: info.load.source, stored: info.load.store?.stored ?? null, has: await qwen.hasModelInCache(url, { weights: "q4" }) };
        };
        const out = {};
        out.failMidway = await load({ _testStore: { failAfterBytes: 20000 } });
        out.overQuota = await load({ _testStore: { quotaBytes: 1000 } });
        out.off = await load({ cache: false, useCache: false });
        out.stored = await load({});
        // Damage the stored weights (same size, garbage header): the next load removes the copy,
        // loads from the URL and stores it again.
        const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("qwen-webgpu-store");
        for await (const [, h] of dir.entries()) {
          const w = await (await h.getFileHandle("model.safetensors")).createWritable({ keepExistingData: true });
          await w.write({ type: "write", position: 0, data: new Uint8Array(8).fill(0xff) });
          await w.close();
        }
        out.damaged = await load({});
        out.fromStore = await load({ useWorker: false });
        // Another format of the same URL is another copy; storing it keeps the q4 one.
        out.q8 = await load({ weights: "q8" });
        out.q8.q4Kept = await qwen.hasModelInCache(url, { weights: "q4" });
        out.q8.q8Kept = await qwen.hasModelInCache(url, { weights: "q8" });
        let bad = "";
        try { await qwen.createEngine({ model: url, cache: "yes" }); bad = "loaded?!"; } catch (e) { bad = `${e.name}/${e.code}: ${e.message}`; }
        out.bad = bad;
        out.removed = await qwen.deleteModelCache(url);
        return out;
      }, url);
      const want = expected.prequant;
      for (const k of ["failMidway", "overQuota", "off", "stored", "damaged", "fromStore"]) eq(r[k].ids, want, `${k}: ids`);
      eq([r.failMidway.warnings, r.failMidway.stored, r.failMidway.has], [["cache_quota"], false, false], "quota exceeded mid-way");
      eq([r.overQuota.warnings, r.overQuota.stored, r.overQuota.has], [["cache_quota"], false, false], "over the quota before writing");
      eq([r.off.warnings, r.off.stored, r.off.has], [[], null, false], "cache: false");
      eq([r.stored.warnings, r.stored.stored, r.stored.has, r.stored.source], [[], true, true, "url"], "stored");
      eq([r.damaged.warnings, r.damaged.source, r.damaged.stored, r.damaged.has], [["cache_damaged"], "url", true, true], "damaged copy");
      eq([r.fromStore.warnings, r.fromStore.source], [[], "store"], "the copy stored again");
      eq([r.q8.warnings, r.q8.stored, r.q8.q8Kept, r.q8.q4Kept], [[], true, true, true], "a q8 copy next to the q4 one");
      ok(/^RequestError\/request_invalid: cache must be true or false/.test(r.bad), r.bad);
      ok(r.removed >= 6, `removed ${r.removed} (two copies of at least 3 files)`);
      eq(await listStore(page), [], "the store's folder at the end");
    } finally {
      await close();
    }
  });

  test("model store: the package's STORE_VERSION is the crate's store_version() (quant.rs FORMAT_VERSION + the GPU encoder's)", async () => {
    const js = fs.readFileSync(path.join(root, "js/cache.js"), "utf8").match(/STORE_VERSION = "([^"]+)"/)[1];
    const fmt = fs.readFileSync(path.join(root, "src/weights/quant.rs"), "utf8").match(/pub const FORMAT_VERSION: &str = "([^"]+)"/)[1];
    const enc = fs.readFileSync(path.join(root, "src/model/export.rs"), "utf8").match(/pub const GPU_ENCODER_VERSION: &str = "([^"]+)"/)[1];
    eq(js, `${fmt}.${enc}`, "STORE_VERSION vs the Rust constants");
  });
}
