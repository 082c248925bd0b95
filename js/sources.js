// Where model files come from: a base URL (Hugging Face `resolve/main/` layout), `File`s or a
// picked directory, or in-memory buffers. Every source answers the same questions:
//   has(name), text(name), bytes(name), open(name) -> { size, read(start, end) }.
// `read` returns one tensor's bytes; nothing here ever holds a whole checkpoint.
// Downloads can go through the Cache API (one full response per file, written while it
// streams, read back by slices); a failed or partial download is never left in the cache.

import { qwenError } from "./errors.js";
import { CACHE_NAME, normaliseBase } from "./cache.js";

function abortError() {
  return qwenError("aborted", "the load was aborted");
}

/** The files a model needs, as far as any source knows them. */
export const MODEL_FILES = [
  "config.json",
  "generation_config.json",
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

// ---------------------------------------------------------------- URL source

class UrlSource {
  constructor(base, { useCache = true, fetch: f, signal, onDownload } = {}) {
    this.base = normaliseBase(base);
    this.label = this.base;
    this.fetch = f || globalThis.fetch.bind(globalThis);
    this.useCache = useCache && typeof caches !== "undefined";
    this.signal = signal;
    this.onDownload = onDownload || (() => {});
    this.exists = new Map();
    this.written = []; // cache entries written by this load (deleted if the load fails)
  }
  url(name) {
    return this.base + name;
  }
  async _get(name, init = {}) {
    let res;
    try {
      res = await this.fetch(this.url(name), { ...init, signal: this.signal });
    } catch (e) {
      if (this.signal?.aborted) throw abortError();
      throw qwenError("network", `cannot fetch ${this.url(name)}: ${e.message || e}`, e);
    }
    return res;
  }
  async _cached(name) {
    if (!this.useCache) return null;
    const cache = await caches.open(CACHE_NAME);
    return (await cache.match(this.url(name))) || null;
  }
  async has(name) {
    if (this.exists.has(name)) return this.exists.get(name);
    if (await this._cached(name)) return true;
    const res = await this._get(name, { method: "GET", headers: { Range: "bytes=0-0" } });
    try { await res.body?.cancel(); } catch { /* ignore */ }
    const ok = res.ok;
    if (!ok && res.status !== 404 && res.status !== 403 && res.status !== 401) {
      throw qwenError("network", `${this.url(name)}: HTTP ${res.status} ${res.statusText}`);
    }
    this.exists.set(name, ok);
    return ok;
  }
  async _whole(name) {
    const hit = await this._cached(name);
    if (hit) return hit;
    const res = await this._get(name);
    if (!res.ok) {
      throw qwenError(
        res.status === 404 ? missingCode(name) : "network",
        `${this.url(name)}: HTTP ${res.status} ${res.statusText}`.trim(),
      );
    }
    return res;
  }
  async text(name) {
    return new TextDecoder().decode(await this.bytes(name));
  }
  async bytes(name) {
    return await cappedBytes(await this._whole(name), this.url(name), name, FILE_CAPS[name] || DEFAULT_CAP);
  }
  /** Put one file in the cache (streamed to disk), unless it is there already. */
  async ensureCached(name, progress) {
    if (!this.useCache) return;
    const cache = await caches.open(CACHE_NAME);
    const url = this.url(name);
    if (await cache.match(url)) return;
    const res = await this._get(name);
    if (!res.ok) throw qwenError("network", `${url}: HTTP ${res.status} ${res.statusText}`.trim());
    const expected = Number(res.headers.get("Content-Length") || 0);
    let seen = 0;
    const counted = res.body.pipeThrough(
      new TransformStream({
        transform: (chunk, ctl) => {
          seen += chunk.byteLength;
          progress(seen, expected);
          ctl.enqueue(chunk);
        },
      }),
    );
    const headers = new Headers();
    headers.set("Content-Type", "application/octet-stream");
    try {
      await cache.put(url, new Response(counted, { headers }));
      this.written.push(url);
    } catch (e) {
      await cache.delete(url);
      if (this.signal?.aborted) throw abortError();
      throw qwenError("network", `download of ${url} failed: ${e.message || e}`, e);
    }
    const stored = await cache.match(url);
    const size = stored ? (await stored.blob()).size : -1;
    if (!stored || (expected && size !== expected)) {
      await cache.delete(url);
      throw qwenError("network", `download of ${url} is incomplete (${size} of ${expected} bytes)`);
    }
  }
  async open(name) {
    const hit = await this._cached(name);
    if (hit) return blobFile(await hit.blob(), this.url(name));
    // Range requests: one per tensor. If the server ignores Range, stream the body instead.
    const res = await this._get(name, { headers: { Range: "bytes=0-7" } });
    if (res.status === 206) {
      const head = new Uint8Array(await res.arrayBuffer());
      const total = Number((res.headers.get("Content-Range") || "").split("/")[1]);
      if (!Number.isFinite(total)) throw qwenError("network", `${this.url(name)}: no size in Content-Range`);
      // A server may honour the first Range and answer a later one with the whole file (200):
      // then that body is streamed for this and every later read of the file, so the file is
      // downloaded once, never once per tensor.
      let streamed = null;
      return {
        size: total,
        read: async (start, end) => {
          if (start === 0 && end <= head.length) return head.slice(0, end);
          if (streamed) return await streamed.read(start, end);
          const r = await this._get(name, { headers: { Range: `bytes=${start}-${end - 1}` } });
          if (r.status === 200) {
            streamed = streamFile(r.body, total, this.url(name));
            return await streamed.read(start, end);
          }
          if (r.status !== 206) {
            try { await r.body?.cancel(); } catch { /* ignore */ }
            throw qwenError("network", `${this.url(name)} bytes ${start}-${end - 1}: HTTP ${r.status}`);
          }
          const b = new Uint8Array(await r.arrayBuffer());
          if (b.length !== end - start) {
            throw qwenError("weights_corrupt", `${this.url(name)}: got ${b.length} bytes for a ${end - start}-byte range (truncated file?)`);
          }
          return b;
        },
        cancel: async () => { await streamed?.cancel(); },
      };
    }
    if (!res.ok) {
      throw qwenError(res.status === 404 ? missingCode(name) : "network", `${this.url(name)}: HTTP ${res.status} ${res.statusText}`.trim());
    }
    const size = Number(res.headers.get("Content-Length"));
    return streamFile(res.body, Number.isFinite(size) && size > 0 ? size : NaN, this.url(name));
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
  let chunks = []; // received, not yet consumed; chunks[0] starts at file offset `pos`
  let have = 0; // bytes in `chunks`
  let pos = 0;
  let done = false;
  return {
    size,
    streamed: true,
    /** Stop the download (the file is not read further). */
    cancel: async () => {
      done = true;
      await reader.cancel();
    },
    read: async (start, end) => {
      if (start < pos) throw qwenError("weights_corrupt", `${label}: out-of-order read in a streamed file`);
      while (pos + have < end && !done) {
        const { value, done: d } = await reader.read();
        if (d) { done = true; break; }
        chunks.push(value);
        have += value.length;
        // Drop whole chunks that end before `start` as they arrive.
        while (chunks.length && pos + chunks[0].length <= start) {
          pos += chunks[0].length;
          have -= chunks[0].length;
          chunks.shift();
        }
      }
      if (pos + have < end) {
        throw qwenError("weights_corrupt", `${label}: file ends at ${pos + have} bytes, expected at least ${end} (truncated?)`);
      }
      // Copy [start, end) out once; keep the rest of the last chunk used.
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
        }
      }
      return out;
    },
  };
}

