// qwen-webgpu: Qwen chat models in the browser on WebGPU.
//
//   import { createEngine } from "qwen-webgpu";
//   const engine = await createEngine({ model: "https://host/Qwen/Qwen2.5-0.5B-Instruct/resolve/main/", onProgress });
//   for await (const chunk of engine.chat.completions.create({ messages, stream: true })) ...
//
// By default the engine runs in a module Web Worker and this file is a thin proxy with the
// same API: the main thread then loads only this file, errors.js, stream.js and cache.js.
// engine.js (the engine, the wasm glue and the loaders) is imported on demand, only for
// `useWorker: false` (and `initWasm`).
import { qwenError, fromWire, ERROR_CODES } from "./errors.js";
import { pushStream } from "./stream.js";
import { hasModelInCache, deleteModelCache, CACHE_NAME } from "./cache.js";

export { hasModelInCache, deleteModelCache, CACHE_NAME, ERROR_CODES };

/** engine.js, loaded once when first needed (bundlers split it into its own chunk). */
const engineModule = () => import("./engine.js");

/** Instantiate the wasm module on this thread ahead of time (only useful with `useWorker: false`). */
export async function initWasm(wasmUrl) {
  return (await engineModule()).initWasm(wasmUrl);
}

const inWindow = () => typeof Worker !== "undefined" && typeof window !== "undefined";

/** A module worker running worker.js (the literal `new URL(...)` is what bundlers look for). */
const spawnWorker = () => new Worker(new URL("./worker.js", import.meta.url), { type: "module" });

/** Load a model and return an engine. See index.d.ts for the options. */
export async function createEngine(opts = {}) {
  if (opts.model === undefined) throw qwenError("request_invalid", "createEngine: `model` is required");
  if (!(opts.useWorker ?? inWindow())) return await (await engineModule()).loadEngine(opts.model, opts);
  return await WorkerEngine.create(opts);
}

/**
 * `qwen-webgpu bench` in the browser on a synthesised Qwen-1.8B-shaped model (random weights,
 * nothing downloaded). See index.d.ts for the options. Runs in its own Web Worker (ended
 * afterwards, which frees the GPU memory) unless `useWorker: false`.
 */
export async function benchmark(opts = {}) {
  if (!(opts.useWorker ?? inWindow())) return await (await engineModule()).runBenchmark(opts);
  const { onProgress, signal, worker, useWorker: _u, ...rest } = opts;
  if (signal?.aborted) throw qwenError("aborted", "the benchmark was aborted");
  const w = worker || spawnWorker();
  let onAbort = null;
  try {
    return await new Promise((resolve, reject) => {
      const on = {
        chunk: (m) => { try { onProgress?.(m.chunk); } catch { /* ignore */ } },
        result: (m) => resolve(m.value),
        error: (m) => reject(fromWire(m.error)),
      };
      w.onmessage = (ev) => on[ev.data?.type]?.(ev.data);
      w.onerror = (ev) => reject(qwenError("worker_failed", `the benchmark worker failed: ${ev.message || "unknown error"}`));
      // Aborting ends the worker: a measurement in flight cannot be interrupted otherwise.
      onAbort = () => reject(qwenError("aborted", "the benchmark was aborted"));
      signal?.addEventListener("abort", onAbort, { once: true });
      w.postMessage({ type: "bench", id: 1, opts: rest });
    });
  } finally {
    if (onAbort) signal?.removeEventListener("abort", onAbort);
    w.terminate();
  }
}

/** The engine's API, answered by a worker (worker.js). */
class WorkerEngine {
  static async create(opts) {
    const { onProgress, signal, worker, useWorker: _u, fetch: f, model, ...rest } = opts;
    if (f) throw qwenError("request_invalid", "a custom fetch cannot cross into the worker; use useWorker: false");
    const w = worker || spawnWorker();
    const e = new WorkerEngine(w);
    await e._ready;
    const onAbort = () => w.postMessage({ type: "abort", id: "load" });
    signal?.addEventListener("abort", onAbort);
    try {
      e._info = await new Promise((resolve, reject) => {
        e._load = { resolve, reject, onProgress };
        w.postMessage({ type: "load", model, opts: rest });
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
    /** `{reason, message}` once the worker's GPU device is lost. */
    this.lostInfo = null;
    /** Resolves with `{reason, message}` when the GPU device is lost (as `GPUDevice.lost`). Not on unload. */
    this.lost = new Promise((resolve) => { this._resolveLost = resolve; });
    worker.onmessage = (ev) => {
      const m = ev.data;
      this._on[m?.type]?.(m);
    };
    worker.onerror = (ev) => {
      const err = qwenError("worker_failed", `the engine worker failed: ${ev.message || "unknown error"}`);
      this._load?.reject(err);
      for (const c of this.calls.values()) c.reject(err);
      this.calls.clear();
    };
    const self = this;
    this.chat = { completions: { create: (req) => self._create(req) } };
  }

  /** Handlers of the worker's messages, by type. */
  _on = {
    ready: () => this._onReady(),
    progress: (m) => { try { this._load?.onProgress?.(m.p); } catch { /* ignore */ } },
    loaded: (m) => { this._load?.resolve(m.info); this._load = null; },
    lost: (m) => {
      if (this.lostInfo) return;
      this.lostInfo = m.info;
      this._resolveLost(m.info);
    },
    chunk: (m) => this.calls.get(m.id)?.onChunk?.(m.chunk),
    result: (m) => this._settle(m.id, (c) => c.resolve(m.value)),
    error: (m) => {
      if (m.id !== undefined && this.calls.has(m.id)) return this._settle(m.id, (c) => c.reject(fromWire(m.error)));
      this._load?.reject(fromWire(m.error));
      this._load = null;
    },
  };

  _settle(id, fn) {
    const c = this.calls.get(id);
    if (!c) return;
    this.calls.delete(id);
    fn(c);
  }

  _call(method, req = {}, onChunk) {
    const id = this.nextId++;
    if (this.unloaded) {
      return { id, promise: Promise.reject(qwenError("engine_unloaded", "the engine was unloaded")) };
    }
    const { signal, onToken, onProgress: _p, ...wire } = req;
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

  /** TEST ONLY: destroy the worker's GPU device (see Engine._loseDeviceForTest in engine.js). */
  _loseDeviceForTest() { this.worker.postMessage({ type: "loseDevice" }); }

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
    return this._call("benchmark", req, req.onProgress).promise;
  }

  _create(req) {
    if (!req.stream) return this._call("chat", req).promise;
    let call = null;
    const out = pushStream(() => this.worker.postMessage({ type: "abort", id: call.id }));
    call = this._call("chat", req, (c) => out.push(c));
    call.promise.then(() => out.end(), (e) => out.end(e));
    return out.iterator;
  }
}
