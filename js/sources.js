// Where model files come from: a base URL (Hugging Face `resolve/main/` layout), `File`s or a
// picked directory, or in-memory buffers. Every source answers the same questions:
//   has(name), text(name), bytes(name), open(name) -> { size, read(start, end) }.
// `read` returns one tensor's bytes; nothing here ever holds a whole checkpoint.
// Downloads can go through the Cache API (one full response per file, written while it
// streams, read back by slices); a failed or partial download is never left in the cache.

import { qwenError } from "./errors.js";
import { CACHE_NAME, normaliseBase, ggufUrl, isGgufName } from "./cache.js";

function abortError() {
  return qwenError("aborted", "the load was aborted");
}

/** The files a model needs, as far as any source knows them. */
export const MODEL_FILES = [
  "config.json",
  "generation_config.json",
  "tokenizer_config.json",
  "model.safetensors",
  "model.safetensors.index.json",
  "tokenizer.json",
  "qwen.tiktoken",
];

/**
 * The most bytes read of each whole file (the crate's caps, src/files.rs): a bigger file, or an
 * endless body, is refused once the cap is passed, without holding more than the cap.
 */
export const FILE_CAPS = Object.freeze({
  "config.json": 1 << 20,
  "generation_config.json": 1 << 20,
  // The chat template and added tokens (Qwen3's: 10 KB; some checkpoints list thousands of
  // added tokens).
  "tokenizer_config.json": 16 << 20,
  "model.safetensors.index.json": 16 << 20,
  "tokenizer.json": 64 << 20,
  "qwen.tiktoken": 64 << 20,
});
const DEFAULT_CAP = 64 << 20;
const mib = (n) => `${n / (1 << 20)} MiB`;

/** The code of a file over its cap. */
const tooBigCode = (name) => (name.endsWith("config.json") ? "config_invalid" : name === "tokenizer.json" || name === "qwen.tiktoken" ? "tokenizer_invalid" : "weights_corrupt");
const tooBig = (label, name, cap) => qwenError(tooBigCode(name), `${label}: ${name} is larger than its ${mib(cap)} limit`);

/** The whole body of `res`, at most `cap` bytes (else an error naming the file and the cap). */
async function cappedBytes(res, label, name, cap) {
  const declared = Number(res.headers?.get("Content-Length"));
  if (Number.isFinite(declared) && declared > cap) {
    try { await res.body?.cancel(); } catch { /* ignore */ }
    throw tooBig(label, name, cap);
  }
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const parts = [];
  let n = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > cap) {
      try { await reader.cancel(); } catch { /* ignore */ }
      throw tooBig(label, name, cap);
    }
    parts.push(value);
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.byteLength; }
  return out;
}

/** The code of a file that is not there: config.json's, or a checkpoint file's. */
const missingCode = (name) => (name === "config.json" ? "config_missing" : name === "tokenizer.json" || name === "qwen.tiktoken" ? "tokenizer_missing" : "weights_missing");

// ---------------------------------------------------------------- downloads

/**
 * How URL downloads behave (the `download` load option overrides any of these):
 * - `concurrency`: Range requests in flight at once (1..16);
 * - `chunkBytes`: the most bytes one request asks for (4 KiB..1 GiB, default 8 MiB),
 *   so at most about concurrency × chunkBytes are held beyond the tensor being put on the GPU;
 * - `retries`: failures in a row (with no byte received between them) before giving up
 *   (0..20); a network error, a dropped transfer, 408/425/429/500/502/503/504 are retried,
 *   resuming from the byte where the transfer broke; other HTTP errors (404, 403, ...) are not;
 * - `retryDelayMs`: the first wait (1..60000 ms), doubled each time (with jitter, at most
 *   30 s); a Retry-After header (seconds or a date, at most 60 s) is used instead when sent.
 */
export const DOWNLOAD_DEFAULTS = Object.freeze({ concurrency: 4, chunkBytes: 8 << 20, retries: 5, retryDelayMs: 500 });
const DOWNLOAD_RANGES = { concurrency: [1, 16], chunkBytes: [4096, 1 << 30], retries: [0, 20], retryDelayMs: [1, 60000] };

/** The `download` option, checked (RequestError naming the field), with the defaults filled in. */
export function downloadOptions(o) {
  if (o === undefined || o === null) return { ...DOWNLOAD_DEFAULTS };
  if (typeof o !== "object" || Array.isArray(o)) throw qwenError("request_invalid", "download must be an object ({ concurrency, chunkBytes, retries, retryDelayMs })");
  const out = { ...DOWNLOAD_DEFAULTS };
  for (const [k, v] of Object.entries(o)) {
    const range = DOWNLOAD_RANGES[k];
    if (!range) throw qwenError("request_invalid", `download.${k} is not an option (concurrency, chunkBytes, retries, retryDelayMs)`);
    if (v === undefined) continue;
    if (typeof v !== "number" || !Number.isInteger(v) || v < range[0] || v > range[1]) {
      throw qwenError("request_invalid", `download.${k} must be a whole number from ${range[0]} to ${range[1]} (got ${typeof v === "number" ? v : JSON.stringify(v) ?? typeof v})`);
    }
    out[k] = v;
  }
  return out;
}

