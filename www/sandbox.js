// The chat page's Python code interpreter: Pyodide in a dedicated worker (www/python-worker.js)
// with no network access, a time limit and an output cap, one run at a time. Exposed to the
// model as the tool `python` ({code: string}).
//
// Pyodide's files come from our own origin (/pyodide/, served by scripts/serve.mjs from the
// pinned npm package that scripts/fetch-pyodide.sh installs). The page downloads the three big
// ones once and hands the worker their bytes: the worker itself may not connect anywhere.

/** Files the worker's Pyodide loader asks for (the worker imports the two .mjs scripts itself). */
const FILES = ["pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"];

/** Pyodide's files, downloaded once per page and index URL (kept as bytes for new workers). */
const downloads = new Map();
function download(indexURL) {
  if (!downloads.has(indexURL)) {
    const p = Promise.all(FILES.map(async (f) => {
      let r;
      try { r = await fetch(indexURL + f); } catch (e) { throw new Error(`could not download ${indexURL}${f}: ${e?.message || e}`); }
      if (!r.ok) throw new Error(`${indexURL}${f}: HTTP ${r.status} (is Pyodide served? scripts/fetch-pyodide.sh)`);
      return [f, await r.arrayBuffer()];
    })).then(Object.fromEntries);
    p.catch(() => downloads.delete(indexURL)); // a failed download may be tried again
    downloads.set(indexURL, p);
  }
  return downloads.get(indexURL);
}

/**
 * A Python interpreter in a worker. `run(code)` resolves to what came out; it never throws for
 * anything the code does (errors, endless loops, floods of output): those are in the result.
 */
export class PythonSandbox {
  /**
   * @param {object} [o]
   * @param {string} [o.indexURL] where Pyodide's files are served (default: /pyodide/ next to www/)
   * @param {number} [o.timeoutMs] a run's time limit; past it the worker is ended and a new one started
   * @param {number} [o.maxOutput] characters of stdout+stderr+result kept per run; the rest is counted
   */
  constructor({ indexURL = new URL("../pyodide/", import.meta.url).href, timeoutMs = 10000, maxOutput = 8000 } = {}) {
    this.indexURL = indexURL.endsWith("/") ? indexURL : `${indexURL}/`;
    this.timeoutMs = timeoutMs;
    this.maxOutput = maxOutput;
    this.worker = null;
    this.starting = null; // Promise<{version, blocked}> of the current worker
    this.queue = Promise.resolve(); // one run at a time
    this.seq = 0;
    this.restarts = 0;
    this.info = null;
  }

  /** Start a worker (unless one is running or starting) and load Python in it. */
  start() {
    if (this.starting) return this.starting;
    const worker = new Worker(new URL("./python-worker.js", import.meta.url), { type: "module", name: "python-sandbox" });
    this.worker = worker;
    let cancel;
    const cancelled = new Promise((_, reject) => { cancel = reject; });
    cancelled.catch(() => {});
    this.cancelStart = () => cancel(new Error("the Python session was reset while it started"));
    this.starting = (async () => {
      const files = await Promise.race([download(this.indexURL), cancelled]);
      return await new Promise((resolve, reject) => {
        cancelled.catch(reject);
        worker.onmessage = (ev) => {
          const m = ev.data || {};
          if (m.type === "ready") resolve({ version: m.version, blocked: m.blocked });
          else if (m.type === "failed") reject(new Error(`Python did not start: ${m.message}`));
        };
        worker.onerror = (ev) => { ev.preventDefault?.(); reject(new Error(`Python's worker failed to start: ${ev.message || "script error"}`)); };
        worker.postMessage({ type: "init", indexURL: this.indexURL, files, maxOutput: this.maxOutput });
      });
    })();
    this.starting.then((info) => { if (this.worker === worker) this.info = info; }, () => {
      if (this.worker === worker) { worker.terminate(); this.worker = null; this.starting = null; }
    });
    return this.starting;
  }

  /** Whether Python loads here: resolves to {version, blocked} or rejects with the reason. */
  ready() {
    return this.start();
  }

