// Downloads that survive real networks (js/sources.js): bounded parallel Range requests, retry
// and resume, one aggregate progress, gzip-encoded responses, cross-origin Content-Range,
// checked redirects, and the test server's Host check. Each load is checked against the CLI's
// greedy ids (expected.json). Registered from run.mjs with its context.
import fs from "node:fs";
import path from "node:path";
import http from "node:http";

export default function downloadTests({ test, eq, ok, page, server, origin, expected, fixtures, figures, root }) {
  const port = server.address().port;
  const other = `http://localhost:${port}`; // another origin (same server, another host name)
  const sizeOf = (dir, names) => names.reduce((s, n) => s + fs.statSync(path.join(fixtures, dir, n)).size, 0);
  const safetensors = (e) => e.path.endsWith(".safetensors");
  const start = (range) => Number(/^bytes=(\d+)-/.exec(range || "")?.[1] ?? NaN);

  test("downloads (node): readPieces never fetches more than the window ahead; Retry-After; redirect rule", async () => {
    const { readPieces, retryAfterMs, checkRedirect, downloadOptions } = await import(path.join(root, "js/sources.js"));
    // A file whose ranges resolve after a random delay: count bytes fetched but not yet consumed.
    const data = new Uint8Array(300000).map((_, i) => (i * 13) & 255);
    let ahead = 0, maxAhead = 0, inflight = 0, maxInflight = 0;
    const file = {
      rangeOk: true,
      readInto: async (s, e, dest, at) => {
        inflight++; maxInflight = Math.max(maxInflight, inflight);
        ahead += e - s; maxAhead = Math.max(maxAhead, ahead);
        await new Promise((r) => setTimeout(r, Math.random() * 4));
        dest.set(data.subarray(s, e), at);
        inflight--;
      },
    };
    const sizes = [5000, 70000, 100, 40000, 1000, 60000, 23900, 100000];
    const pieces = [];
    let a = 0;
    for (const n of sizes) { pieces.push({ file, start: a, end: a + n }); a += n; }
    let biggest = 0;
    for await (const p of readPieces(pieces, { concurrency: 3, chunkBytes: 8192 })) {
      for (let k = 0; k < p.bytes.length; k += 997) if (p.bytes[k] !== data[p.start + k]) throw new Error(`byte ${p.start + k} differs`);
      biggest = Math.max(biggest, p.end - p.start);
      ahead -= p.end - p.start;
      await new Promise((r) => setTimeout(r, 2));
    }
    ok(maxInflight <= 3 && maxInflight >= 2, `requests at once: ${maxInflight}`);
    // Outstanding bytes: the piece being consumed plus at most the window (3 × 8192) beyond it.
    ok(maxAhead <= Math.max(biggest, 3 * 8192) + 3 * 8192, `bytes fetched ahead of the consumer: ${maxAhead}`);
    eq([retryAfterMs("0"), retryAfterMs("7"), retryAfterMs("999"), retryAfterMs(null), retryAfterMs("soon"),
      retryAfterMs(new Date(Date.UTC(2030, 0, 1, 0, 0, 5)).toUTCString(), Date.UTC(2030, 0, 1))], [0, 7000, 60000, null, null, 5000], "Retry-After");
    const red = (from, to) => { try { checkRedirect(from, { redirected: true, url: to }); return "ok"; } catch (e) { return `${e.code}: ${e.message}`; } };
    eq(red("https://a.example/m/config.json", "https://cdn.example/x"), "ok", "https → https");
    eq(red("http://a.example/m/config.json", "https://a.example/m/config.json"), "ok", "http → https");
    const down = red("https://a.example/m/config.json", "http://evil.example/config.json");
    ok(/^network: .*https:\/\/a\.example\/m\/config\.json redirected to http:\/\/evil\.example\/config\.json.*https to http is refused/.test(down), down);
    const bad = [];
    for (const o of [{ concurrency: 0 }, { concurrency: 17 }, { chunkBytes: 1.5 }, { retries: -1 }, { retryDelayMs: "9" }, { speed: 1 }, 5]) {
      try { downloadOptions(o); bad.push("accepted"); } catch (e) { bad.push(e.code); }
    }
    eq(bad, Array(7).fill("request_invalid"), "bad download options");
  });

  test("downloads (node): the test server answers only its own Host names (else 421)", async () => {
    const get = (host) => new Promise((res) => http.get({ host: "127.0.0.1", port, path: "/fx/tiny/config.json", headers: { Host: host } },
      (r) => { r.resume(); res(r.statusCode); }).on("error", (e) => res(String(e))));
    const got = {};
    for (const h of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, `LOCALHOST:${port}`, "evil.example", `evil.example:${port}`,
      `127.0.0.1:${port + 1}`, "127.0.0.1", `127.0.0.1.nip.io:${port}`]) got[h] = await get(h);
    eq(Object.values(got), [200, 200, 200, 200, 421, 421, 421, 421, 421], `statuses ${JSON.stringify(got)}`);
  });

  test("downloads: parallel Range requests (bounded by download.concurrency) give the CLI's ids, cached and not", async () => {
    const load = (model, opts, ids, n) => page.evaluate(async ({ model, opts, ids, n }) => {
      if (opts.useCache !== false) await qwen.deleteModelCache(model);
      const engine = await qwen.createEngine({ model, ...opts });
      const out = (await engine.generateIds({ promptIds: ids, max_tokens: n, temperature: 0 })).ids;
      await engine.unload();
      if (opts.useCache !== false) await qwen.deleteModelCache(model);
      return out;
    }, { model, opts, ids, n });
    const runs = [];
    for (const [what, model, opts, ids, n, want, most] of [
      ["4 at once", "/slow/tiny/", { useCache: false, download: { concurrency: 4, chunkBytes: 16384 } }, [1, 2, 3], 16, expected.tiny, 4],
      ["1 at once", "/fx/tiny/", { useCache: false, download: { concurrency: 1, chunkBytes: 16384 } }, [1, 2, 3], 16, expected.tiny, 1],
      ["3 at once, into the cache", "/slow/sharded/", { download: { concurrency: 3, chunkBytes: 16384 } }, [5, 6, 7, 8], 12, expected.sharded, 3],
    ]) {
      server.reset();
      const t0 = Date.now();
      eq(await load(model, opts, ids, n), want, `${what}: ids vs CLI`);
      const ranged = server.log.filter((e) => safetensors(e) && e.status === 206).length;
      runs.push(`${what}: ${ranged} Range requests of the weights, at most ${server.maxInFlight} at once, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      ok(server.maxInFlight <= most, `${what}: ${server.maxInFlight} responses at once`);
      if (most > 1) ok(server.maxInFlight >= 2, `${what}: never more than one request at once`);
      ok(ranged >= 4, `${what}: ${ranged} Range requests`);
    }
    figures.push(...runs.map((r) => `downloads: ${r}`));
  });

  test("downloads: a connection dropped mid-body is resumed with a Range from the byte where it broke (cached and not)", async () => {
    const { DROP_AFTER } = await import("./server.mjs");
    for (const [model, useCache, ids, n, want] of [["/drop/tiny/", false, [1, 2, 3], 16, expected.tiny], ["/drop/sharded/", true, [5, 6, 7, 8], 12, expected.sharded]]) {
      server.reset();
      const r = await page.evaluate(async ({ model, useCache, ids, n }) => {
        await qwen.deleteModelCache(model);
        const engine = await qwen.createEngine({ model, useCache, download: { retryDelayMs: 20, chunkBytes: 65536 } });
        const out = (await engine.generateIds({ promptIds: ids, max_tokens: n, temperature: 0 })).ids;
        await engine.unload();
        await qwen.deleteModelCache(model);
        return out;
      }, { model, useCache, ids, n });
      eq(r, want, `${model} (cache ${useCache}): ids vs CLI`);
      const drops = server.log.filter((e) => e.dropped && safetensors(e));
      ok(drops.length >= 1, `${model}: no transfer was dropped: ${JSON.stringify(server.log.slice(0, 6))}`);
      for (const d of drops) {
        const from = start(d.range) + DROP_AFTER;
        const resumed = server.log.filter((e) => e.path === d.path && e.status === 206 && start(e.range) === from);
        ok(resumed.length === 1, `${d.path}: dropped ${d.range} after ${DROP_AFTER} bytes; want one request from byte ${from}; got ${server.log.filter((e) => e.path === d.path).map((e) => `${e.range}:${e.status}`).join(" ")}`);
        figures.push(`downloads: ${d.path} dropped during ${d.range} after ${DROP_AFTER} bytes, resumed with Range ${resumed[0].range}`);
      }
    }
  });

  test("downloads: 503 and 429 (Retry-After) are retried, 404 is not, retries: 0 gives up, an abort during a backoff stops at once", async () => {
    server.reset();
    const r = await page.evaluate(async () => {
      const attempt = async (f) => { try { await f(); return "resolved"; } catch (e) { return `${e.name}/${e.code}: ${e.message}`; } };
      const engine = await qwen.createEngine({ model: "/flaky/tiny/", useCache: false, download: { retryDelayMs: 20 } });
      const ids = (await engine.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
      await engine.unload();
      const missing = await attempt(() => qwen.createEngine({ model: "/fx/nope/", useCache: false }));
      const noRetry = await attempt(() => qwen.createEngine({ model: "/flaky/sharded/", useCache: false, download: { retries: 0 } }));
      // A drop with a 15-30 s backoff ahead: the abort ends the load at once.
      const ctl = new AbortController();
      const t0 = performance.now();
      let abortedAt = 0;
      setTimeout(() => { abortedAt = performance.now(); ctl.abort(); }, 2500);
      const aborted = await attempt(() => qwen.createEngine({ model: "/drop/tiny/", useCache: false, signal: ctl.signal, download: { retryDelayMs: 30000 } }));
      return { ids, missing, noRetry, aborted, afterAbortS: (performance.now() - abortedAt) / 1000, totalS: (performance.now() - t0) / 1000 };
    });
    eq(r.ids, expected.tiny, "ids after 503 and 429");
    const flaky = server.log.filter((e) => e.path.startsWith("/flaky/tiny/"));
    ok(flaky.some((e) => e.status === 503) && flaky.some((e) => e.status === 429), `statuses ${flaky.map((e) => e.status)}`);
    ok(/^ConfigError\/config_missing: .*404/.test(r.missing), r.missing);
    eq(server.log.filter((e) => e.path === "/fx/nope/config.json").length, 1, "requests for a 404");
    ok(/^NetworkError\/network: .*HTTP 503.*gave up after 0 retries/.test(r.noRetry), r.noRetry);
    ok(/^AbortError\/aborted/.test(r.aborted), r.aborted);
    ok(server.log.some((e) => e.path.startsWith("/drop/tiny/") && e.dropped), "the aborted load saw no drop (it was not in a backoff)");
    ok(r.afterAbortS < 1.5, `the load ended ${r.afterAbortS.toFixed(2)} s after the abort`);
    figures.push(`downloads: abort during a retry backoff: the load rejected ${(r.afterAbortS * 1000).toFixed(0)} ms after abort()`);
  });

  test("downloads: gzip-encoded responses (Content-Length = encoded size) load, into the cache and streamed", async () => {
    server.reset();
    const r = await page.evaluate(async () => {
      const out = [];
      for (const useCache of [true, false]) {
        await qwen.deleteModelCache("/gzip/sharded/");
        const engine = await qwen.createEngine({ model: "/gzip/sharded/", useCache });
        out.push((await engine.generateIds({ promptIds: [5, 6, 7, 8], max_tokens: 12, temperature: 0 })).ids);
        await engine.unload();
      }
      await qwen.deleteModelCache("/gzip/sharded/");
      return out;
    });
    eq(r[0], expected.sharded, "ids, cached");
    eq(r[1], expected.sharded, "ids, streamed");
    const gz = server.log.filter((e) => e.path.startsWith("/gzip/") && e.status === 200);
    ok(gz.some(safetensors) && gz.some((e) => e.path.endsWith(".json")), `gzipped responses: ${gz.map((e) => e.path)}`);
  });

  test("downloads: another origin must expose Content-Range (the error names Access-Control-Expose-Headers); redirects are followed", async () => {
    server.reset();
    const r = await page.evaluate(async ({ other }) => {
      const attempt = async (model, opts = {}) => {
        try {
          const e = await qwen.createEngine({ model, useCache: false, ...opts });
          const ids = (await e.generateIds({ promptIds: [1, 2, 3], max_tokens: 16, temperature: 0 })).ids;
          await e.unload();
          return ids;
        } catch (e) { return `${e.name}/${e.code}: ${e.message}`; }
      };
      return {
        hidden: await attempt(`${other}/corshidden/tiny/`),
        hiddenCached: await attempt(`${other}/corshidden/tiny/`, { useCache: true }),
        exposed: await attempt(`${other}/cors/tiny/`),
        redirect: await attempt("/redir/tiny/"),
        crossRedirect: await attempt("/xredir/tiny/", { useCache: true }),
      };
    }, { other });
    for (const k of ["hidden", "hiddenCached"]) ok(/^NetworkError\/network: .*Content-Range.*Access-Control-Expose-Headers: Content-Range/.test(r[k]), `${k}: ${r[k]}`);
    eq(r.exposed, expected.tiny, "exposed Content-Range: ids");
    eq(r.redirect, expected.tiny, "same-origin redirect: ids");
    eq(r.crossRedirect, expected.tiny, "redirect to another origin: ids");
    ok(server.log.some((e) => e.path.startsWith("/xredir/") && e.status === 302), "no redirect was served");
    figures.push(`downloads: hidden Content-Range: ${r.hidden}`);
  });

  test("downloads: one aggregate progress (bytes of all files, rate, ETA) from the first download event to ready", async () => {
    const names = ["config.json", "model.safetensors.index.json", ...new Set(Object.values(JSON.parse(fs.readFileSync(path.join(fixtures, "sharded/model.safetensors.index.json"), "utf8")).weight_map))];
    const total = sizeOf("sharded", names);
    server.reset();
    const r = await page.evaluate(async () => {
      await qwen.deleteModelCache("/slow/sharded/");
      const ev = [];
      const engine = await qwen.createEngine({ model: "/slow/sharded/", cache: false, download: { chunkBytes: 8192, concurrency: 2 }, onProgress: (p) => ev.push(p) });
      const ids = (await engine.generateIds({ promptIds: [5, 6, 7, 8], max_tokens: 12, temperature: 0 })).ids;
      await engine.unload();
      await qwen.deleteModelCache("/slow/sharded/");
      return { ids, ev };
    });
    eq(r.ids, expected.sharded, "ids");
    const dl = r.ev.filter((p) => p.phase === "download");
    ok(dl.length >= 4, `download events: ${dl.length}`);
    for (const p of r.ev) ok(["phase", "loaded", "total", "bytesLoaded", "bytesTotal", "bytesPerSecond", "etaSeconds"].every((k) => k in p), `event fields: ${JSON.stringify(p)}`);
    const from = r.ev.indexOf(dl[0]);
    for (const p of r.ev.slice(from)) eq(p.bytesTotal, total, `bytesTotal (all files) at ${p.phase} ${p.bytesLoaded}`);
    let prev = 0;
    for (const p of r.ev) { ok(p.bytesLoaded >= prev && p.bytesLoaded <= p.bytesTotal, `bytesLoaded ${prev} → ${p.bytesLoaded} of ${p.bytesTotal}`); prev = p.bytesLoaded; }
    const last = r.ev[r.ev.length - 1];
    eq([last.phase, last.bytesLoaded, last.etaSeconds], ["ready", total, 0], "last event");
    const timed = dl.filter((p) => p.bytesPerSecond > 0 && p.etaSeconds > 0 && Number.isFinite(p.etaSeconds));
    ok(timed.length >= 1, `no download event with a rate and an ETA: ${JSON.stringify(dl.slice(-3))}`);
    const mid = timed[Math.floor(timed.length / 2)];
    figures.push(`downloads: aggregate progress over ${names.length} files (${total} bytes): ${dl.length} download events; mid-way ${mid.bytesLoaded}/${mid.bytesTotal} B at ${mid.bytesPerSecond} B/s, ETA ${mid.etaSeconds.toFixed(1)} s`);
  });
}
