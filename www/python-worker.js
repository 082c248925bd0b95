// The Python sandbox's worker (a module worker started by www/sandbox.js): Pyodide runs here,
// off the page, with no way out to the network.
//
// Walls, from the outside in:
// 1. The browser: scripts/serve.mjs serves this file with its own Content-Security-Policy
//    (`connect-src 'none'`, no eval, scripts only from our origin, no nested workers). A dedicated
//    worker is governed by the policy of its own script's response, not the page's, so fetch,
//    XHR, WebSocket, EventSource and WebTransport to any address are refused by the browser.
// 2. This file: Pyodide's loader fetches its wasm, standard library and lock file; the page has
//    already downloaded them (its policy allows our own origin) and passes the bytes in the
//    `init` message, so a stand-in `fetch` serves exactly those three names from memory. Once
//    Python is up, every network or storage route on the global object (fetch, XMLHttpRequest,
//    WebSocket, EventSource, WebTransport, importScripts, Worker, SharedWorker,
//    BroadcastChannel, indexedDB, caches, ...) is replaced by a function that throws, so
//    `import js; js.fetch(...)` and `pyodide.http.pyfetch(...)` fail with a clear error even
//    where a static host sends no header.
// 3. Python's `js` module is a small object (timers, Object, Array, ...), not the global
//    object; `loadPackage` and friends throw (only the core runtime is served anyway).
//
// Protocol (postMessage):
//   in:  {type: "init", indexURL, files: {"pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json": ArrayBuffer}, maxOutput}
//        {type: "run", id, code}
//        {type: "probe"} (before init only: tries the browser's own fetch, see below)
//   out: {type: "ready", version, blocked: [names]} | {type: "failed", message}
//        {type: "probe", reached, status?, message?}
//        {type: "result", id, ok, stdout, stderr, result, error, truncated}
// One run at a time: the page queues (sandbox.js); a run that is still going when the page's
// time limit passes is ended by terminating this worker.

const SERVED = ["pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"];
const CONTENT_TYPES = { wasm: "application/wasm", zip: "application/zip", json: "application/json" };

/** The names taken away from the global object once Python has loaded. */
const BLOCKED = [
  "fetch", "XMLHttpRequest", "WebSocket", "WebSocketStream", "EventSource", "WebTransport",
  "importScripts", "Worker", "SharedWorker", "BroadcastChannel", "indexedDB", "caches",
  "cookieStore", "RTCPeerConnection", "webkitRTCPeerConnection", "RTCDataChannel",
  "Request", "Notification", "CacheStorage", "IDBFactory", "FileSystemHandle",
  "webkitRequestFileSystem", "webkitRequestFileSystemSync", "requestFileSystem",
];

let pyodide = null;
let maxOutput = 20000;
let ns = null; // the Python namespace kept between runs (a dict PyProxy)

/** A function (also usable with `new`) that refuses, naming what was refused. */
function refuse(name) {
  const f = function () { throw new Error(`${name} is not available in the Python sandbox (no network access)`); };
  Object.defineProperty(f, "name", { value: name });
  return f;
}

/** Replace every network/storage route on the global object (and navigator) with a refusal. */
function lockDown() {
  const done = [];
  for (const name of BLOCKED) {
    if (!(name in globalThis)) continue;
    try {
      Object.defineProperty(globalThis, name, { value: refuse(name), writable: false, configurable: false, enumerable: false });
      done.push(name);
    } catch {
      try { delete globalThis[name]; if (!(name in globalThis)) done.push(name); } catch { /* kept: the CSP still applies */ }
    }
  }
  for (const name of ["serviceWorker", "storage", "locks", "sendBeacon"]) {
    try {
      if (self.navigator && name in self.navigator) {
        Object.defineProperty(self.navigator, name, { get: refuse(`navigator.${name}`), configurable: false });
        done.push(`navigator.${name}`);
      }
    } catch { /* leave it */ }
  }
  return done;
}

/** What Python's `js` module sees: what Pyodide's own modules import from it (timers for the
 *  event loop, a few constructors), nothing that reaches the network. */
function jsGlobals() {
  const g = Object.create(null);
  for (const name of ["setTimeout", "clearTimeout", "setInterval", "clearInterval"]) g[name] = globalThis[name].bind(globalThis);
  for (const name of ["Object", "Array", "Map", "Set", "WeakRef", "Date", "Math", "JSON", "Promise", "Error", "Number", "String",
    "Boolean", "Symbol", "Uint8Array", "Int32Array", "Float64Array", "ArrayBuffer", "DataView", "BigInt", "console"]) {
    if (name in globalThis) g[name] = globalThis[name];
  }
  return g;
}

