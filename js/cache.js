// The Cache API side of model downloads that the main thread needs (is a model cached, delete
// it); the downloading itself is in sources.js, which runs where the engine runs.

export const CACHE_NAME = "qwen-webgpu-v1";

/** A model base URL, absolute and ending in "/". */
export function normaliseBase(url) {
  let s = String(url);
  if (typeof location !== "undefined") s = new URL(s, location.href).href;
  return s.endsWith("/") ? s : s + "/";
}

/** Whether every file of the model at `url` is in the cache. */
export async function hasModelInCache(url) {
  if (typeof caches === "undefined") return false;
  const base = normaliseBase(url);
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

/** Remove every cached file of the model at `url`; resolves to how many were removed. */
export async function deleteModelCache(url) {
  if (typeof caches === "undefined") return 0;
  const base = normaliseBase(url);
  const cache = await caches.open(CACHE_NAME);
  let n = 0;
  for (const req of await cache.keys()) {
    if (req.url.startsWith(base) && (await cache.delete(req))) n++;
  }
  return n;
}
