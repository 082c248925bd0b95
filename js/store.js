// The model store: after a load from a URL, what the GPU holds (quantized words and scales,
// f16 matrices, f32 norms and biases) is read back and written to the origin private file
// system (OPFS) as a pre-quantized checkpoint folder (the format `qwen-webgpu quantize`
// writes), with config.json, generation_config.json and the tokenizer file, and
// manifest.json last. A reload reads that folder through the ordinary pre-quantized loader:
// about the quantized bytes, no network request, no quantization.
//
// Why OPFS and not the Cache API: a 1-2 GB file is written piece by piece at known offsets
// (the Cache API takes a whole Response body, and a failed put leaves nothing only for that
// one response), a `File` from OPFS is read by ranges with `slice()` without loading it, the
// store is one folder per model that is removed as one, and workers write it too. Both
// count against the same origin quota.
//
// Keys: the folder name is the base URL's hash, the `weights` asked for and the store version
// (layout + encoder, see cache.js); the manifest names the URL, the revision (a commit in the
// URL, else the ETags the server gave), the format and each file's size. An entry without a
// manifest, or whose files disagree with it, is incomplete: never read, removed on the next
// write or by deleteModelCache.

import { qwenError } from "./errors.js";
import { FILE_CAPS } from "./sources.js";
import { STORE_VERSION, storeRoot, urlKey, entryName, deleteStored, completeEntry, normaliseBase } from "./cache.js";

/** Largest block of rows read back from the GPU and written at once. */
export const PIECE_BYTES = 8 << 20;
/** Room kept free besides the model when checking the quota. */
const QUOTA_MARGIN = 16 << 20;

const now = () => (typeof performance !== "undefined" ? performance.now() : Date.now());

/** Whether this context can keep models in the store (OPFS, a secure context, hashing). */
export function storeAvailable() {
  return typeof navigator !== "undefined" && !!navigator.storage?.getDirectory && typeof crypto !== "undefined" && !!crypto.subtle;
}

// ---------------------------------------------------------------- reading an entry

/**
 * A model source (sources.js's interface: has, text, bytes, open) over a complete store
 * entry. Counts the bytes it reads (`bytesRead`).
 */
export class StoreSource {
  constructor(entry, label) {
    this.entry = entry;
    this.label = label;
    this.files = new Map();
    this.bytesRead = 0;
    this.useCache = false;
  }
  async _file(name) {
    if (!Object.hasOwn(this.entry.manifest.files, name)) {
      throw qwenError(name === "config.json" ? "config_missing" : "weights_missing", `${this.label}: the stored model has no ${name}`);
    }
    if (!this.files.has(name)) this.files.set(name, await (await this.entry.dir.getFileHandle(name)).getFile());
    return this.files.get(name);
  }
  async has(name) {
    return Object.hasOwn(this.entry.manifest.files, name);
  }
  async bytes(name) {
    const f = await this._file(name);
    const cap = FILE_CAPS[name] || 64 << 20;
    if (f.size > cap) throw qwenError("weights_corrupt", `${this.label}: stored ${name} is larger than its limit`);
    const b = new Uint8Array(await f.arrayBuffer());
    this.bytesRead += b.length;
    return b;
  }
  async text(name) {
    return new TextDecoder().decode(await this.bytes(name));
  }
  async open(name) {
    const f = await this._file(name);
    const label = `${this.label}${name}`;
    return {
      size: f.size,
      read: async (start, end) => {
        if (end > f.size) throw qwenError("weights_corrupt", `${label}: file is ${f.size} bytes, need ${end} (truncated?)`);
        const b = new Uint8Array(await f.slice(start, end).arrayBuffer());
        this.bytesRead += b.length;
        return b;
      },
    };
  }
  async ensureCached() {}
  async discardWritten() {}
}

/** The stored entry of `base` for `weights` as a source, or null. */
export { findStored } from "./cache.js";