/** HTTP statuses worth retrying: the server or a proxy may answer the next try. */
const TRANSIENT = new Set([408, 425, 429, 500, 502, 503, 504]);

/** A Retry-After header (seconds or an HTTP date) in ms, at most 60 s; null when absent or bad. */
export function retryAfterMs(v, nowMs = Date.now()) {
  if (v === null || v === undefined || v === "") return null;
  const s = String(v).trim();
  const ms = /^\d+$/.test(s) ? Number(s) * 1000 : Date.parse(s) - nowMs;
  return Number.isFinite(ms) ? Math.min(60000, Math.max(0, ms)) : null;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) { reject(abortError()); return; }
    const onAbort = () => { clearTimeout(t); reject(abortError()); };
    const t = setTimeout(() => { signal?.removeEventListener("abort", onAbort); resolve(); }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A redirect is followed by the browser; its end is checked here: a model asked for over https
 * must not be fetched over plain http (a downgrade anyone on the path can change), and the
 * error says where it went. Same-scheme redirects, and http → https, are fine.
 */
export function checkRedirect(requested, res) {
  if (!res || !res.redirected || !res.url) return;
  const from = new URL(requested, typeof location !== "undefined" ? location.href : undefined);
  const to = new URL(res.url);
  if (from.protocol === "https:" && to.protocol !== "https:") {
    throw qwenError("network", `${requested} redirected to ${res.url}: a redirect from https to ${to.protocol.replace(":", "")} is refused (the download would not be protected)`);
  }
  if (to.protocol !== "https:" && to.protocol !== "http:") {
    throw qwenError("network", `${requested} redirected to ${res.url}: only http(s) downloads are followed`);
  }
}

/** The size a response's body will have once decoded: NaN when a Content-Encoding (or a CORS
 *  response that may hide one) makes Content-Length the encoded size. */
export function decodedLength(res) {
  const enc = (res.headers.get("Content-Encoding") || "").trim().toLowerCase();
  if (enc && enc !== "identity") return NaN;
  if (!enc && res.type === "cors") return NaN; // Content-Encoding is not visible cross-origin unless exposed
  const n = Number(res.headers.get("Content-Length"));
  return res.headers.get("Content-Length") !== null && Number.isFinite(n) && n >= 0 ? n : NaN;
}

/** `bytes A-B/TOTAL` of a 206, or null when the header is absent (or not exposed to this page). */
function contentRange(res) {
  const m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec((res.headers.get("Content-Range") || "").trim());
  if (!m) return null;
  return { start: Number(m[1]), end: Number(m[2]) + 1, total: m[3] === "*" ? NaN : Number(m[3]) };
}

function noContentRange(url) {
  return qwenError("network",
    `${url}: the server answered a Range request (206) but its Content-Range header cannot be read, so the file's size is unknown. ` +
    "A server on another origin must send `Access-Control-Expose-Headers: Content-Range` (with Access-Control-Allow-Origin) for the browser to show it.");
}

/**
 * Aggregate progress of a load: bytes of all its files, the rate over the last few seconds and
 * the time left at that rate. `expect(name, size)` adds a file to the total (once per name);
 * `add(name, n, network)` counts bytes received (network false: bytes that cost no download,
 * such as a file already in the cache). A file counts at most its size (a header read twice
 * does not push the total past 100%); a file of unknown size counts what was received.
 */
export class Meter {
  constructor({ windowMs = 5000, now = () => (typeof performance !== "undefined" ? performance.now() : Date.now()) } = {}) {
    this.sizes = new Map(); // file → its size, when known
    this.got = new Map(); // file → bytes received
    this.net = 0; // bytes that came over the network (the rate's)
    this.samples = [];
    this.windowMs = windowMs;
    this.now = now;
    this.onUpdate = null;
    this.lastUpdate = -Infinity;
  }
  expect(name, size) {
    if (Number.isFinite(size) && size >= 0 && !this.sizes.has(name)) this.sizes.set(name, size);
  }
  add(name, n, network = true) {
    if (!(n > 0)) return;
    this.got.set(name, (this.got.get(name) || 0) + n);
    if (!network) return;
    this.net += n;
    const t = this.now();
    this.samples.push([t, this.net]);
    // Keep one sample at or before the window's start, so the rate spans the whole window.
    while (this.samples.length > 2 && this.samples[1][0] <= t - this.windowMs) this.samples.shift();
    if (this.onUpdate && t - this.lastUpdate >= 100) {
      this.lastUpdate = t;
      try { this.onUpdate(); } catch { /* a progress callback must not break the download */ }
    }
  }
  /** `{bytesLoaded, bytesTotal, bytesPerSecond, etaSeconds}`; `done`: the load finished. */
  snapshot(done = false) {
    let total = 0;
    let loaded = 0;
    for (const [name, size] of this.sizes) { total += size; loaded += Math.min(size, this.got.get(name) || 0); }
    for (const [name, n] of this.got) if (!this.sizes.has(name)) { total += n; loaded += n; }
    if (done) loaded = total;
    const t = this.now();
    let rate = 0;
    if (this.samples.length >= 2) {
      const [t0, b0] = this.samples[0];
      const dt = (t - t0) / 1000;
      if (dt >= 0.2 && t - this.samples[this.samples.length - 1][0] < this.windowMs) rate = (this.net - b0) / dt;
    }
    const left = total - loaded;
    return { bytesLoaded: loaded, bytesTotal: total, bytesPerSecond: Math.round(rate), etaSeconds: left === 0 ? 0 : rate > 0 ? left / rate : null };
  }
}

/**
 * Read `pieces` (`[{ file, start, end }]`, opened files) in order, yielding each piece's bytes
 * (one Uint8Array) in turn. Files that can (`file.readInto`) are fetched by up to
 * `concurrency` requests at once, a piece larger than `chunkBytes` in several ranges, and
 * nothing is fetched more than `windowBytes` (default concurrency × chunkBytes) beyond the
 * piece being consumed, or beyond that piece itself when it is larger. Other files are read
 * one piece at a time. On an error the others are stopped (`halt`) and the error is thrown.
 */
export async function* readPieces(pieces, { concurrency = DOWNLOAD_DEFAULTS.concurrency, chunkBytes = DOWNLOAD_DEFAULTS.chunkBytes, windowBytes, halt } = {}) {
  const window = windowBytes ?? concurrency * chunkBytes;
  const jobs = [];
  const state = pieces.map((p, i) => ({ ...p, i, left: 0, buf: null, done: null }));
  let offset = 0;
  for (const s of state) {
    s.at = offset; // bytes of the pieces before this one
    offset += s.end - s.start;
    if (s.end <= s.start) { s.buf = new Uint8Array(0); continue; }
    if (!s.file.readInto) { jobs.push({ s, start: s.start, end: s.end, whole: true }); s.left = 1; continue; }
    for (let a = s.start; a < s.end; a += chunkBytes) {
      jobs.push({ s, start: a, end: Math.min(s.end, a + chunkBytes) });
      s.left++;
    }
  }
  let next = 0;
  let inflight = 0;
  let current = 0; // the piece being consumed
  let failure = null;
  let wake = null;
  const notify = () => { const w = wake; wake = null; w?.(); };
  const start = () => {
    while (!failure && next < jobs.length && inflight < concurrency) {
      const j = jobs[next];
      const s = j.s;
      const cur = state[current];
      // Bounded memory: not beyond the window (or the current piece) ahead of the consumer.
      const reach = (s.at - cur.at) + (j.end - s.start);
      if (s.i > current && reach > Math.max(window, cur.end - cur.start)) break;
      // A file that has not yet shown it honours later ranges (or that is read in order, as a
      // stream) gets one request at a time: a server answering them with the whole file
      // then sends it once, not once per request.
      if (s.file.busy && (j.whole || !s.file.rangeOk)) break;
      next++;
      inflight++;
      s.file.busy = (s.file.busy || 0) + 1;
      if (!s.buf && !j.whole) s.buf = new Uint8Array(s.end - s.start);
      const p = j.whole ? s.file.read(j.start, j.end).then((b) => { s.buf = b; })
        : s.file.readInto(j.start, j.end, s.buf, j.start - s.start);
      p.then(() => { s.left--; }, (e) => { failure ??= e; }).finally(() => {
        inflight--;
        s.file.busy--;
        if (!failure) start();
        notify();
      });
    }
  };
  try {
    for (; current < state.length; current++) {
      start();
      const s = state[current];
      while (s.left > 0 && !failure) {
        await new Promise((r) => { wake = r; });
        start();
      }
      if (failure) throw failure;
      const b = s.buf;
      s.buf = null;
      yield { ...pieces[current], bytes: b };
    }
  } catch (e) {
    failure ??= e;
    try { halt?.(); } catch { /* ignore */ }
    throw failure;
  } finally {
    if (current < state.length) { failure ??= abortError(); try { halt?.(); } catch { /* ignore */ } }
  }
}

// ---------------------------------------------------------------- URL source

const cancelBody = async (res) => { try { await res.body?.cancel(); } catch { /* ignore */ } };

class UrlSource {
  /**
   * `base`: a model folder's URL. With `gguf` (`{ url, name }`, see cache.js's ggufUrl) the
   * source is that one file instead: `name` is its only file, fetched from `url` (query
   * string kept), and every other file is absent (no request is made for it).
   */
  constructor(base, { useCache = true, fetch: f, signal, download, gguf = null } = {}) {
    this.single = gguf;
    this.gguf = gguf ? gguf.name : null;
    this.base = gguf ? gguf.url : normaliseBase(base);
    this.label = this.base;
    this.fetch = f || globalThis.fetch.bind(globalThis);
    this.useCache = useCache && typeof caches !== "undefined";
    this.dl = downloadOptions(download);
    // Every request listens to this: the caller's signal, or halt() when one part failed.
    this.ctl = new AbortController();
    if (signal?.aborted) this.ctl.abort();
    else signal?.addEventListener("abort", () => this.ctl.abort(), { once: true });
    this.signal = this.ctl.signal;
    this.meter = new Meter();
    this.exists = new Map();
    this.connected = false; // a response came from the server (network errors are then retried)
    this.retried = 0;
    this.written = []; // cache entries written by this load (deleted if the load fails)
  }
  url(name) {
    return this.single ? this.single.url : this.base + name;
  }
  /** Stop every request of this load (another part of it failed). */
  halt() {
    this.ctl.abort();
  }
  async _fetchOnce(name, init) {
    const url = this.url(name);
    let res;
    try {
      res = await this.fetch(url, { ...init, signal: this.signal });
    } catch (e) {
      if (this.signal.aborted) throw abortError();
      const err = qwenError("network", `cannot fetch ${url}: ${e.message || e}`, e);
      // Before any answer from the server (a wrong host, CORS refused) a retry will not help.
      err.transient = this.connected;
      throw err;
    }
    this.connected = true;
    try {
      checkRedirect(url, res);
    } catch (e) {
      await cancelBody(res);
      throw e;
    }
    return res;
  }
  /** One request, retried with backoff while it fails transiently. */
  async _request(name, init = {}, what = "") {
    const url = this.url(name);
    for (let fails = 0; ;) {
      let err;
      try {
        const res = await this._fetchOnce(name, init);
        if (!TRANSIENT.has(res.status)) return res;
        await cancelBody(res);
        err = qwenError("network", `${url}${what}: HTTP ${res.status} ${res.statusText}`.trim());
        err.transient = true;
        err.retryAfter = retryAfterMs(res.headers.get("Retry-After"));
      } catch (e) {
        if (!e.transient) throw e;
        err = e;
      }
      fails = await this._backoff(fails, err);
    }
  }
  async _backoff(fails, err) {
    if (fails >= this.dl.retries) {
      throw qwenError("network", `${err.message} (gave up after ${fails} ${fails === 1 ? "retry" : "retries"})`, err);
    }
    const ms = err.retryAfter ?? Math.min(30000, this.dl.retryDelayMs * 2 ** fails) * (0.5 + Math.random() / 2);
    this.retried++;
    await sleep(ms, this.signal);
    return fails + 1;
  }
  _httpError(name, res, what = "") {
    return qwenError(res.status === 404 ? missingCode(name) : "network", `${this.url(name)}${what}: HTTP ${res.status} ${res.statusText}`.trim());
  }
  async _cached(name) {
    if (!this.useCache) return null;
    const cache = await caches.open(CACHE_NAME);
    return (await cache.match(this.url(name))) || null;
  }
  async has(name) {
    if (this.single && name !== this.single.name) return false;
    if (this.exists.has(name)) return this.exists.get(name);
    if (await this._cached(name)) return true;
    const res = await this._request(name, { method: "GET", headers: { Range: "bytes=0-0" } });
    await cancelBody(res);
    const ok = res.ok;
    if (!ok && res.status !== 404 && res.status !== 403 && res.status !== 401) throw this._httpError(name, res);
    if (ok) this.meter.expect(name, res.status === 206 ? contentRange(res)?.total : decodedLength(res));
    this.exists.set(name, ok);
    return ok;
  }
  async text(name) {
    return new TextDecoder().decode(await this.bytes(name));
  }
  /** A whole small file (capped), from the cache or downloaded (again, whole, if it drops). */
  async bytes(name) {
    const cap = FILE_CAPS[name] || DEFAULT_CAP;
    const hit = await this._cached(name);
    if (hit) return await cappedBytes(hit, this.url(name), name, cap);
    for (let fails = 0; ;) {
      const res = await this._request(name);
      if (!res.ok) throw this._httpError(name, res);
      try {
        const b = await cappedBytes(res, this.url(name), name, cap);
        this.meter.expect(name, b.length);
        this.meter.add(name, b.length);
        return b;
      } catch (e) {
        if (e.code || this.signal.aborted) throw this.signal.aborted ? abortError() : e;
        const err = qwenError("network", `${this.url(name)}: the transfer broke (${e.message || e})`, e);
        err.transient = true;
        fails = await this._backoff(fails, err);
      }
    }
  }
  /** Learn the size of each named file (for the aggregate progress) before downloading any. */
  async expectSizes(names) {
    await Promise.all(names.map(async (name) => {
      if (this.meter.sizes.has(name)) return;
      const hit = await this._cached(name);
      if (hit) { this.meter.expect(name, (await hit.blob()).size); return; }
      const res = await this._request(name, { headers: { Range: "bytes=0-0" } });
      await cancelBody(res);
      if (res.status === 206) this.meter.expect(name, contentRange(res)?.total);
      else if (res.ok) this.meter.expect(name, decodedLength(res));
    }));
  }
  /**
   * The file's bytes as a stream: by Range requests (`concurrency` at once, `chunkBytes`
   * each, resumed where a transfer broke) when the server honours Range, else the one body,
   * resumed by a new request when it breaks. `size`: the file's size, NaN when unknown.
   */
  async _download(name) {
    const url = this.url(name);
    const res = await this._request(name, { headers: { Range: "bytes=0-0" } }, " bytes 0-0");
    if (res.status === 206) {
      await cancelBody(res);
      const cr = contentRange(res);
      if (!cr) throw noContentRange(url);
      if (!Number.isFinite(cr.total)) throw qwenError("network", `${url}: no size in Content-Range`);
      this.meter.expect(name, cr.total);
      const file = this._rangeFile(name, cr.total);
      const pieces = [];
      for (let a = 0; a < cr.total; a += this.dl.chunkBytes) pieces.push({ file, start: a, end: Math.min(cr.total, a + this.dl.chunkBytes) });
      const it = readPieces(pieces, { ...this.dl, halt: () => this.halt() });
      const body = new ReadableStream({
        pull: async (c) => {
          const r = await it.next();
          if (r.done) c.close();
          else c.enqueue(r.value.bytes);
        },
        cancel: async () => { await it.return(); },
      }, { highWaterMark: 0 });
      return { body, size: cr.total };
    }
    if (!res.ok) {
      await cancelBody(res);
      throw this._httpError(name, res);
    }
    const size = decodedLength(res);
    this.meter.expect(name, size);
    return { body: this._resumable(name, res), size };
  }
  /** Put one file in the cache (streamed to disk), unless it is there already. */
  async ensureCached(name, progress) {
    if (!this.useCache) return;
    const cache = await caches.open(CACHE_NAME);
    const url = this.url(name);
    const hit = await cache.match(url);
    if (hit) {
      const size = (await hit.blob()).size;
      this.meter.expect(name, size);
      this.meter.add(name, size, false); // no "download" event: nothing is downloaded
      return;
    }
    const { body, size } = await this._download(name);
    let seen = 0;
    let failure = null;
    const reader = body.getReader();
    const counted = new ReadableStream({
      pull: async (c) => {
        try {
          const { value, done } = await reader.read();
          if (done) { c.close(); return; }
          seen += value.byteLength;
          progress(seen, Number.isFinite(size) ? size : seen);
          c.enqueue(value);
        } catch (e) {
          failure = e;
          c.error(e);
        }
      },
      cancel: async (why) => { await reader.cancel(why); },
    }, { highWaterMark: 0 });
    const headers = new Headers();
    headers.set("Content-Type", "application/octet-stream");
    try {
      await cache.put(url, new Response(counted, { headers }));
      this.written.push(url);
    } catch (e) {
      await cache.delete(url);
      if (this.signal.aborted && !failure) throw abortError();
      if (failure?.code) throw failure;
      throw qwenError("network", `download of ${url} failed: ${(failure || e).message || e}`, failure || e);
    }
    const stored = await cache.match(url);
    const got = stored ? (await stored.blob()).size : -1;
    // An encoded response's Content-Length is the encoded size: then only the decoded bytes
    // count (a safetensors file's header then checks its own length).
    if (!stored || (Number.isFinite(size) && got !== size)) {
      await cache.delete(url);
      throw qwenError("network", `download of ${url} is incomplete (${got} of ${size} bytes)`);
    }
    this.meter.expect(name, got);
  }
  /** A body that, when the transfer breaks, asks again from the byte where it broke. */
  _resumable(name, first) {
    const url = this.url(name);
    let res = first;
    let reader = first.body.getReader();
    let pos = 0; // bytes delivered
    let skip = 0; // bytes of a restarted whole body still to drop
    let fails = 0;
    const encoded = !!(first.headers.get("Content-Encoding") || "").trim() && first.headers.get("Content-Encoding").trim().toLowerCase() !== "identity";
    const reopen = async () => {
      const r = await this._request(name, { headers: { Range: `bytes=${pos}-` } }, ` bytes ${pos}-`);
      if (r.status === 206) {
        const cr = contentRange(r);
        const enc = (r.headers.get("Content-Encoding") || "identity").trim().toLowerCase();
        if (!cr || cr.start !== pos || encoded || enc !== "identity") {
          await cancelBody(r);
          throw qwenError("network", `${url}: cannot resume the transfer at byte ${pos} (the server answered ${r.headers.get("Content-Range") || "without Content-Range"})`);
        }
        skip = 0;
      } else if (r.ok) {
        skip = pos; // the whole file again: drop what was delivered
      } else {
        await cancelBody(r);
        throw this._httpError(name, r);
      }
      res = r;
      reader = r.body.getReader();
    };
    return new ReadableStream({
      pull: async (c) => {
        for (;;) {
          let value, done;
          try {
            ({ value, done } = await reader.read());
          } catch (e) {
            if (this.signal.aborted) throw abortError();
            const err = qwenError("network", `${url}: the transfer broke at byte ${pos} (${e.message || e})`, e);
            err.transient = true;
            fails = await this._backoff(fails, err);
            await reopen();
            continue;
          }
          if (done) { c.close(); return; }
          fails = 0;
          if (skip) {
            const n = Math.min(skip, value.byteLength);
            skip -= n;
            value = value.subarray(n);
            if (!value.byteLength) continue;
          }
          pos += value.byteLength;
          this.meter.add(name, value.byteLength);
          c.enqueue(value);
          return;
        }
      },
      cancel: async () => { try { await reader.cancel(); } catch { /* ignore */ } void res; },
    }, { highWaterMark: 0 });
  }
  /**
   * A file read by Range requests: `readInto(start, end, dest, at)` resumes a broken transfer
   * from the byte where it broke; a server that answers a later range with the whole file
   * (200) is then read from that one body, in order (a file is never downloaded twice).
   */
  _rangeFile(name, total, head = null) {
    const url = this.url(name);
    const src = this;
    let streamed = null;
    let chain = Promise.resolve();
    const file = {
      size: total,
      rangeOk: false,
      busy: 0,
      readInto: async (start, end, dest, at) => {
        if (end > total) throw qwenError("weights_corrupt", `${url}: file is ${total} bytes, need ${end} (truncated?)`);
        if (head && end <= head.length) { dest.set(head.subarray(start, end), at); return; }
        if (!streamed) {
          const r = await src._rangeInto(name, file, start, end, dest, at);
          if (!r) return;
          streamed = streamFile(src._resumable(name, r.whole), total, url);
          start += r.got;
          at += r.got;
        }
        const job = chain.then(() => streamed.read(start, end));
        chain = job.catch(() => {});
        dest.set(await job, at);
      },
      read: async (start, end) => {
        const b = new Uint8Array(end - start);
        await file.readInto(start, end, b, 0);
        return b;
      },
      cancel: async () => { await streamed?.cancel(); },
    };
    return file;
  }
  /** Bytes [start, end) into dest at `at`; `{whole, got}` when the server sent the whole file. */
  async _rangeInto(name, file, start, end, dest, at) {
    const url = this.url(name);
    const want = end - start;
    let got = 0;
    for (let fails = 0; got < want;) {
      const from = start + got;
      const what = ` bytes ${from}-${end - 1}`;
      // No HTTP cache: Chromium's cache lets one request per URL run at a time (its cache
      // lock), which would serialise the parallel ranges; the Cache API is our cache.
      const r = await this._request(name, { headers: { Range: `bytes=${from}-${end - 1}` }, cache: "no-store" }, what);
      if (r.status === 200) return { whole: r, got };
      if (r.status !== 206) {
        await cancelBody(r);
        throw r.status === 416 ? qwenError("weights_corrupt", `${url}${what}: HTTP 416 (truncated file?)`) : this._httpError(name, r, what);
      }
      const cr = contentRange(r);
      if (!cr) { await cancelBody(r); throw noContentRange(url); }
      if (cr.start !== from) {
        await cancelBody(r);
        throw qwenError("network", `${url}${what}: the server sent bytes ${cr.start}-${cr.end - 1}`);
      }
      if (cr.end < end) {
        await cancelBody(r);
        throw qwenError("weights_corrupt", `${url}: got ${cr.end - start} bytes for a ${want}-byte range (truncated file?)`);
      }
      if (from > 0) file.rangeOk = true;
      const before = got;
      try {
        const reader = r.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const n = Math.min(value.byteLength, want - got);
          dest.set(n === value.byteLength ? value : value.subarray(0, n), at + got);
          got += n;
          this.meter.add(name, n);
          if (n < value.byteLength) { await reader.cancel(); break; } // more than asked for
        }
        if (got < want) throw new Error(`the body ended early`);
      } catch (e) {
        if (this.signal.aborted) throw abortError();
        if (got > before) fails = 0;
        const err = qwenError("network", `${url}${what}: the transfer broke after ${got - before} bytes (${e.message || e})`, e);
        err.transient = true;
        fails = await this._backoff(fails, err);
      }
    }
    return null;
  }
  async open(name) {
    const hit = await this._cached(name);
    if (hit) return blobFile(await hit.blob(), this.url(name));
    // Range requests: one per tensor (or per chunk of one). If the server ignores Range,
    // stream the body instead.
    const url = this.url(name);
    const res = await this._request(name, { headers: { Range: "bytes=0-7" } }, " bytes 0-7");
    if (res.status === 206) {
      const cr = contentRange(res);
      if (!cr) { await cancelBody(res); throw noContentRange(url); }
      if (!Number.isFinite(cr.total)) { await cancelBody(res); throw qwenError("network", `${url}: no size in Content-Range`); }
      this.meter.expect(name, cr.total);
      let head = null;
      try {
        const b = new Uint8Array(await res.arrayBuffer());
        if (cr.start === 0 && b.length === cr.end) { head = b; this.meter.add(name, b.length); }
      } catch (e) {
        if (this.signal.aborted) throw abortError();
        // A broken probe: the first read asks again.
      }
      return this._rangeFile(name, cr.total, head);
    }
    if (!res.ok) {
      await cancelBody(res);
      throw this._httpError(name, res);
    }
    const size = decodedLength(res);
    this.meter.expect(name, size);
    return streamFile(this._resumable(name, res), size, url);
  }
  async discardWritten() {
    if (!this.written.length) return;
    const cache = await caches.open(CACHE_NAME);
    await Promise.all(this.written.map((u) => cache.delete(u)));
    this.written = [];
  }
}

