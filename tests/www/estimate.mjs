// Chat page (issue 12): the GPU memory the model will need is shown as text before the
// download starts. The weight download is held back (the page's requests are routed) until
// the page has shown the estimate. Registered by run.mjs: `(await import("./estimate.mjs")).default(ctx)`.

/** The page's byte format (www/app.js fmtBytes). */
function fmtBytes(n) {
  if (!Number.isFinite(n) || n <= 0) return "0 B";
  const u = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
}

export default function estimateTests({ test, ok, page, pageUrl, setModel, modelUrl, notes }) {
  test("the GPU memory estimate is shown as text before any weight is downloaded, and matches the loaded model", async () => {
    // Nothing of the model (nor the page's settings) kept in the browser: the weights must
    // be downloaded, and the page starts as a new visitor's.
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Storage.clearDataForOrigin", { origin: new URL(modelUrl).origin, storageTypes: "all" });
    await cdp.detach();
    await page.goto(pageUrl);
    await page.waitForFunction(() => window.qwenChat?.ready === true, null, { timeout: 60000 });
    const held = [];
    let seenWeights = 0;
    let release;
    const released = new Promise((r) => { release = r; });
    const pattern = new URL("model.safetensors", modelUrl).href;
    await page.route(pattern, async (route) => {
      const range = route.request().headers().range || "";
      const m = /^bytes=(\d+)-(\d+)$/.exec(range);
      // The 8-byte prefix and the header (well under 64 KiB here) may pass; weights wait.
      if (m && Number(m[2]) < 65536) return route.continue();
      seenWeights++;
      held.push(route);
      await released;
      await route.continue();
    });
    try {
      await setModel(modelUrl, "");
      await page.click("#load");
      await page.waitForFunction(() => /needs/.test(document.getElementById("model-status").textContent), null, { timeout: 60000 });
      const shown = await page.locator("#model-status").textContent();
      const elements = await page.locator("#model-status *").count();
      const heldThen = held.length;
      // Let the download go on and the load finish.
      release();
      await page.waitForFunction(() => !document.getElementById("load").disabled && document.getElementById("cancel-load").hidden, null, { timeout: 180000 });
      const info = await page.evaluate(async () => { const i = await window.qwenChat.state.engine.info(); return { gpuBytes: i.gpuBytes, weights: i.weights, kvCache: i.kvCache }; });
      ok(/^This model needs \d+(\.\d)? [KMG]?B of GPU memory: \d+(\.\d)? [KMG]?B of (f16|q8|q4) weights and \d+(\.\d)? [KMG]?B for the (f32|f16|q8) KV cache and activations\.$/.test(shown), `status: ${shown}`);
      eq0(elements, "elements inside the status line");
      ok(seenWeights >= 1, "the weight download was never requested (the route saw nothing)");
      ok(shown.includes(`needs ${fmtBytes(info.gpuBytes)} of GPU memory`), `estimate "${shown}" vs the loaded model's ${fmtBytes(info.gpuBytes)} (${info.gpuBytes} B)`);
      ok(shown.includes(`of ${info.weights} weights`) && shown.includes(`the ${info.kvCache} KV cache`), `formats: ${shown} vs ${JSON.stringify(info)}`);
      ok(/^Loaded /.test(await page.locator("#model-status").textContent()), "status after the load");
      notes.push(`estimate before download: "${shown}" (${heldThen} weight request(s) held meanwhile)`);
    } finally {
      release();
      await page.unroute(pattern);
    }
  });
}

function eq0(n, what) { if (n !== 0) throw new Error(`${what}: ${n}`); }