/** Remove one entry (a damaged one: the next load downloads again). */
export async function removeEntry(entry) {
  const root = await storeRoot();
  if (root) await root.removeEntry(entry.name, { recursive: true });
}

// ---------------------------------------------------------------- writing an entry

/** A commit named in the URL (`/resolve/<sha>/`), else null. */
export function commitOf(base) {
  const m = /\/resolve\/([0-9a-f]{40})\//i.exec(base);
  return m ? m[1].toLowerCase() : null;
}

/**
 * The revision of the files at `base`: the commit in the URL, else each file's ETag (or
 * Last-Modified) from a HEAD request; null where the server gives neither.
 */
export async function revisionOf(base, names, fetchFn, signal) {
  const commit = commitOf(base);
  if (commit) return { commit };
  const tags = {};
  for (const n of names) {
    try {
      const r = await fetchFn(base + n, { method: "HEAD", signal });
      tags[n] = r.ok ? r.headers.get("ETag") || r.headers.get("Last-Modified") || null : null;
    } catch {
      tags[n] = null;
    }
  }
  return Object.values(tags).some((t) => t) ? { etags: tags } : null;
}

/** A writer of one OPFS file at given offsets: createWritable (swap file, committed on close), else a sync access handle (workers). */
async function openWriter(handle) {
  if (typeof handle.createWritable === "function") {
    const w = await handle.createWritable({ keepExistingData: false });
    return {
      write: (position, data) => w.write({ type: "write", position, data }),
      close: () => w.close(),
      abort: () => w.abort(),
    };
  }
  if (typeof handle.createSyncAccessHandle === "function") {
    const h = await handle.createSyncAccessHandle();
    return {
      write: async (at, data) => {
        const n = h.write(data, { at });
        if (n !== data.byteLength) throw new DOMException(`wrote ${n} of ${data.byteLength} bytes`, "QuotaExceededError");
      },
      close: async () => { h.flush(); h.close(); },
      abort: async () => { h.close(); },
    };
  }
  throw new Error("this browser cannot write files in the origin private file system");
}

/** A write failure the test hook makes (as the browser's QuotaExceededError looks). */
const fakeQuotaError = (n) => new DOMException(`test: the fake quota of ${n} bytes is used up`, "QuotaExceededError");

/**
 * Store what the GPU of `engine` (a wasm Engine) holds, with the small files, as the entry of
 * `base` + `weights`. Never throws for a storage problem: resolves to `{ stored: true, ... }`
 * or `{ stored: false, code, text }` (`cache_quota`: it would not fit; `cache_write`: a write
 * failed, and the partial entry was removed). Throws only `aborted` (after removing the
 * partial entry).
 *
 * `files`: {name: string | Uint8Array} (config.json, generation_config.json, tokenizer).
 * `test`: `{ quotaBytes, failAfterBytes }`, TEST ONLY (a fake free space; a fake
 * QuotaExceededError once that many bytes of the weights are written).
 */
