// Chat page (issue 16 parts 4 and 5): the Python sandbox (www/sandbox.js, www/python-worker.js)
// and the tool loop in the page. The sandbox tests need only the page and Pyodide (served at
// /pyodide/ by serve.sh through scripts/fetch-pyodide.sh); the page test loads the scripted
// checkpoint (examples/make_scripted.rs, made by run.sh into FIXTURES/scripted): Qwen3's real
// vocabulary and chat template, a model whose greedy reply to a user message is
// `<think>…</think><tool_call>{python: print(6*7)}</tool_call>` and, once a `<tool_response>` is
// in its context, "The answer is 42.".
// Registered by run.mjs: `(await import("./agent.mjs")).default(ctx)`.
import fs from "node:fs";
import path from "node:path";

export default function agentTests({ test, ok, page, pageUrl, origin, fixtures, setModel, loadAndWait, idle, openSettings, text, notes, get }) {
  const artifacts = path.join(path.dirname(new URL(import.meta.url).pathname), "artifacts");

  async function freshPage() {
    await page.goto(pageUrl);
    await page.waitForFunction(() => window.qwenChat?.ready === true, null, { timeout: 60000 });
  }

  /** Run Python code in the page's sandbox; the run's record and the text the model would read. */
  async function py(code, opts = {}) {
    if (!page.url().startsWith(pageUrl) || !(await page.evaluate(() => !!window.qwenChat?.ready))) await freshPage();
    return await page.evaluate(async ([code, opts]) => {
      const { formatResult } = await import("/www/sandbox.js");
      const sb = window.qwenChat.sandbox();
      if (opts.timeoutMs) sb.timeoutMs = opts.timeoutMs;
      const t0 = performance.now();
      const r = await sb.run(code);
      return { ...r, text: formatResult(r), wall: (performance.now() - t0) / 1000, restarts: sb.restarts };
    }, [code, opts]);
  }

  test("Python sandbox: Pyodide from our origin; the worker's own response forbids every connection, and the browser refuses its fetch", async () => {
    // Served from /pyodide/ (no CDN), at the version fetch-pyodide.sh pins.
    const pin = fs.readFileSync(path.join(path.dirname(new URL(import.meta.url).pathname), "../../scripts/fetch-pyodide.sh"), "utf8").match(/^VERSION=(\S+)$/m)[1];
    const pkg = await get(`${origin}/pyodide/package.json`);
    ok(pkg.status === 200 && JSON.parse(pkg.body).version === pin, `/pyodide/package.json: ${pkg.status} ${pkg.body.slice(0, 80)}`);
    for (const f of ["pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"]) {
      const r = await get(`${origin}/pyodide/${f}`, { headers: { Range: "bytes=0-15" } });
      ok(r.status === 206, `/pyodide/${f}: ${r.status}`);
    }
    // The worker script gets the sandbox policy, however the path is spelled; the page keeps its own.
    for (const p of ["/www/python-worker.js", "/www/./python-worker.js", "/www/%70ython-worker.js"]) {
      const w = await get(`${origin}${p}`);
      const csp = w.headers["content-security-policy"] || "";
      ok(w.status === 200 && /connect-src 'none'/.test(csp) && /worker-src 'none'/.test(csp) && !/unsafe-eval'/.test(csp.replace("'wasm-unsafe-eval'", "")), `${p}: ${w.status} ${csp}`);
    }
    const other = (await get(`${origin}/www/sandbox.js`)).headers["content-security-policy"] || "";
    ok(/connect-src 'self'/.test(other), `sandbox.js (page code) policy: ${other}`);
    await freshPage();
    // Wall 1 alone (before Python loads, no stand-in yet): the browser's fetch from the worker
    // to our own origin is refused, while the page's own fetch of the same URL works.
    const probe = await page.evaluate(async () => {
      const w = new Worker("/www/python-worker.js", { type: "module" });
      try {
        const got = await new Promise((resolve, reject) => {
          w.onmessage = (e) => resolve(e.data);
          w.onerror = (e) => reject(new Error(e.message));
          w.postMessage({ type: "probe" });
          setTimeout(() => reject(new Error("no answer")), 20000);
        });
        return { got, page: (await fetch("/www/python-worker.js", { cache: "no-store" })).status };
      } finally {
        w.terminate();
      }
    });
    ok(probe.got.type === "probe" && probe.got.reached === false, `the worker reached the network: ${JSON.stringify(probe.got)}`);
    ok(probe.page === 200, `the page's own fetch: ${probe.page}`);
  });

  test("Python sandbox: runs code (print, last expression, tracebacks, variables kept); no network, no eval, no packages from Python", async () => {
    const t0 = Date.now();
    const a = await py("print(6*7)");
    ok(a.ok && a.stdout === "42\n" && a.text === "42", `print: ${JSON.stringify(a)}`);
    const load = (Date.now() - t0) / 1000;
    const info = await page.evaluate(() => window.qwenChat.sandbox().info);
    for (const name of ["fetch", "XMLHttpRequest", "WebSocket", "EventSource", "importScripts", "indexedDB", "caches", "Worker", "BroadcastChannel"]) {
      ok(info.blocked.includes(name), `${name} not taken away: ${info.blocked}`);
    }
    const b = await py("x = 5\nx * 2");
    ok(b.ok && b.result === "10" && b.text === "10", `last expression: ${JSON.stringify(b)}`);
    const c = await py("x + 1");
    ok(c.result === "6", `variables kept between runs: ${JSON.stringify(c)}`);
    const d = await py("def f():\n    return 1/0\nf()");
    ok(!d.ok && /^Traceback/.test(d.error) && /File "<python>", line 3/.test(d.error) && /ZeroDivisionError: division by zero\n?$/.test(d.error) && !/_qwen_run|eval_code/.test(d.error),
      `traceback: ${JSON.stringify(d.error)}`);
    const u = await py("print('é€😀' * 2)");
    ok(u.stdout === "é€😀é€😀\n", `UTF-8 output: ${JSON.stringify(u.stdout)}`);
    // No way out: Python's js module has no fetch; pyodide.http has nothing to fetch with; the
    // page's Pyodide API refuses packages; JS eval is refused by the worker's own policy.
    const escapes = [
      ["import js\njs.fetch('/www/index.html')", /AttributeError: fetch/],
      ["import js\njs.XMLHttpRequest.new()", /AttributeError: XMLHttpRequest/],
      ["from pyodide.http import pyfetch\nawait pyfetch('/www/index.html')", /Error/],
      ["from pyodide.http import open_url\nopen_url('/www/index.html')", /Error/],
      ["import pyodide_js\nawait pyodide_js.loadPackage('numpy')", /installing packages is not possible/],
      ["import micropip", /ModuleNotFoundError/],
      ["import js\njs.Object.constructor('return fetch')()", /EvalError: .*Content Security Policy/],
      ["from pyodide.code import run_js\nrun_js('fetch(\"/www/\")')", /Error/],
      ["import urllib.request\nurllib.request.urlopen('http://127.0.0.1/').read()", /Error/],
      ["import socket\ns = socket.create_connection(('127.0.0.1', 80), timeout=1)", /Error/],
    ];
    for (const [code, want] of escapes) {
      const r = await py(code);
      ok(!r.ok && want.test(r.error), `${JSON.stringify(code)} was not refused as expected: ${JSON.stringify(r.text)}`);
    }
    notes.push(`Python sandbox: Pyodide loaded and ran its first code in ${load.toFixed(1)} s; blocked: ${info.blocked.join(", ")}`);
  });

  test("Python sandbox: an endless loop times out (the worker restarts, the next run works) or is stopped; a huge print is capped; one run at a time", async () => {
    await py("y = 1");
    const t = await py("while True:\n    pass", { timeoutMs: 3000 });
    ok(t.timedOut && !t.ok && t.text.startsWith("timed out after 3 s"), `timeout: ${JSON.stringify(t)}`);
    ok(t.wall >= 2.9 && t.wall < 6, `timed out after ${t.wall} s`);
    const n = await py("print(1 + 1)\ny", { timeoutMs: 10000 });
    ok(n.stdout === "2\n" && !n.ok && /NameError: name 'y' is not defined/.test(n.error) && n.restarts >= 1, `after the timeout: ${JSON.stringify(n)}`);
    // Stop (the page's Stop button aborts the tool's signal): the loop ends at once.
    const stopped = await page.evaluate(async () => {
      const ctl = new AbortController();
      const t0 = performance.now();
      setTimeout(() => ctl.abort(), 500);
      const r = await window.qwenChat.sandbox().run("while True:\n    pass", { signal: ctl.signal });
      return { ...r, wall: (performance.now() - t0) / 1000 };
    });
    ok(stopped.stopped && !stopped.ok && /^stopped/.test(stopped.error) && stopped.wall < 2.5, `stop: ${JSON.stringify(stopped)}`);
    const spam = await py("while True:\n    print('spam')", { timeoutMs: 3000 });
    ok(spam.timedOut, `endless printing: ${JSON.stringify(spam).slice(0, 300)}`);
    const max = await page.evaluate(() => window.qwenChat.sandbox().maxOutput);
    const h = await py("print('x' * 1000000)", { timeoutMs: 10000 });
    ok(h.ok && h.stdout.length === max && h.truncated === 1000001 - max, `cap: ${h.stdout.length} kept, ${h.truncated} dropped (cap ${max})`);
    ok(h.text.endsWith(`[output truncated: ${1000001 - max} more characters not shown]`), `note: ${h.text.slice(-80)}`);
    const big = await py("'y' * 100000");
    ok(big.result.length === max && big.truncated === 100002 - max, `result cap: ${big.result?.length} kept, ${big.truncated} dropped`);
    // One run at a time: the second waits while the first awaits (it would otherwise see busy).
    const both = await page.evaluate(async () => {
      const sb = window.qwenChat.sandbox();
      const a = sb.run("import asyncio\nbusy = True\nawait asyncio.sleep(0.3)\nbusy = False");
      const b = sb.run("busy");
      return [await a, await b];
    });
    ok(both[0].ok && both[1].result === "False", `runs overlapped: ${JSON.stringify(both)}`);
  });

  test("page tools with a stand-in engine (the tool loop and the sandbox are real): Stop during a Python run ends it; the history keeps call and result", async () => {
    await freshPage();
    // An object in the engine's place whose chat.completions.create streams scripted chunks:
    // a python call running an endless loop. Everything else (runTools, the sandbox, the page's
    // display and history) is the real code.
    await page.evaluate(() => {
      const s = window.qwenChat.state;
      const chunk = (delta, finish_reason = null) => ({ choices: [{ index: 0, delta, finish_reason }] });
      s.engine = { chat: { completions: { create: (req) => (async function* () {
        if (req.messages.at(-1).role === "tool") { yield chunk({ content: "never" }, "stop"); return; }
        yield chunk({ role: "assistant", reasoning_content: "Loop." });
        yield chunk({ tool_calls: [{ index: 0, id: "call_loop", type: "function", function: { name: "python", arguments: "" } }] });
        yield chunk({ tool_calls: [{ index: 0, function: { arguments: JSON.stringify({ code: "while True:\n    pass" }) } }] });
        yield chunk({}, "tool_calls");
      })() } }, resetChat: async () => {} };
      s.context = 4096;
      s.toolsSupported = true;
      const t = document.getElementById("tools");
      t.disabled = false;
      t.checked = true;
      document.getElementById("input").disabled = false;
      document.getElementById("send").disabled = false;
    });
    await page.fill("#input", "Loop forever");
    await page.click("#send");
    await page.waitForSelector("#log details.tool-call.running", { timeout: 60000 });
    await page.waitForTimeout(300);
    const t0 = Date.now();
    await page.click("#stop");
    await page.waitForFunction(() => !window.qwenChat.state.generating, null, { timeout: 10000 });
    ok(Date.now() - t0 < 5000, `Stop took ${Date.now() - t0} ms`);
    const v = await page.evaluate(() => {
      const d = document.querySelector("#log details.tool-call");
      return { summary: d.querySelector("summary").textContent, args: d.querySelector(".tool-args").textContent, failed: d.classList.contains("failed"),
        stopped: d.closest(".msg").classList.contains("stopped"), history: window.qwenChat.state.history, stats: document.getElementById("stats").textContent };
    });
    ok(v.failed && /^✗ python: stopped/.test(v.summary) && v.args === "while True:\n    pass", `call: ${JSON.stringify(v)}`);
    ok(JSON.stringify(v.history.map((m) => m.role)) === JSON.stringify(["user", "assistant", "tool", "assistant"]) && /^stopped/.test(v.history[2].content), `history ${JSON.stringify(v.history)}`);
    ok(v.stopped && /stopped/.test(v.stats), `stopped marks: ${JSON.stringify(v)}`);
    const after = await page.evaluate(async () => (await window.qwenChat.sandbox().run("print('back')")).stdout);
    ok(after === "back\n", `Python after Stop: ${JSON.stringify(after)}`);
  });

  const scripted = fixtures && path.join(fixtures, "scripted");
  if (!scripted || !fs.existsSync(path.join(scripted, "tokenizer_config.json"))) {
    test("page tools: no scripted checkpoint (run.sh makes it with examples/make_scripted.rs): skipped", async () => {});
    return;
  }

  test("page tools: the scripted model calls python; the page runs it in the sandbox, shows call and result folded, feeds it back, and the model answers", async () => {
    await freshPage();
    await setModel(`${origin}/models/scripted/`, "");
    await loadAndWait();
    ok(/^Loaded /.test(await text("#model-status")), `load: ${await text("#model-status")} ${await text("#error")}`);
    const info = await page.evaluate(() => window.qwenChat.state.engine.info());
    ok(info.chatTemplate === "jinja", `chatTemplate ${info.chatTemplate}`);
    ok(await page.locator("#tools").isChecked() && await page.locator("#tools").isEnabled(), "Tools not on by default for a template with tool calls");
    await openSettings();
    await page.fill("#max-tokens", "96");
    await page.fill("#temperature", "0");
    // Record what each completion was asked (the tool loop's second request carries the result).
    await page.evaluate(() => {
      const c = window.qwenChat.state.engine.chat.completions;
      const create = c.create;
      window.__requests = [];
      c.create = (req) => { window.__requests.push(JSON.parse(JSON.stringify({ ...req, signal: undefined }))); return create(req); };
    });
    await page.fill("#input", "What is 6 times 7?");
    await page.click("#send");
    await idle();
    ok(!(await page.locator("#error").isVisible()), `error: ${await text("#error")}`);
    const view = await page.evaluate(() => {
      const m = [...document.querySelectorAll("#log .msg.assistant")].pop();
      const calls = [...m.querySelectorAll("details.tool-call")].map((d) => ({
        summary: d.querySelector("summary").textContent, args: d.querySelector(".tool-args").textContent,
        result: d.querySelector(".tool-result").textContent, open: d.open, failed: d.classList.contains("failed"),
      }));
      const th = m.querySelector("details.thinking");
      return {
        calls, thinking: th && { summary: th.querySelector("summary").textContent, text: th.querySelector(".thinking-text").textContent, open: th.open },
        answer: [...m.querySelectorAll(".body")].pop()?.textContent, order: [...m.children].map((c) => c.className),
        elements: m.querySelectorAll("script, img, iframe").length,
      };
    });
    ok(view.calls.length === 1, `tool calls shown: ${JSON.stringify(view)}`);
    const call = view.calls[0];
    ok(call.args === "print(6*7)" && call.result === "42" && !call.open && !call.failed, `call: ${JSON.stringify(call)}`);
    ok(/^✓ python: 42 \([\d.]+ s\)$/.test(call.summary), `summary: ${call.summary}`);
    ok(view.thinking && view.thinking.text === "I should run Python" && !view.thinking.open && /^Thought for/.test(view.thinking.summary), `thinking: ${JSON.stringify(view.thinking)}`);
    ok(view.answer === "The answer is 42.", `answer: ${JSON.stringify(view.answer)}`);
    ok(view.order.indexOf("thinking") < view.order.indexOf("tool-call") && view.order.indexOf("tool-call") < view.order.lastIndexOf("body"), `order: ${view.order}`);
    ok(view.elements === 0, "markup in the reply");
    // The conversation the page keeps, and what the second completion was sent.
    const h = await page.evaluate(() => window.qwenChat.state.history);
    ok(JSON.stringify(h.map((m) => m.role)) === JSON.stringify(["user", "assistant", "tool", "assistant"]), `history ${JSON.stringify(h)}`);
    const tc = h[1].tool_calls?.[0];
    ok(tc?.function?.name === "python" && JSON.parse(tc.function.arguments).code === "print(6*7)" && h[2].tool_call_id === tc.id && h[2].content === "42", `history ${JSON.stringify(h)}`);
    ok(h[3].content === "The answer is 42.", `final ${JSON.stringify(h[3])}`);
    const reqs = await page.evaluate(() => window.__requests);
    ok(reqs.length === 2, `completions: ${reqs.length}`);
    ok(reqs.every((r) => JSON.stringify(r.tools.map((t) => t.function.name).sort()) === JSON.stringify(["calculator", "current_time", "python"])), "tools offered");
    const toolMsg = reqs[1].messages.find((m) => m.role === "tool");
    ok(toolMsg?.content === "42" && toolMsg.tool_call_id === tc.id, `second request: ${JSON.stringify(reqs[1].messages)}`);
    // The model only answers after a <tool_response> is in its prompt (make_scripted.rs); the
    // second prompt holds the first plus the reply and the result.
    const stats = await text("#stats");
    ok(/1 tool round/.test(stats), `stats: ${stats}`);
    await page.evaluate(() => {
      for (const d of document.querySelectorAll("#log details")) d.open = true;
      document.getElementById("model-panel").open = false;
      document.getElementById("settings").open = false;
      window.scrollTo(0, 0);
    });
    await page.screenshot({ path: path.join(artifacts, "chat-tools.png"), fullPage: true });
    notes.push(`page tools: ${stats}`);
  });

  test("page tools: Tools off sends no tools; New chat starts a fresh Python session", async () => {
    await page.evaluate(() => window.qwenChat.sandbox().run("kept = 1"));
    await page.click("#new-chat");
    const r = await page.evaluate(async () => (await window.qwenChat.sandbox().run("kept")).error);
    ok(/NameError/.test(r || ""), `a new chat kept Python's variables: ${r}`);
    await page.uncheck("#tools");
    await page.evaluate(() => { window.__requests = []; });
    await page.fill("#input", "Hi");
    await page.click("#send");
    await idle();
    const reqs = await page.evaluate(() => window.__requests);
    ok(reqs.length === 1 && reqs[0].tools === undefined, `request with Tools off: ${JSON.stringify(reqs.map((x) => x.tools))}`);
    ok((await page.locator("#log details.tool-call").count()) === 0, "a tool call shown with Tools off");
    await page.check("#tools");
  });
}
