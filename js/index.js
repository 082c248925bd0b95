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
/** tools.js (the tool loop, the built-in tools' code), loaded the first time a tool is used. */
const toolsModule = () => import("./tools.js");

/**
 * The tool loop: completions on `engine` (a worker engine or one on this thread), the tools
 * run here, until a reply calls no tool or `maxSteps` rounds of calls have run. See
 * index.d.ts (RunToolsOptions, RunToolsResult) for every option.
 */
export async function runTools(engine, opts) {
  return (await toolsModule()).runTools(engine, opts);
}

/**
 * Built-in tools for `runTools` (map form: `tools: { calculator: tools.calculator }`): each is
 * `{ description, parameters, run }`. Their code (a calculator with its own parser: no eval)
 * is in tools.js, loaded when one first runs.
 */
export const tools = Object.freeze({
  calculator: Object.freeze({
    description: "Evaluate an arithmetic expression: numbers, + - * / % ^ (power), parentheses, the constants pi and e, " +
      "and the functions sqrt, abs, sin, cos, tan, asin, acos, atan, exp, ln, log (base 10), log2, floor, ceil, round, min, max, pow, hypot. " +
      "Use it for every calculation instead of computing in your head.",
    parameters: Object.freeze({
      type: "object",
      properties: { expression: { type: "string", description: "The expression, for example (2 + 3) * sqrt(16) / 7" } },
      required: ["expression"],
    }),
    run: async (args) => (await toolsModule()).calculator(args),
  }),
  currentTime: Object.freeze({
    description: "The current date and time, in a given IANA time zone (such as Europe/Paris or UTC) or the user's own.",
    parameters: Object.freeze({
      type: "object",
      properties: { timeZone: { type: "string", description: "An IANA time zone name; omit it for the user's local time" } },
    }),
    run: async (args) => (await toolsModule()).currentTime(args),
  }),
});

/** Instantiate the wasm module on this thread ahead of time (only useful with `useWorker: false`). */
export async function initWasm(wasmUrl) {
  return (await engineModule()).initWasm(wasmUrl);
}

const inWindow = () => typeof Worker !== "undefined" && typeof window !== "undefined";

/**
 * Rejects with GpuError `gpu_unavailable` where there is no WebGPU at all (Node.js, a server
 * render, a browser without it), before a worker, the wasm or a byte of the model is fetched.
 */
function checkWebGpu() {
  if (typeof navigator !== "undefined" && navigator.gpu) return;
  const where = typeof process !== "undefined" && process.versions?.node ? `Node.js ${process.versions.node}` : "this environment";
  throw qwenError("gpu_unavailable", `WebGPU is not available here (${where} has no navigator.gpu): run qwen-webgpu in a browser with WebGPU, such as Chrome or Edge`);
}

/** A module worker running worker.js (the literal `new URL(...)` is what bundlers look for). */
const spawnWorker = () => new Worker(new URL("./worker.js", import.meta.url), { type: "module" });

/** What to check when the worker does not start (said in every worker_failed error at start-up). */
const WORKER_HELP = "check that worker.js is served next to index.js as JavaScript " +
  "(Vite's dev server: add \"qwen-webgpu\" to optimizeDeps.exclude; a bundler must keep " +
  "`new Worker(new URL(\"./worker.js\", import.meta.url), { type: \"module\" })`; " +
  "a worker file of your own must `import \"qwen-webgpu/worker.js\"`)";

/** How long a worker may take to start (default of `workerStartTimeoutMs`). */
const WORKER_START_MS = 30000;

/** The worker given in `opts.worker`, or a new one running worker.js; never a DOMException. */
function openWorker(opts) {
  if (opts.worker) return opts.worker;
  try {
    return spawnWorker();
  } catch (e) {
    throw qwenError("worker_failed", `cannot create the engine's worker (${e?.message || e}): ${WORKER_HELP}`, e);
  }
}

/**
 * Waits until worker.js answers: it posts `{type:"ready"}` once its module has run, and again
 * for each `{type:"hello"}` (so a worker made long before still answers). Rejects with
 * GpuError `worker_failed` on the worker's `error` or `messageerror` event (a 404, a wrong MIME
 * type, a throwing script, an import that fails) or when nothing answers within the time (an
 * empty worker: a bundler dropped worker.js's code), and with `aborted` when `signal` fires.
 */