/** Reads of increasing offsets from a streamed body; earlier bytes are dropped. */
export function streamFile(body, size, label) {
  const reader = body.getReader();
  const chunks = []; // received, not yet consumed; chunks[0] starts at file offset `pos`
  let have = 0; // bytes in `chunks`
  let pos = 0;
  let done = false;
  /** Drop whole chunks that end before `start`. */
  const drop = (start) => {
    while (chunks.length && pos + chunks[0].length <= start) {
      pos += chunks[0].length;
      have -= chunks[0].length;
      chunks.shift();
    }
  };
  /** Receive until `end` is in (or the body ends), dropping what ends before `start`. */
  const fill = async (start, end) => {
    drop(start);
    while (pos + have < end && !done) {
      const { value, done: d } = await reader.read();
      if (d) { done = true; break; }
      chunks.push(value);
      have += value.length;
      drop(start);
    }
  };
  /** Copy [start, end) (received) out once; keep the rest of the last chunk used. */
  const take = (start, end) => {
    const out = new Uint8Array(end - start);
    let at = 0;
    let off = start - pos; // offset into chunks[0]
    while (at < out.length) {
      const c = chunks[0];
      const n = Math.min(c.length - off, out.length - at);
      out.set(c.subarray(off, off + n), at);
      at += n;
      if (off + n === c.length) {
        chunks.shift();
        pos += c.length;
        have -= c.length;
        off = 0;
      } else {
        chunks[0] = c.subarray(off + n);
        pos += off + n;
        have -= off + n;
        off = 0;
      }
    }
    return out;
  };
  const inOrder = (start) => {
    if (start < pos) throw qwenError("weights_corrupt", `${label}: out-of-order read in a streamed file`);
  };
  return {
    size,
    streamed: true,
    /** Stop the download (the file is not read further). */
    cancel: async () => {
      done = true;
      await reader.cancel();
    },
    read: async (start, end) => {
      inOrder(start);
      await fill(start, end);
      if (pos + have < end) {
        throw qwenError("weights_corrupt", `${label}: file ends at ${pos + have} bytes, expected at least ${end} (truncated?)`);
      }
      return take(start, end);
    },
    /** `read`, except that a body ending before `end` gives the bytes it had (a file of unknown size). */
    readUpTo: async (start, end) => {
      inOrder(start);
      await fill(start, end);
      return take(start, Math.max(start, Math.min(end, pos + have)));
    },
  };
}

