// The page's dedicated workers (the engine's) through a CDP session on the page: auto-attached
// as non-flattened sessions, so their messages go through this session and Playwright's own
// sessions are left alone. Used by soak.mjs (heaps) and scripts/load-bench-browser.mjs (wasm
// memory).

/** `{ workers, send }`: the live workers (sessionId -> url) and `send(sessionId, method, params)`. */
export async function workerSessions(cdp) {
  const workers = new Map();
  const pending = new Map();
  let nextId = 1;
  cdp.on("Target.attachedToTarget", (e) => { if (e.targetInfo.type === "worker") workers.set(e.sessionId, e.targetInfo.url); });
  cdp.on("Target.detachedFromTarget", (e) => workers.delete(e.sessionId));
  cdp.on("Target.receivedMessageFromTarget", (e) => {
    const m = JSON.parse(e.message);
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.error) p.reject(new Error(`${m.error.message} (worker)`)); else p.resolve(m.result);
  });
  await cdp.send("Target.setAutoAttach", { autoAttach: true, waitForDebuggerOnStart: false, flatten: false });
  const send = (sessionId, method, params = {}) => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    cdp.send("Target.sendMessageToTarget", { sessionId, message: JSON.stringify({ id, method, params }) }).catch(reject);
  });
  return { workers, send };
}
