// Web Worker entry: owns one Engine and answers the main-thread proxy in index.js.
// Messages in:  {type:"load", model, opts} | {type:"call", id, method, req} | {type:"abort", id}
//               | {type:"bench", id, opts} (a synthesised-model benchmark; needs no engine)
// Messages out: {type:"progress", p} | {type:"loaded", info} | {type:"chunk", id, chunk}
//               | {type:"result", id, value} | {type:"error", id?, error:{name, message}}
import { loadEngine, runBenchmark } from "./engine.js";

let engine = null;
const aborts = new Map();
const post = (m) => self.postMessage(m);
const errorOf = (e) => ({ name: (e && e.name) || "Error", message: (e && e.message) || String(e) });

self.onmessage = async (ev) => {
  const m = ev.data;
  try {
    if (m.type === "load") {
      const loadAbort = new AbortController();
      aborts.set("load", loadAbort);
      try {
        engine = await loadEngine(m.model, { ...m.opts, signal: loadAbort.signal, onProgress: (p) => post({ type: "progress", p }) });
      } finally {
        aborts.delete("load");
      }
      post({ type: "loaded", info: engine.info() });
    } else if (m.type === "bench") {
      const ctl = new AbortController();
      aborts.set(m.id, ctl);
      try {
        const value = await runBenchmark({ ...m.opts, signal: ctl.signal, onProgress: (p) => post({ type: "chunk", id: m.id, chunk: p }) });
        post({ type: "result", id: m.id, value });
      } finally {
        aborts.delete(m.id);
      }
    } else if (m.type === "abort") {
      aborts.get(m.id)?.abort();
    } else if (m.type === "call") {
      if (!engine) throw Object.assign(new Error("no model is loaded"), { name: "RequestError" });
      const ctl = new AbortController();
      aborts.set(m.id, ctl);
      const req = { ...(m.req || {}), signal: ctl.signal };
      try {
        let value;
        if (m.method === "chat" && req.stream) {
          for await (const chunk of engine.chat.completions.create(req)) post({ type: "chunk", id: m.id, chunk });
        } else if (m.method === "chat") {
          value = await engine.chat.completions.create(req);
        } else if (m.method === "generateIds") {
          value = await engine.generateIds({ ...req, onToken: req.streamIds ? (t) => post({ type: "chunk", id: m.id, chunk: t }) : undefined });
        } else if (m.method === "resetChat") {
          value = await engine.resetChat();
        } else if (m.method === "unload") {
          value = await engine.unload();
          engine = null;
        } else if (m.method === "tokenize") {
          value = engine.tokenize(req.text);
        } else if (m.method === "detokenize") {
          value = engine.detokenize(req.ids);
        } else if (m.method === "benchmark") {
          value = await engine.benchmark({ ...req, onProgress: (p) => post({ type: "chunk", id: m.id, chunk: p }) });
        } else if (m.method === "info") {
          value = engine.info();
        } else {
          throw Object.assign(new Error(`unknown method ${m.method}`), { name: "RequestError" });
        }
        post({ type: "result", id: m.id, value });
      } finally {
        aborts.delete(m.id);
      }
    }
  } catch (e) {
    post({ type: "error", id: m.id, error: errorOf(e) });
  }
};
post({ type: "ready" });