function blobFile(blob, label, onRead) {
  return {
    size: blob.size,
    read: async (start, end) => {
      if (end > blob.size) throw qwenError("weights_corrupt", `${label}: file is ${blob.size} bytes, need ${end} (truncated?)`);
      const b = new Uint8Array(await blob.slice(start, end).arrayBuffer());
      onRead?.(b.length);
      return b;
    },
  };
}

// ---------------------------------------------------------------- local sources

class MapSource {
  /**
   * `files`: name → Blob | ArrayBuffer | TypedArray | string. Files without config.json but
   * with one `.gguf` are that GGUF model (`gguf`: its name); with several, a RequestError
   * asks for one.
   */
  constructor(files, label) {
    this.files = files;
    this.label = label;
    this.meter = new Meter();
    const ggufs = files.has("config.json") ? [] : [...files.keys()].filter(isGgufName);
    if (ggufs.length > 1) {
      throw qwenError("request_invalid", `model: ${ggufs.length} GGUF files given (${ggufs.slice(0, 4).join(", ")}${ggufs.length > 4 ? ", ..." : ""}): pass one`);
    }
    this.gguf = ggufs[0] ?? null;
    if (this.gguf && label === "files") this.label = this.gguf;
  }
  async _blob(name) {
    const f = this.files.get(name);
    if (f === undefined) {
      throw qwenError(missingCode(name), `${this.label}: no ${name}`);
    }
    let b = null;
    if (f instanceof Blob) b = f;
    else if (typeof f === "string") b = new Blob([f]);
    else if (f instanceof ArrayBuffer || ArrayBuffer.isView(f)) b = new Blob([f]);
    else if (f && typeof f.getFile === "function") b = await f.getFile(); // FileSystemFileHandle
    if (b) { this.meter.expect(name, b.size); return b; }
    throw qwenError("request_invalid", `${this.label}: ${name} is not a File, Blob, ArrayBuffer or string`);
  }
  async has(name) {
    return this.files.has(name);
  }
  async _capped(name) {
    const b = await this._blob(name);
    const cap = FILE_CAPS[name] || DEFAULT_CAP;
    if (b.size > cap) throw tooBig(this.label, name, cap);
    return b;
  }
  async text(name) {
    return new TextDecoder().decode(await this.bytes(name));
  }
  async bytes(name) {
    const b = new Uint8Array(await (await this._capped(name)).arrayBuffer());
    this.meter.add(name, b.length);
    return b;
  }
  async open(name) {
    return blobFile(await this._blob(name), `${this.label}/${name}`, (n) => this.meter.add(name, n));
  }
  async ensureCached() {}
  async discardWritten() {}
}