  /** End the worker (its variables are lost); the next run starts a fresh one. */
  reset() {
    if (this.worker) this.worker.terminate();
    this.cancelStart?.();
    this.cancelStart = null;
    this.worker = null;
    this.starting = null;
    this.info = null;
  }

  /**
   * Run `code`. Resolves to {ok, stdout, stderr, result (repr of a last expression, or null),
   * error (a traceback, or null), truncated (characters left out), timedOut, stopped, seconds}.
   * Runs wait for each other; the time limit counts from the run's own start.
   */
  run(code, { signal } = {}) {
    const job = this.queue.then(() => this.#run(String(code ?? ""), signal));
    this.queue = job.catch(() => {});
    return job;
  }

  async #run(code, signal) {
    const base = { ok: false, stdout: "", stderr: "", result: null, error: null, truncated: 0, timedOut: false, stopped: false, seconds: 0 };
    if (signal?.aborted) return { ...base, stopped: true, error: "stopped before it ran" };
    try {
      await this.start();
    } catch (e) {
      return { ...base, error: String(e?.message || e) };
    }
    if (signal?.aborted) return { ...base, stopped: true, error: "stopped before it ran" };
    const worker = this.worker;
    if (!worker) return { ...base, error: "the Python session was reset before the code ran" };
    const id = ++this.seq;
    const t0 = performance.now();
    return await new Promise((resolve) => {
      let timer = null;
      const end = (r) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        worker.onmessage = null;
        resolve({ ...base, ...r, seconds: (performance.now() - t0) / 1000 });
      };
      // Kill the run: the worker goes (a loop cannot be interrupted otherwise without
      // cross-origin isolation) and a new one starts loading now, for the next run.
      const kill = (r) => {
        if (this.worker === worker) { this.reset(); this.restarts++; this.start().catch(() => {}); }
        end(r);
      };
      const onAbort = () => kill({ stopped: true, error: "stopped (the Python session was restarted: its variables are gone)" });
      timer = setTimeout(() => kill({ timedOut: true, error: `timed out after ${fmtSeconds(this.timeoutMs / 1000)} s (the Python session was restarted: its variables are gone)` }), this.timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      worker.onmessage = (ev) => {
        const m = ev.data || {};
        if (m.type === "result" && m.id === id) end({ ok: m.ok, stdout: m.stdout, stderr: m.stderr, result: m.result, error: m.error, truncated: m.truncated });
      };
      worker.onerror = (ev) => { ev.preventDefault?.(); kill({ error: `the Python worker crashed: ${ev.message || "error"}` }); };
      worker.postMessage({ type: "run", id, code });
    });
  }

  /**
   * The tool for the page's tool loop: `python` with a JSON-schema `{code: string}`; its result
   * is the text the model reads (sandbox.js's `formatResult`).
   */
  tool() {
    return {
      description: "Run Python 3 code in a sandbox in the user's browser (no network access, no package installs, " +
        `standard library only, ${fmtSeconds(this.timeoutMs / 1000)} s time limit). Returns what it prints and the value ` +
        "of its last expression. Variables persist between calls. Use it for arithmetic, data and exact answers.",
      parameters: {
        type: "object",
        properties: { code: { type: "string", description: "The Python code to run." } },
        required: ["code"],
      },
      run: async (args, { signal } = {}) => {
        const code = typeof args === "string" ? args : args?.code;
        if (typeof code !== "string" || !code.trim()) return "Error: the python tool needs {\"code\": \"...\"} with some code.";
        return formatResult(await this.run(code, { signal }));
      },
    };
  }
}

function fmtSeconds(s) {
  return Number.isInteger(s) ? String(s) : s.toFixed(1);
}

/** What the model reads back from a run: output, the last expression's value, the error, notes. */
export function formatResult(r) {
  const parts = [];
  if (r.stdout) parts.push(r.stdout.replace(/\n$/, ""));
  if (r.stderr) parts.push(r.stderr.replace(/\n$/, ""));
  if (r.result != null) parts.push(r.result);
  if (r.error) parts.push(r.error.replace(/\n$/, ""));
  if (r.truncated > 0) parts.push(`[output truncated: ${r.truncated} more characters not shown]`);
  return parts.length ? parts.join("\n") : "(no output)";
}
