// What the main thread needs of the browser's model storage (is a model kept, delete it):
// - the model store (store.js writes it, where the engine runs): what the GPU held after a
//   load, kept in the origin private file system (OPFS) as a pre-quantized checkpoint folder;
// - the Cache API: raw downloads, kept when the store is off (sources.js writes them).
// Small on purpose: the page's thread loads it.

export const CACHE_NAME = "qwen-webgpu-v1";

/** The OPFS folder that holds the store's entries (one folder per model, format and version). */
export const STORE_DIR = "qwen-webgpu-store";

/**
 * The store's version, `"layout.encoder"`: quant.rs FORMAT_VERSION and the GPU encoder's
 * version (src/model/export.rs, `store_version()` in wasm; the engine refuses to store when
 * they differ). Entries of another version are never read, and are removed when their model
 * is stored again.
 */
export const STORE_VERSION = "1.1";

/** Whether a file name (or a URL's path) names a GGUF file. */
export const isGgufName = (name) => typeof name === "string" && /\.gguf$/i.test(name);

/**
 * A model URL that names a GGUF file (its path ends in `.gguf`; a query string is fine):
 * `{ url, name }` (the absolute URL, the file's name), else null (a model folder's URL).
 */
export function ggufUrl(model) {
  let u;
  try {
    u = new URL(String(model), typeof location !== "undefined" ? location.href : undefined);
  } catch {
    return null;
  }
  if (!isGgufName(u.pathname)) return null;
  let name = u.pathname.slice(u.pathname.lastIndexOf("/") + 1);
  try { name = decodeURIComponent(name); } catch { /* keep it as written */ }
  return { url: u.href, name };
}

/** A model base URL, absolute and ending in "/". */
export function normaliseBase(url) {
  let s = String(url);
  if (typeof location !== "undefined") s = new URL(s, location.href).href;
  return s.endsWith("/") ? s : s + "/";
}

/** The `weights` option as the store keys it: "auto" (omitted), "f16", "q8" or "q4". */
export function storeWeights(weights) {
  return weights === undefined || weights === null || weights === "" ? "auto" : String(weights);
}

/** The OPFS root of the store, or null where the browser has none (no OPFS, not a secure context). */
export async function storeRoot(create = false) {
  try {
    if (typeof navigator === "undefined" || !navigator.storage?.getDirectory) return null;
    const root = await navigator.storage.getDirectory();
    return await root.getDirectoryHandle(STORE_DIR, { create });
  } catch {
    return null;
  }
}

/** Hex SHA-256 of a model's base URL (its entries' folder names start with it). */
export async function urlKey(base) {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(base));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("").slice(0, 32);
}

/** An entry's folder name: the URL's hash, the `weights` asked for, the store version. */
export const entryName = (key, weights, version = STORE_VERSION) => `${key}-${storeWeights(weights)}-v${version}`;

/**
 * The entry in `root` named `name`, if it is complete: its manifest.json (written last) names
 * this model, and every file it lists is there with its size. Else null.
 */
export async function completeEntry(root, name, base) {
  let dir;
  try { dir = await root.getDirectoryHandle(name); } catch { return null; }
  try {
    const manifest = JSON.parse(await (await (await dir.getFileHandle("manifest.json")).getFile()).text());
    if (manifest?.kind !== "qwen-webgpu-store" || manifest.url !== base || manifest.version !== STORE_VERSION) return null;
    const files = manifest.files && typeof manifest.files === "object" ? Object.entries(manifest.files) : [];
    if (!files.some(([n]) => n === "model.safetensors") || !files.some(([n]) => n === "config.json")) return null;
    for (const [file, size] of files) {
      if ((await (await dir.getFileHandle(file)).getFile()).size !== size) return null;
    }
    return { name, dir, manifest };
  } catch {
    return null;
  }
}

/**
 * The complete stored entry of the model at `url` for `weights` ("auto"/omitted: one stored
 * with `weights` omitted; a format: one stored as that format, asked for or resolved from
 * auto), or null.
 */
export async function findStored(url, weights) {
  const root = await storeRoot();
  if (!root) return null;
  const base = normaliseBase(url);
  const key = await urlKey(base);
  const w = storeWeights(weights);
  const hit = await completeEntry(root, entryName(key, w), base);
  if (hit || w === "auto") return hit;
  const auto = await completeEntry(root, entryName(key, "auto"), base);
  return auto && auto.manifest.weights === w ? auto : null;
}

/** Names of every store folder of the model at `url` (any format, version, complete or not). */
async function storeFolders(root, base) {
  const prefix = `${await urlKey(base)}-`;
  const names = [];
  for await (const [name, h] of root.entries()) if (h.kind === "directory" && name.startsWith(prefix)) names.push(name);
  return names;
}

/** Files in a store folder (what deleting it removes). */
async function countFiles(dir) {
  let n = 0;
  for await (const [, h] of dir.entries()) n += h.kind === "file" ? 1 : await countFiles(h);
  return n;
}

/** Remove store folders of the model at `url` (all of them, or those `keep` refuses); returns the files removed. */
export async function deleteStored(url, keep = () => false) {
  const root = await storeRoot();
  if (!root) return 0;
  let n = 0;
  for (const name of await storeFolders(root, normaliseBase(url))) {
    if (keep(name)) continue;
    try { n += await countFiles(await root.getDirectoryHandle(name)); } catch { /* counted as 0 */ }
    await root.removeEntry(name, { recursive: true });
  }
  return n;
}

/** Whether every raw file of the model at `url` is in the Cache API. */
async function inCacheApi(base) {
  if (typeof caches === "undefined") return false;
  const cache = await caches.open(CACHE_NAME);
  if (!(await cache.match(base + "config.json"))) return false;
  const index = await cache.match(base + "model.safetensors.index.json");
  if (index) {
    const map = (await index.json()).weight_map || {};
    for (const f of new Set(Object.values(map))) if (!(await cache.match(base + f))) return false;
    return true;
  }
  return !!(await cache.match(base + "model.safetensors"));
}

/**
 * Whether the model at `url` loads without downloading: a complete entry in the store (for
 * `weights` when given: "q4", "q8", "f16" or "auto"; else any), or every raw file in the
 * Cache API (a `.gguf` URL: that file).
 */
export async function hasModelInCache(url, { weights } = {}) {
  // A GGUF file is never in the model store (the engine keeps only safetensors folders there):
  // only its raw download, in the Cache API.
  const gguf = ggufUrl(url);
  if (gguf) return typeof caches !== "undefined" && !!(await (await caches.open(CACHE_NAME)).match(gguf.url));
  const base = normaliseBase(url);
  if (weights !== undefined) {
    if (await findStored(base, weights)) return true;
  } else {
    const root = await storeRoot();
    if (root) {
      for (const name of await storeFolders(root, base)) if (await completeEntry(root, name, base)) return true;
    }
  }
  return await inCacheApi(base);
}

/**
 * Remove everything kept of the model at `url`: its store entries (every format and
 * version, complete or not) and its raw files in the Cache API (a `.gguf` URL: that file).
 * Resolves to how many files were removed.
 */
export async function deleteModelCache(url) {
  const gguf = ggufUrl(url);
  if (gguf) return typeof caches !== "undefined" && (await (await caches.open(CACHE_NAME)).delete(gguf.url)) ? 1 : 0;
  const base = normaliseBase(url);
  let n = await deleteStored(base);
  if (typeof caches !== "undefined") {
    const cache = await caches.open(CACHE_NAME);
    for (const req of await cache.keys()) {
      if (req.url.startsWith(base) && (await cache.delete(req))) n++;
    }
  }
  return n;
}