async function init(msg) {
  maxOutput = Math.max(100, Number(msg.maxOutput) || maxOutput);
  const files = msg.files || {};
  for (const f of SERVED) if (!(files[f] instanceof ArrayBuffer)) throw new Error(`the page passed no ${f}`);
  const indexURL = new URL(msg.indexURL, self.location.href).href;
  // Pyodide's loader fetches these three names; serve them from the bytes the page sent.
  globalThis.fetch = async (input) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url, self.location.href);
    const name = url.href.startsWith(indexURL) ? url.href.slice(indexURL.length) : "";
    if (!SERVED.includes(name)) throw new Error(`the Python sandbox does not fetch ${url.href}`);
    return new Response(files[name], { headers: { "Content-Type": CONTENT_TYPES[name.split(".").pop()] } });
  };
  let mod;
  try {
    mod = await import(`${indexURL}pyodide.mjs`);
  } catch (e) {
    throw new Error(`could not load ${indexURL}pyodide.mjs (is Pyodide served? scripts/fetch-pyodide.sh): ${e?.message || e}`);
  }
  pyodide = await mod.loadPyodide({
    indexURL,
    jsglobals: jsGlobals(),
    env: { HOME: "/home/pyodide" },
    stdout: () => {},
    stderr: () => {},
  });
  for (const name of ["loadPackage", "loadPackagesFromImports"]) {
    pyodide[name] = refuse(`pyodide.${name}`);
  }
  pyodide.runPython(PRELUDE);
  ns = pyodide.globals.get("dict")();
  const blocked = lockDown();
  return { version: pyodide.version, blocked };
}

// Python side: run `code` in a namespace kept between runs; the repr of a last expression is
// the result; a traceback keeps only the frames of the user's code.
const PRELUDE = `
import sys, traceback
from pyodide.code import eval_code_async

def _qwen_block(*a, **k):
    raise RuntimeError("installing packages is not possible in the Python sandbox (no network access)")
try:
    import micropip
    micropip.install = _qwen_block
except ImportError:
    pass
import pyodide_js
pyodide_js.loadPackage = _qwen_block

async def _qwen_run(code, ns):
    ns.setdefault("__name__", "__main__")
    try:
        r = await eval_code_async(code, globals=ns, filename="<python>")
        return (True, None if r is None else repr(r))
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<python>":
            tb = tb.tb_next
        if tb is None or isinstance(e, SyntaxError):
            text = "".join(traceback.format_exception_only(type(e), e))
        else:
            text = "".join(traceback.format_exception(type(e), e, tb))
        return (False, text)
`;

/** Output of one run, capped at maxOutput characters in all (stdout, stderr, then the result
 *  or traceback); what does not fit is counted, not kept, so an endless print cannot fill memory. */
function collector() {
  const out = { stdout: "", stderr: "", dropped: 0 };
  const room = () => maxOutput - out.stdout.length - out.stderr.length;
  const keep = (key, s) => {
    const r = Math.max(0, room());
    out[key] += s.length > r ? s.slice(0, r) : s;
    if (s.length > r) out.dropped += s.length - r;
  };
  // Python writes bytes: Pyodide's `write` handler gets them a buffer at a time.
  const stream = (key) => {
    const td = new TextDecoder();
    return {
      write: (bytes) => { keep(key, td.decode(bytes, { stream: true })); return bytes.length; },
      flush: () => keep(key, td.decode()),
    };
  };
  return { out, room, stdout: stream("stdout"), stderr: stream("stderr") };
}

async function run(msg) {
  const c = collector();
  pyodide.setStdout({ write: c.stdout.write, isatty: false });
  pyodide.setStderr({ write: c.stderr.write, isatty: false });
  let ok = false, text = null;
  try {
    const fn = pyodide.globals.get("_qwen_run");
    const r = await fn(String(msg.code), ns);
    fn.destroy();
    const pair = r.toJs();
    r.destroy?.();
    ok = !!pair[0];
    text = pair[1] ?? null;
  } catch (err) {
    text = String(err?.message || err);
  } finally {
    c.stdout.flush();
    c.stderr.flush();
  }
  // The result (repr of a last expression) gets what is left of the cap, from its start; a
  // traceback keeps at least its last 1000 characters (where the error is), even past the cap.
  if (text != null) {
    const r = Math.max(0, c.room());
    if (ok && text.length > r) { c.out.dropped += text.length - r; text = text.slice(0, r); }
    const keepTail = Math.max(r, Math.min(1000, maxOutput));
    if (!ok && text.length > keepTail) { c.out.dropped += text.length - keepTail; text = text.slice(text.length - keepTail); }
  }
  return { ok, stdout: c.out.stdout, stderr: c.out.stderr, result: ok ? text : null, error: ok ? null : text, truncated: c.out.dropped };
}

let ready = null;
self.onmessage = async (ev) => {
  const msg = ev.data || {};
  if (msg.type === "init") {
    ready = init(msg);
    try {
      const r = await ready;
      self.postMessage({ type: "ready", ...r });
    } catch (err) {
      self.postMessage({ type: "failed", message: String(err?.message || err) });
    }
  } else if (msg.type === "probe" && !ready) {
    // A check of wall 1 (for the tests, before Python loads): can this worker reach our own
    // origin with the browser's fetch? Under serve.mjs's policy it cannot.
    try {
      const r = await fetch(self.location.href, { cache: "no-store" });
      self.postMessage({ type: "probe", reached: true, status: r.status });
    } catch (err) {
      self.postMessage({ type: "probe", reached: false, message: String(err?.message || err) });
    }
  } else if (msg.type === "run") {
    try {
      await ready;
      const r = await run(msg);
      self.postMessage({ type: "result", id: msg.id, ...r });
    } catch (err) {
      self.postMessage({ type: "result", id: msg.id, ok: false, stdout: "", stderr: "", result: null, error: String(err?.message || err), truncated: 0 });
    }
  }
};