function blobFile(blob, label) {
  return {
    size: blob.size,
    read: async (start, end) => {
      if (end > blob.size) throw qwenError("weights_corrupt", `${label}: file is ${blob.size} bytes, need ${end} (truncated?)`);
      return new Uint8Array(await blob.slice(start, end).arrayBuffer());
    },
  };
}

// ---------------------------------------------------------------- local sources

class MapSource {
  /** `files`: name → Blob | ArrayBuffer | TypedArray | string. */
  constructor(files, label) {
    this.files = files;
    this.label = label;
  }
  async _blob(name) {
    const f = this.files.get(name);
    if (f === undefined) {
      throw qwenError(missingCode(name), `${this.label}: no ${name}`);
    }
    if (f instanceof Blob) return f;
    if (typeof f === "string") return new Blob([f]);
    if (f instanceof ArrayBuffer || ArrayBuffer.isView(f)) return new Blob([f]);
    if (f && typeof f.getFile === "function") return await f.getFile(); // FileSystemFileHandle
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
    return await (await this._capped(name)).text();
  }
  async bytes(name) {
    return new Uint8Array(await (await this._capped(name)).arrayBuffer());
  }
  async open(name) {
    return blobFile(await this._blob(name), `${this.label}/${name}`);
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

/** Any supported `model` value → a source. */
export async function openSource(model, opts = {}) {
  if (typeof model === "string" || model instanceof URL) return new UrlSource(String(model), opts);
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
  throw qwenError("request_invalid", "model must be a base URL, a list of Files, a directory handle or a {name: data} object");
}