export async function writeStore({ engine, base, weights, files, revision, source, signal, onProgress, test = {} }) {
  const t0 = now();
  base = normaliseBase(base);
  const plan = engine.export_plan(PIECE_BYTES);
  if (plan.version !== STORE_VERSION) {
    return { stored: false, code: "cache_version", text: `not stored: the engine's store version ${plan.version} is not the package's ${STORE_VERSION}` };
  }
  const small = Object.entries(files).filter(([, v]) => v !== null && v !== undefined)
    .map(([name, v]) => [name, typeof v === "string" ? new TextEncoder().encode(v) : v]);
  const total = plan.file_bytes + small.reduce((s, [, b]) => s + b.byteLength, 0);

  // The quota first: an entry that does not fit is not started.
  let free = Infinity;
  try {
    const { quota, usage } = await navigator.storage.estimate();
    if (Number.isFinite(quota)) free = quota - (usage || 0);
  } catch { /* unknown: try, a failed write cleans up */ }
  if (Number.isFinite(test.quotaBytes)) free = test.quotaBytes;
  if (total + QUOTA_MARGIN > free) {
    return { stored: false, code: "cache_quota", bytes: total,
      text: `not kept in the browser: the model needs ${total} bytes, ${Math.max(0, Math.floor(free))} are free in this origin's storage quota` };
  }
  // Ask that the store is not evicted under storage pressure (a page may be asked; a
  // worker has no persist(), only persisted()).
  let persisted = null;
  try {
    persisted = navigator.storage.persist ? await navigator.storage.persist() : await navigator.storage.persisted?.();
  } catch { /* not granted */ }

  const root = await storeRoot(true);
  if (!root) return { stored: false, code: "cache_write", text: "not kept in the browser: no origin private file system here" };
  const key = await urlKey(base);
  const name = entryName(key, weights);
  // This entry anew, and the entries of this model made by another store version (copies in
  // other formats of this version stay).
  await deleteStored(base, (n) => n !== name && n.endsWith(`-v${STORE_VERSION}`));

  let writer = null;
  let dir = null;
  try {
    dir = await root.getDirectoryHandle(name, { create: true });
    writer = await openWriter(await dir.getFileHandle("model.safetensors", { create: true }));
    let written = 0;
    const put = async (at, bytes) => {
      if (Number.isFinite(test.failAfterBytes) && written + bytes.byteLength > test.failAfterBytes) throw fakeQuotaError(test.failAfterBytes);
      await writer.write(at, bytes);
      written += bytes.byteLength;
    };
    await put(0, engine.export_header());
    let readS = 0;
    for (const p of plan.pieces) {
      if (signal?.aborted) throw qwenError("aborted", "the load was aborted");
      const t = now();
      const bytes = await engine.export_read(p.name, p.row0, p.rows);
      readS += (now() - t) / 1000;
      if (bytes.byteLength !== p.bytes) throw new Error(`${p.name}: read ${bytes.byteLength} bytes, planned ${p.bytes}`);
      await put(p.start, bytes);
      onProgress?.(written, plan.file_bytes, p.name);
    }
    await writer.close();
    writer = null;
    const sizes = { "model.safetensors": plan.file_bytes };
    for (const [n, b] of small) {
      const w = await openWriter(await dir.getFileHandle(n, { create: true }));
      try { await w.write(0, b); await w.close(); } catch (e) { try { await w.abort(); } catch { /* gone */ } throw e; }
      sizes[n] = b.byteLength;
    }
    // The manifest last: an entry without one is never taken for a complete one.
    const manifest = {
      kind: "qwen-webgpu-store", version: STORE_VERSION, url: base, requested: weights, weights: plan.format,
      revision, source, files: sizes, tensors: plan.tensors.length, created: new Date().toISOString(),
    };
    const mw = await openWriter(await dir.getFileHandle("manifest.json", { create: true }));
    await mw.write(0, new TextEncoder().encode(JSON.stringify(manifest, null, 1)));
    await mw.close();
    if (!(await completeEntry(root, name, base))) throw new Error("the entry does not read back as written");
    return { stored: true, name, bytes: total, fileBytes: plan.file_bytes, format: plan.format, gpuReadS: readS, seconds: (now() - t0) / 1000, persisted };
  } catch (e) {
    if (writer) { try { await writer.abort(); } catch { /* already closed */ } }
    try { await root.removeEntry(name, { recursive: true }); } catch { /* never created */ }
    if (e?.code === "aborted" || signal?.aborted) throw qwenError("aborted", "the load was aborted");
    const quota = e?.name === "QuotaExceededError";
    return { stored: false, code: quota ? "cache_quota" : "cache_write", bytes: total,
      text: `not kept in the browser: ${quota ? "the storage quota ran out while writing" : "a write failed"} (${e?.message || e}); nothing was left behind` };
  }
}
