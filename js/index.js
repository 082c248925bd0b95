// qwen-webgpu: Qwen chat models in the browser on WebGPU.
//
//   import { createEngine } from "qwen-webgpu";
//   const engine = await createEngine({ model: "https://host/Qwen/Qwen2.5-0.5B-Instruct/resolve/main/", onProgress });
//   for await (const chunk of engine.chat.completions.create({ messages, stream: true })) ...
//
// By default the engine runs in a module Web Worker and this file is a thin proxy with the
// same API; `useWorker: false` runs it on the calling thread.
import { loadEngine, initWasm, runBenchmark } from "./engine.js";
import { hasModelInCache, deleteModelCache, namedError, CACHE_NAME } from "./sources.js";

export { hasModelInCache, deleteModelCache, CACHE_NAME, initWasm };

const fromWire = (e) => namedError(e.name || "Error", e.message || "unknown error");

/** Load a model and return an engine. See index.d.ts for the options. */
export async function createEngine(opts = {}) {
  if (opts.model === undefined) throw namedError("RequestError", "createEngine: `model` is required");
  const worker = opts.useWorker ?? (typeof Worker !== "undefined" && typeof window !== "undefined");
  if (!worker) return await loadEngine(opts.model, opts);
  return await WorkerEngine.create(opts);
}

/**
 * `qwen-webgpu bench` in the browser on a synthesised Qwen-1.8B-shaped model (random weights,
 * nothing downloaded). See index.d.ts for the options. Runs in its own Web Worker (ended
 * afterwards, which frees the GPU memory) unless `useWorker: false`.
 */
export async function benchmark(opts = {}) {
  const useWorker = opts.useWorker ?? (typeof Worker !== "undefined" && typeof window !== "undefined");
  if (!useWorker) return await runBenchmark(opts);
  const { onProgress, signal, worker, useWorker: _u, ...rest } = opts;
  if (signal?.aborted) throw namedError("AbortError", "the benchmark was aborted");
  const w = worker || new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  let onAbort = null;
  try {
    return await new Promise((resolve, reject) => {
      w.onmessage = (ev) => {
        const m = ev.data;
        if (m.type === "chunk") { try { onProgress?.(m.chunk); } catch { /* ignore */ } }
        else if (m.type === "result") resolve(m.value);
        else if (m.type === "error") reject(fromWire(m.error));
      };
      w.onerror = (ev) => reject(namedError("GpuError", `the benchmark worker failed: ${ev.message || "unknown error"}`));
      // Aborting ends the worker: a measurement in flight cannot be interrupted otherwise.
      onAbort = () => reject(namedError("AbortError", "the benchmark was aborted"));
      signal?.addEventListener("abort", onAbort, { once: true });
      w.postMessage({ type: "bench", id: 1, opts: rest });
    });
  } finally {
    if (onAbort) signal?.removeEventListener("abort", onAbort);
    w.terminate();
  }
}

class WorkerEngine {
  static async create(opts) {
    const w = opts.worker || new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    const e = new WorkerEngine(w);
    const { onProgress, signal, worker: _w, useWorker: _u, fetch: f, ...rest } = opts;
    if (f) throw namedError("RequestError", "a custom fetch cannot cross into the worker; use useWorker: false");
    await e._ready;
    const onAbort = () => w.postMessage({ type: "abort", id: "load" });
    signal?.addEventListener("abort", onAbort);
    try {
      e._info = await new Promise((resolve, reject) => {
        e._load = { resolve, reject, onProgress };
        w.postMessage({ type: "load", model: rest.model, opts: { ...rest, model: undefined } });
      });
    } catch (err) {
      w.terminate();
      throw err;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    return e;
  }

  constructor(worker) {
    this.worker = worker;
    this.calls = new Map();
    this.nextId = 1;
    this._load = null;
    this._ready = new Promise((resolve) => { this._onReady = resolve; });
    worker.onmessage = (ev) => this._onMessage(ev.data);
    worker.onerror = (ev) => {
      const err = namedError("GpuError", `the engine worker failed: ${ev.message || "unknown error"}`);
      this._load?.reject(err);
      for (const c of this.calls.values()) c.reject(err);
      this.calls.clear();
    };
    const self = this;
    this.chat = { completions: { create: (req) => self._create(req) } };
  }

  _onMessage(m) {
    if (m.type === "ready") return this._onReady();
    if (m.type === "progress") { try { this._load?.onProgress?.(m.p); } catch { /* ignore */ } return; }
    if (m.type === "loaded") { this._load?.resolve(m.info); this._load = null; return; }
    if (m.type === "error" && (m.id === undefined || !this.calls.has(m.id))) {
      this._load?.reject(fromWire(m.error));
      this._load = null;
      return;
    }
    const c = this.calls.get(m.id);
    if (!c) return;
    if (m.type === "chunk") c.onChunk?.(m.chunk);
    else if (m.type === "result") { this.calls.delete(m.id); c.resolve(m.value); }
    else if (m.type === "error") { this.calls.delete(m.id); c.reject(fromWire(m.error)); }
  }

  _call(method, req = {}, onChunk) {
    const id = this.nextId++;
    if (this.unloaded) {
      return { id, promise: Promise.reject(namedError("RequestError", "the engine was unloaded")) };
    }
    const { signal, onToken, ...wire } = req;
    return {
      id,
      promise: new Promise((resolve, reject) => {
        this.calls.set(id, { resolve, reject, onChunk });
        if (signal) {
          signal.addEventListener("abort", () => this.worker.postMessage({ type: "abort", id }), { once: true });
        }
        this.worker.postMessage({ type: "call", id, method, req: { ...wire, streamIds: !!onToken } });
        if (signal?.aborted) this.worker.postMessage({ type: "abort", id });
      }),
    };
  }

  info() { return this._call("info").promise; }
  tokenize(text) { return this._call("tokenize", { text }).promise; }
  detokenize(ids) { return this._call("detokenize", { ids: Array.from(ids) }).promise; }
  resetChat() { return this._call("resetChat").promise; }
  async unload() {
    const done = this._call("unload").promise;
    this.unloaded = true;
    try { await done; } finally { this.worker.terminate(); }
  }
  generateIds(req) {
    return this._call("generateIds", req, req.onToken).promise;
  }
  benchmark(req = {}) {
    const { onProgress, ...wire } = req;
    return this._call("benchmark", wire, onProgress).promise;
  }

  _create(req) {
    if (!req.stream) return this._call("chat", req).promise;
    const chunks = [];
    let wake = null;
    let done = false;
    let failure = null;
    const kick = () => { if (wake) { wake(); wake = null; } };
    const call = this._call("chat", req, (c) => { chunks.push(c); kick(); });
    call.promise.then(() => { done = true; kick(); }, (e) => { failure = e; done = true; kick(); });
    const worker = this.worker;
    return {
      [Symbol.asyncIterator]() { return this; },
      async next() {
        for (;;) {
          if (chunks.length) return { value: chunks.shift(), done: false };
          if (done) {
            if (failure) { const f = failure; failure = null; throw f; }
            return { value: undefined, done: true };
          }
          await new Promise((r) => { wake = r; });
        }
      },
      async return() {
        worker.postMessage({ type: "abort", id: call.id });
        return { value: undefined, done: true };
      },
    };
  }
}