function workerStarted(w, what, { workerStartTimeoutMs: ms = WORKER_START_MS, signal } = {}) {
  if (typeof ms !== "number" || !(ms > 0) || ms > 2 ** 31 - 1) {
    throw qwenError("request_invalid", `workerStartTimeoutMs must be a number of milliseconds from 1 to ${2 ** 31 - 1} (got ${typeof ms === "number" ? ms : typeof ms})`);
  }
  if (signal?.aborted) throw qwenError("aborted", `the ${what} was aborted`);
  return new Promise((resolve, reject) => {
    let timer = null;
    const failed = (why) => qwenError("worker_failed", `the ${what} worker failed to start: ${why}; ${WORKER_HELP}`);
    const on = {
      message: (ev) => { if (ev.data?.type === "ready") done(resolve); },
      error: (ev) => {
        ev.preventDefault?.();
        done(reject, failed(ev.message || "its script did not load (an HTTP error, a wrong MIME type or an import that failed)"));
      },
      messageerror: () => done(reject, failed("a message from it could not be read")),
    };
    const onAbort = () => done(reject, qwenError("aborted", `the ${what} was aborted`));
    function done(settle, value) {
      clearTimeout(timer);
      for (const [type, fn] of Object.entries(on)) w.removeEventListener(type, fn);
      signal?.removeEventListener("abort", onAbort);
      settle(value);
    }
    for (const [type, fn] of Object.entries(on)) w.addEventListener(type, fn);
    signal?.addEventListener("abort", onAbort, { once: true });
    timer = setTimeout(() => done(reject, failed(`no "ready" message within ${ms / 1000} s ` +
      "(an empty worker: did a bundler drop worker.js's code? The package's sideEffects must keep it)")), ms);
    w.postMessage({ type: "hello" });
  });
}

/** Load a model and return an engine. See index.d.ts for the options. */
export async function createEngine(opts = {}) {
  if (opts.model === undefined) throw qwenError("request_invalid", "createEngine: `model` is required");
  checkWebGpu();
  if (!(opts.useWorker ?? inWindow())) return await (await engineModule()).loadEngine(opts.model, opts);
  return await WorkerEngine.create(opts);
}

/**
 * `qwen-webgpu bench` in the browser on a synthesised Qwen-1.8B-shaped model (random weights,
 * nothing downloaded). See index.d.ts for the options. Runs in its own Web Worker (ended
 * afterwards, which frees the GPU memory) unless `useWorker: false`.
 */
export async function benchmark(opts = {}) {
  checkWebGpu();
  if (!(opts.useWorker ?? inWindow())) return await (await engineModule()).runBenchmark(opts);
  const { onProgress, signal, worker: _w, useWorker: _u, workerStartTimeoutMs: _t, ...rest } = opts;
  if (signal?.aborted) throw qwenError("aborted", "the benchmark was aborted");
  const w = openWorker(opts);
  let onAbort = null;
  try {
    await workerStarted(w, "benchmark", opts);
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
    const { onProgress, signal, worker: _w, useWorker: _u, workerStartTimeoutMs: _t, fetch: f, model, ...rest } = opts;
    if (f) throw qwenError("request_invalid", "a custom fetch cannot cross into the worker; use useWorker: false");
    const w = openWorker(opts);
    try {
      await workerStarted(w, "engine", opts);
    } catch (err) {
      w.terminate();
      throw err;
    }
    const e = new WorkerEngine(w);
    const onAbort = () => w.postMessage({ type: "abort", id: "load" });
    signal?.addEventListener("abort", onAbort);
    try {
      e._info = await new Promise((resolve, reject) => {
        e._load = { resolve, reject, onProgress };
        // A URL object does not cross postMessage (structured clone): its string does.
        w.postMessage({ type: "load", model: model instanceof URL ? model.href : model, opts: rest });
      });
    } catch (err) {
      w.terminate();
      throw err;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    // A worker has no storage.persist(): once the model is stored, ask from this thread, so
    // the browser keeps the stored model under storage pressure (best effort).
    const stored = e._info?.load?.store;
    if (stored?.stored && !stored.persisted && typeof navigator !== "undefined" && navigator.storage?.persist) {
      try {
        stored.persisted = await navigator.storage.persist();
      } catch {
        /* not granted; the model is still stored */
      }
    }
    return e;
  }

  constructor(worker) {
    this.worker = worker;
    this.calls = new Map();
    this.nextId = 1;
    this._load = null;
    /** `{reason, message}` once the worker's GPU device is lost. */
    this.lostInfo = null;
    /** Resolves with `{reason, message}` when the GPU device is lost (as `GPUDevice.lost`). Not on unload. */
    this.lost = new Promise((resolve) => { this._resolveLost = resolve; });
    worker.onmessage = (ev) => {
      const m = ev.data;
      this._on[m?.type]?.(m);
    };
    const fail = (why) => {
      const err = qwenError("worker_failed", `the engine worker failed: ${why}`);
      this._load?.reject(err);
      for (const c of this.calls.values()) c.reject(err);
      this.calls.clear();
    };
    worker.onerror = (ev) => fail(ev.message || "unknown error");
    worker.onmessageerror = () => fail("a message from it could not be read");
    const self = this;
    this.chat = { completions: { create: (req) => self._create(req) } };
  }

  /** Handlers of the worker's messages, by type. */
  _on = {
    ready: () => {}, // the start-up handshake is over (workerStarted); a late duplicate is ignored
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
        try {
          this.worker.postMessage({ type: "call", id, method, req: { ...wire, streamIds: !!onToken } });
        } catch (e) {
          // A function (a tool's `run`), a DOM node or the like cannot cross to the worker.
          this.calls.delete(id);
          reject(qwenError("request_invalid", `the request cannot be sent to the engine's worker (${e?.message || e}): ` +
            "it must be plain data (tools as OpenAI tool objects; runTools runs tool functions on this thread)", e));
          return;
        }
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
  /** The tool loop (`runTools(this, opts)`): the tools run on this thread, the completions in the worker. */
  runTools(opts) {
    return runTools(this, opts);
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
