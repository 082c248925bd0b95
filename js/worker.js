// Web Worker entry: owns one Engine and answers the main-thread proxy in index.js.
// Messages in:  {type:"hello"} (answered by "ready": the start-up handshake of index.js)
//               | {type:"load", model, opts} | {type:"call", id, method, req} | {type:"abort", id}
//               | {type:"bench", id, opts} (a synthesised-model benchmark; needs no engine)
//               | {type:"loseDevice"} (TEST ONLY: destroy the GPU device now)
// Messages out: {type:"ready"} | {type:"progress", p} | {type:"loaded", info} | {type:"lost", info}
//               | {type:"chunk", id, chunk} | {type:"result", id, value}
//               | {type:"error", id?, error:{name, code, message}}
// Both directions are dispatched by tables keyed by `type` (and `method` for calls).
import { loadEngine, runBenchmark } from "./engine.js";
import { qwenError, toWire } from "./errors.js";

let engine = null;
const aborts = new Map();
const post = (m) => self.postMessage(m);

/** Run `job(signal)` under an AbortController that `{type:"abort", id: key}` fires. */
async function abortable(key, job) {
  const ctl = new AbortController();
  aborts.set(key, ctl);
  try {
    return await job(ctl.signal);
  } finally {
    aborts.delete(key);
  }
}

/** Engine methods a `call` may name: `(req, progress) => value` (progress posts a chunk). */
const methods = {
  async chat(req, progress) {
    if (!req.stream) return await engine.chat.completions.create(req);
    for await (const chunk of engine.chat.completions.create(req)) progress(chunk);
    return undefined;
  },
  generateIds: (req, progress) => engine.generateIds({ ...req, onToken: req.streamIds ? progress : undefined }),
  benchmark: (req, progress) => engine.benchmark({ ...req, onProgress: progress }),
  resetChat: () => engine.resetChat(),
  async unload() {
    await engine.unload();
    engine = null;
  },
  tokenize: (req) => engine.tokenize(req.text),
  detokenize: (req) => engine.detokenize(req.ids),
  info: () => engine.info(),
};

/** Handlers by message type; each may throw, and the error goes back with the message's id. */
const handlers = {
  hello() {
    post({ type: "ready" });
  },
  async load(m) {
    engine = await abortable("load", (signal) =>
      loadEngine(m.model, { ...m.opts, signal, onProgress: (p) => post({ type: "progress", p }) }));
    post({ type: "loaded", info: engine.info() });
    const e = engine;
    e.lost.then((info) => { if (engine === e) post({ type: "lost", info }); });
  },
  /** TEST ONLY (Engine._loseDeviceForTest): runs now, not after the calls in flight. */
  loseDevice() {
    engine?._loseDeviceForTest();
  },
  async bench(m) {
    const value = await abortable(m.id, (signal) =>
      runBenchmark({ ...m.opts, signal, onProgress: (p) => post({ type: "chunk", id: m.id, chunk: p }) }));
    post({ type: "result", id: m.id, value });
  },
  abort(m) {
    aborts.get(m.id)?.abort();
  },
  async call(m) {
    const method = Object.hasOwn(methods, m.method) ? methods[m.method] : null;
    if (!method) throw qwenError("request_invalid", `unknown method ${m.method}`);
    if (!engine) throw qwenError("engine_unloaded", "no model is loaded");
    const value = await abortable(m.id, (signal) =>
      method({ ...(m.req || {}), signal }, (chunk) => post({ type: "chunk", id: m.id, chunk })));
    post({ type: "result", id: m.id, value });
  },
};

self.onmessage = async (ev) => {
  const m = ev.data;
  try {
    const handler = Object.hasOwn(handlers, m?.type) ? handlers[m.type] : null;
    if (!handler) throw qwenError("request_invalid", `unknown message type ${m?.type}`);
    await handler(m);
  } catch (e) {
    post({ type: "error", id: m?.id, error: toWire(e) });
  }
};
// Also unasked, for a page that listens before it says hello. This top-level code is why the
// package's package.json lists worker.js under "sideEffects": a bundler must keep it.
post({ type: "ready" });