async function dirSource(handle) {
  const files = new Map();
  for await (const [name, h] of handle.entries()) {
    if (h.kind === "file") files.set(name, h);
  }
  return new MapSource(files, handle.name || "directory");
}

/**
 * Any supported `model` value → a source. A URL whose path ends in `.gguf`, a `File` (or a
 * list, a directory or a `{name: data}` object without config.json) named `*.gguf` is a GGUF
 * model: the source's `gguf` is then that file's name (null for a model folder).
 */
export async function openSource(model, opts = {}) {
  downloadOptions(opts.download); // checked for every source (a RequestError naming the field)
  if (typeof model === "string" || model instanceof URL) {
    const gguf = ggufUrl(model);
    return new UrlSource(String(model), gguf ? { ...opts, gguf } : opts);
  }
  if (model instanceof Blob) {
    if (!model.name) throw qwenError("request_invalid", "model: a single Blob needs a name (a File named *.gguf)");
    return new MapSource(new Map([[model.name, model]]), "files");
  }
  if (model && typeof model === "object") {
    if (typeof model.entries === "function" && model.kind === "directory") return await dirSource(model);
    const list = typeof FileList !== "undefined" && model instanceof FileList ? Array.from(model) : model;
    if (Array.isArray(list)) {
      const files = new Map();
      for (const f of list) {
        if (!(f instanceof Blob) || !f.name) throw qwenError("request_invalid", "model: a list must hold File objects");
        files.set(f.name, f);
      }
      return new MapSource(files, "files");
    }
    if (model instanceof Map) return new MapSource(model, "files");
    return new MapSource(new Map(Object.entries(model)), "files");
  }
  throw qwenError("request_invalid", "model must be a base URL, a .gguf file's URL, a list of Files (or a .gguf File), a directory handle or a {name: data} object");
}
