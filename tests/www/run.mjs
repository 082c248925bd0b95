// End-to-end test of the chat page: scripts/serve.sh serves www/, pkg/ and FIXTURES at /models/;
// headless Chromium (SwiftShader WebGPU) uses the page as a person would.
// Usage (from run.sh): FIXTURES=dir ROOT=repo node run.mjs   (FILTER=substring runs a subset)
import { createRequire } from "node:module";
import { spawn } from "node:child_process";
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";

const here = path.dirname(new URL(import.meta.url).pathname);
const root = process.env.ROOT || path.resolve(here, "../..");
const fixtures = process.env.FIXTURES;
const filter = process.env.FILTER || "";
const artifacts = path.join(here, "artifacts");
fs.mkdirSync(artifacts, { recursive: true });
const { chromium } = createRequire(path.join(root, "tests/web/package.json"))("playwright-core");

// ------------------------------------------------------------------ serve.sh
const server = spawn(path.join(root, "scripts/serve.sh"), [], {
  env: { ...process.env, PORT: "0", MODELS: fixtures },
  stdio: ["ignore", "pipe", "inherit"],
});
const pageUrl = await new Promise((resolve, reject) => {
  let out = "";
  const t = setTimeout(() => reject(new Error(`serve.sh printed no URL: ${out}`)), 600000);
  server.stdout.on("data", (d) => {
    out += d;
    const m = out.match(/Qwen chat: (http:\/\/\S+\/www\/)/);
    if (m) { clearTimeout(t); resolve(m[1]); }
  });
  server.on("exit", (c) => reject(new Error(`serve.sh exited ${c}: ${out}`)));
});
const origin = new URL(pageUrl).origin;
const modelUrl = `${origin}/models/vocab/`;

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "qwen-www-chromium-"));
const browser = await chromium.launchPersistentContext(userDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1000, height: 900 },
  args: [
    "--enable-unsafe-webgpu", "--no-sandbox", "--headless=new", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    "--enable-features=Vulkan,WebGPU", "--use-webgpu-adapter=swiftshader",
  ],
});
// Content-Security-Policy: every violation (a page's event, a console report, a worker's console)
// fails the test that was running.
const csp = [];
await browser.exposeBinding("__qwenCspViolation", (_src, v) => { csp.push(v); });
await browser.addInitScript(() => {
  document.addEventListener("securitypolicyviolation", (e) =>
    window.__qwenCspViolation?.(`${e.effectiveDirective}: ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`));
});
const cspConsole = (t) => /Content Security Policy|Refused to (load|execute|connect|create|apply|compile)/i.test(t);
const page = await browser.newPage();
const logs = [];
const dialogs = [];
page.on("console", (m) => { logs.push(`[console.${m.type()}] ${m.text()}`); if (cspConsole(m.text())) csp.push(`console: ${m.text()}`); });
page.on("worker", (w) => w.on?.("console", (m) => { if (cspConsole(m.text())) csp.push(`worker console: ${m.text()}`); }));
page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}`));
page.on("dialog", async (d) => { dialogs.push(`${d.type()}: ${d.message()}`); await d.dismiss(); });

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
const ok = (c, what) => { if (!c) throw new Error(what); };
const text = (sel) => page.locator(sel).textContent();
const visible = (sel) => page.locator(sel).isVisible();
const notes = [];

async function setModel(url, budget = "") {
  if (!(await page.locator("#model-panel").evaluate((d) => d.open))) await page.click("#model-panel > summary");
  await page.fill("#model-url", url);
  await page.fill("#gpu-budget", budget);
}
async function loadAndWait() {
  await page.click("#load");
  // Done when the Load button is enabled again and Cancel is hidden.
  await page.waitForFunction(() => !document.getElementById("load").disabled && document.getElementById("cancel-load").hidden, null, { timeout: 180000 });
}
/** Count text updates of the newest assistant bubble while `action` runs. */
async function watchReply() {
  await page.evaluate(() => {
    window.__updates = 0;
    window.__obs?.disconnect();
    window.__obs = new MutationObserver(() => {
      const last = [...document.querySelectorAll("#log .msg.assistant .body")].pop();
      if (last && last.textContent) window.__updates++;
    });
    window.__obs.observe(document.getElementById("log"), { childList: true, subtree: true, characterData: true });
  });
}
async function openSettings() {
  if (!(await page.locator("#settings").evaluate((d) => d.open))) await page.click("#settings > summary");
}
const idle = () => page.waitForFunction(() => !window.qwenChat.state.generating && !document.getElementById("send").disabled, null, { timeout: 180000 });

// ------------------------------------------------------------------ tests

// ------------------------------------------------------------------ serve.sh itself (node, no browser)

/** One request to a server, with the Host header given; never hangs (5 s). */
function get(url, { host, headers = {}, timeout = 5000 } = {}) {
  const u = new URL(url);
  return new Promise((resolve) => {
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: "GET",
      setHost: host !== "", headers: { ...(host ? { Host: host } : {}), ...headers } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", (e) => resolve({ status: -1, error: e.message }));
    });
    req.setTimeout(timeout, () => { req.destroy(); resolve({ status: -2, error: "timed out" }); });
    req.on("error", (e) => resolve({ status: -1, error: e.message }));
    req.end();
  });
}

// Probe files under MODELS: links out of it, a Hugging Face cache layout, odd file kinds.
const probe = path.join(fixtures, "probe");
fs.rmSync(probe, { recursive: true, force: true });
const hfRepo = path.join(probe, "hub/models--org--tiny");
fs.mkdirSync(path.join(hfRepo, "blobs"), { recursive: true });
fs.mkdirSync(path.join(hfRepo, "snapshots/rev1"), { recursive: true });
fs.writeFileSync(path.join(hfRepo, "blobs/0123abcd"), '{"from":"blob"}');
fs.symlinkSync("../../blobs/0123abcd", path.join(hfRepo, "snapshots/rev1/config.json"));
fs.symlinkSync("/etc/passwd", path.join(hfRepo, "snapshots/rev1/passwd.json"));
fs.writeFileSync(path.join(hfRepo, "snapshots/rev1/noread.bin"), "secret");
fs.chmodSync(path.join(hfRepo, "snapshots/rev1/noread.bin"), 0o000);
fs.writeFileSync(path.join(probe, "ok.txt"), "ok");
fs.symlinkSync("/etc/passwd", path.join(probe, "passwd.json"));
fs.symlinkSync(path.join(root, "scripts"), path.join(probe, "scripts-link"));
fs.symlinkSync("ok.txt", path.join(probe, "inside-link.txt"));
fs.symlinkSync("/nonexistent/file", path.join(probe, "dangling.json"));
fs.mkdirSync(path.join(probe, "dir.json"));
spawn("mkfifo", [path.join(probe, "fifo.bin")]).on("exit", () => {});
await new Promise((r) => setTimeout(r, 200));
const serverPort = new URL(origin).port;

test("serve.sh: only localhost names with our port are served (DNS rebinding gets 421)", async () => {
  for (const host of [`127.0.0.1:${serverPort}`, `localhost:${serverPort}`, `LOCALHOST:${serverPort}`, `[::1]:${serverPort}`]) {
    const r = await get(`${origin}/www/`, { host });
    ok(r.status === 200, `Host ${host}: ${r.status}`);
  }
  for (const [host, what] of [[`evil.example:${serverPort}`, "/www/"], [`attacker.test:${serverPort}`, "/models/vocab/config.json"],
    [`evil.example:${serverPort}`, "/pkg/index.js"], ["localhost", "/www/"], [`127.0.0.1:1`, "/www/"], [`127.0.0.1.evil.example:${serverPort}`, "/www/"], ["", "/www/"]]) {
    const r = await get(`${origin}${what}`, { host });
    // (No Host at all: Node's parser answers 400 before the handler runs.)
    ok(r.status === 421 || r.status === 403 || (host === "" && r.status === 400), `Host "${host}" ${what}: ${r.status}`);
    ok(!r.body.includes("<html") && !r.body.includes("vocab_size") && !r.body.includes("export"), `Host "${host}" ${what}: content served`);
  }
});

test("serve.sh: symlinks only to files inside the served folder (or a Hugging Face cache's blobs/); odd files and dot-dots refused", async () => {
  const st = async (p) => (await get(`${origin}${p}`)).status;
  ok((await get(`${origin}/models/probe/ok.txt`)).body === "ok", "a plain file");
  ok((await get(`${origin}/models/probe/inside-link.txt`)).body === "ok", "a link inside MODELS");
  const hf = await get(`${origin}/models/probe/hub/models--org--tiny/snapshots/rev1/config.json`);
  ok(hf.status === 200 && hf.body === '{"from":"blob"}', `HF snapshot link to ../../blobs: ${hf.status}`);
  for (const p of ["/models/probe/passwd.json", "/models/probe/scripts-link/serve.sh", "/models/probe/hub/models--org--tiny/snapshots/rev1/passwd.json"]) {
    const r = await get(`${origin}${p}`);
    ok(r.status === 403 && !r.body.includes("root:"), `${p}: ${r.status} ${r.body.slice(0, 60)}`);
  }
  for (const p of ["/models/probe/dangling.json", "/models/probe/dir.json", "/models/probe/fifo.bin", "/models/probe/nope"]) {
    ok((await st(p)) === 404, `${p}: ${await st(p)}`);
  }
  for (const p of ["/models/..%2fscripts/serve.sh", "/models/..%2f..%2f..%2fscripts%2fserve.sh", "/www/..%2fscripts/serve.sh", "/pkg/..%2f..%2fREADME.md", "/models/%2e%2e/run.mjs"]) {
    const r = await get(`${origin}${p}`);
    ok(r.status === 403 || r.status === 404, `${p}: ${r.status}`);
    ok(!r.body.includes("#!/usr/bin/env"), `${p}: served a file outside`);
  }
  ok((await st("/www/")) === 200, "the server still answers");
});

test("serve.sh: a file it cannot read is an HTTP error and the server lives on (MODELS = a HF snapshot folder)", async () => {
  // chmod 000 stops only a non-root reader: as root, run the server as nobody.
  const snap = path.join(hfRepo, "snapshots/rev1");
  const asRoot = process.getuid?.() === 0;
  const cmd = asRoot ? "setpriv" : process.execPath;
  const args = asRoot ? ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, path.join(root, "scripts/serve.mjs")] : [path.join(root, "scripts/serve.mjs")];
  const child = spawn(cmd, args, { env: { ...process.env, SERVE_ROOT: root, SERVE_PORT: "0", SERVE_MODELS: snap }, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => { err += d; });
  try {
    const url = await new Promise((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d) => { out += d; const m = out.match(/Qwen chat: (http:\/\/\S+)\/www\//); if (m) resolve(m[1]); });
      child.on("exit", (c) => reject(new Error(`serve.mjs exited ${c}: ${out} ${err}`)));
      setTimeout(() => reject(new Error(`serve.mjs printed no URL: ${out} ${err}`)), 10000);
    });
    const r = await get(`${url}/models/noread.bin`);
    ok(r.status === 403 && !r.body.includes("secret"), `unreadable file: ${r.status} ${r.error || ""}`);
    const r2 = await get(`${url}/models/noread.bin`, { headers: { Range: "bytes=0-1" } });
    ok(r2.status === 403, `unreadable file, Range: ${r2.status} ${r2.error || ""}`);
    ok(child.exitCode === null, `the server died: ${err}`);
    const c = await get(`${url}/models/config.json`);
    ok(c.status === 200 && c.body === '{"from":"blob"}', `MODELS = snapshot folder: its link into ../../blobs: ${c.status}`);
    ok((await get(`${url}/models/passwd.json`)).status === 403, "a link out of the HF repo");
  } finally {
    child.kill();
  }
});

test("CSP: serve.sh sends the policy, the pages carry it, an injected inline script does not run", async () => {
  const r = await get(pageUrl);
  const header = r.headers["content-security-policy"] || "";
  for (const d of ["default-src 'none'", "script-src 'self' 'wasm-unsafe-eval'", "worker-src 'self'", "style-src 'self'", "connect-src 'self' https:", "frame-ancestors 'none'"]) {
    ok(header.includes(d), `header lacks ${d}: ${header}`);
  }
  ok(!header.includes("'unsafe-inline'") && !header.includes("'unsafe-eval'"), `header allows inline or eval: ${header}`);
  for (const f of ["index.html", "bench.html"]) {
    const html = fs.readFileSync(path.join(root, "www", f), "utf8");
    const meta = html.match(/<meta http-equiv="Content-Security-Policy" content="([^"]+)">/);
    ok(meta && header.startsWith(meta[1].replace(/;\s*$/, "")), `${f}: meta CSP ${meta && meta[1]} is not the header's`);
    ok(!/<script(?![^>]*\bsrc=)/.test(html) && !/\sstyle=/.test(html) && !/<style/.test(html), `${f}: inline script or style`);
  }
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.qwenChat?.ready === true, null, { timeout: 60000 });
  const n = csp.length;
  const ran = await page.evaluate(async () => {
    const s = document.createElement("script");
    s.textContent = "window.__inlineRan = true";
    document.body.append(s);
    await new Promise((r) => setTimeout(r, 300));
    return window.__inlineRan === true;
  });
  await page.waitForTimeout(300);
  ok(!ran, "an inline script ran");
  ok(csp.length > n, "the blocked inline script raised no securitypolicyviolation");
  csp.splice(n); // expected here
});


test("page opens with WebGPU available and a default Qwen URL", async () => {
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.qwenChat?.ready === true, null, { timeout: 60000 });
  ok(!(await visible("#gpu-status")), `WebGPU problem shown: ${await text("#gpu-status")}`);
  const v = await page.inputValue("#model-url");
  ok(v === "https://huggingface.co/Qwen/Qwen-1_8B-Chat/resolve/main/", `default URL ${v}`);
  ok((await page.inputValue("#weights")) === "q4", "weights default q4");
  await page.selectOption("#preset", { label: "Qwen2.5-0.5B-Instruct" });
  ok((await page.inputValue("#model-url")).includes("/Qwen/Qwen2.5-0.5B-Instruct/resolve/main/"), "preset fills the URL");
  ok(await page.locator("#folder[webkitdirectory]").count() === 1, "local folder input");
});

test("a bad model URL shows an error in the page", async () => {
  await setModel(`${origin}/models/nope/`);
  await loadAndWait();
  ok(await visible("#error"), "no error shown");
  const e = await text("#error");
  ok(/config\.json/.test(e) && /404/.test(e), `error text: ${e}`);
  ok(await page.locator("#input").isDisabled(), "chat stays disabled");
  await setModel("http://127.0.0.1:9/none/");
  await loadAndWait();
  const e2 = await text("#error");
  ok(/^Network error/.test(e2), `network error text: ${e2}`);
  notes.push(`bad URL -> "${e.slice(0, 90)}…"`, `unreachable -> "${e2.slice(0, 90)}…"`);
});

test("a model too big for the GPU limit is refused with a clear message", async () => {
  await setModel(modelUrl, "1");
  await loadAndWait();
  const e = await text("#error");
  ok(/too big for this GPU/.test(e), `error text: ${e}`);
});

test("loads the tiny checkpoint from the URL field with a progress bar", async () => {
  await setModel(modelUrl, "");
  const seen = [];
  const poll = setInterval(async () => { try { seen.push(await text("#progress-text")); } catch { /* page busy */ } }, 100);
  const t0 = Date.now();
  await loadAndWait();
  clearInterval(poll);
  ok(!(await visible("#error")), `load error: ${await text("#error")}`);
  const status = await text("#model-status");
  ok(/^Loaded /.test(status), `status: ${status}`);
  ok(!(await page.locator("#input").isDisabled()), "input enabled");
  const final = await text("#progress-text");
  ok(/Ready/.test(final), `progress end: ${final}`);
  ok(seen.some((s) => /\d+(\.\d)? [KM]?B of .*\(\d+%\)/.test(s)), `bytes/percent in progress: ${JSON.stringify(seen.slice(-5))}`);
  ok((await page.locator("#progress").evaluate((p) => p.value)) === 1, "bar full");
  // The system prompt box starts empty and names the default the engine adds: the crate's.
  const rs = fs.readFileSync(path.join(root, "src/tokenizer/chat.rs"), "utf8");
  const system = JSON.parse(rs.match(/default_system: ("(?:[^"\\]|\\.)*")/)[1]);
  ok((await page.inputValue("#system")) === "", "system prompt box starts empty");
  const placeholder = await page.getAttribute("#system", "placeholder");
  ok(placeholder.includes(system), `placeholder ${placeholder} names ${system}`);
  notes.push(`load ${((Date.now() - t0) / 1000).toFixed(1)}s: ${status}`);
  // It is now in the Cache API: the page says so and offers to delete it.
  await setModel(modelUrl + "x");
  await setModel(modelUrl);
  await page.waitForSelector("#cache-status:not([hidden])", { timeout: 10000 });
  ok(/already in the browser cache/.test(await text("#cache-text")), "cache notice");
});

test("Enter sends, Shift+Enter is a newline; the reply streams in (several DOM updates) with stats", async () => {
  await openSettings();
  await page.fill("#max-tokens", "24");
  await page.focus("#input");
  await page.keyboard.type("Hello");
  await page.keyboard.press("Shift+Enter");
  await page.keyboard.type("Qwen!");
  ok((await page.inputValue("#input")) === "Hello\nQwen!", "Shift+Enter adds a newline");
  await watchReply();
  await page.keyboard.press("Enter");
  await page.waitForSelector("#log .msg.user");
  await idle();
  const users = await page.locator("#log .msg.user .body").allTextContents();
  ok(users[0] === "Hello\nQwen!", `user bubble ${JSON.stringify(users)}`);
  const reply = await page.locator("#log .msg.assistant .body").last().textContent();
  const updates = await page.evaluate(() => window.__updates);
  ok(reply.length > 0, "empty reply");
  ok(updates >= 3, `only ${updates} DOM updates`);
  const stats = await text("#stats");
  ok(/TTFT [\d.]+ s · [\d.]+ tok\/s/.test(stats), `stats: ${stats}`);
  ok((await page.inputValue("#input")) === "", "input cleared");
  notes.push(`reply: ${updates} updates, ${reply.length} chars; ${stats}`);
});

// Ask for a long reply and wait until it is streaming.
async function startLongReply() {
  await openSettings();
  await page.fill("#max-tokens", "4000");
  await page.fill("#input", "Tell me a very long story.");
  await watchReply();
  await page.click("#send");
  await page.waitForFunction(() => window.__updates >= 3, null, { timeout: 120000 });
}

test("Stop mid-stream, then send again (multi-turn history)", async () => {
  await startLongReply();
  ok(await page.locator("#stop").isEnabled(), "Stop enabled while streaming");
  await page.click("#stop");
  await idle();
  const last = page.locator("#log .msg.assistant").last();
  ok(await last.evaluate((m) => m.classList.contains("stopped")), "bubble marked stopped");
  ok(/stopped/.test(await text("#stats")), `stats after stop: ${await text("#stats")}`);
  const before = await page.locator("#log .msg.assistant .body").last().textContent();
  await page.waitForTimeout(500);
  ok((await page.locator("#log .msg.assistant .body").last().textContent()) === before, "text still growing after Stop");
  ok(await page.locator("#stop").isDisabled(), "Stop disabled after stop");
  await page.fill("#max-tokens", "12");
  await page.fill("#input", "And another?");
  await watchReply();
  await page.keyboard.press("Enter"); // focus is still on the input? make sure
  if (!(await page.evaluate(() => window.qwenChat.state.generating)) && (await page.inputValue("#input"))) await page.click("#send");
  await idle();
  const h = await page.evaluate(() => window.qwenChat.state.history.map((m) => m.role));
  ok(JSON.stringify(h) === JSON.stringify(["user", "assistant", "user", "assistant", "user", "assistant"]), `history ${h}`);
  ok((await page.locator("#log .msg.assistant .body").last().textContent()).length > 0, "reply after stop");
  // The history sent again was found in the KV cache: only the new turn was prefilled.
  const turnStats = await text("#stats");
  ok(/\d+ prompt \(\d+ already in the cache\)/.test(turnStats), `stats of a later turn: ${turnStats}`);
  notes.push(`third turn: ${turnStats}`);
});

test("model output containing HTML is shown as text (no element, no alert)", async () => {
  const evil = "<img src=x onerror=alert(1)> and <script>alert(2)</script>";
  await page.evaluate((s) => {
    const body = window.qwenChat.addMessage("assistant", "");
    window.qwenChat.renderText(body, "partial <im");
    window.qwenChat.renderText(body, s);
    body.id = "evil";
  }, evil);
  await page.waitForTimeout(500);
  ok((await page.locator("#log img, #log script").count()) === 0, "an <img>/<script> element was created");
  ok((await page.locator("#evil").textContent()) === evil, "text differs");
  ok(await page.locator("#evil").isVisible(), "not visible");
  ok(await page.getByText("<img src=x onerror=alert(1)>").first().isVisible(), "markup not visible as text");
  ok(dialogs.length === 0, `dialogs fired: ${dialogs}`);
});

test("keyboard: every control has a label and Tab reaches the composer", async () => {
  const unlabeled = await page.evaluate(() => [...document.querySelectorAll("input, select, textarea")]
    .filter((e) => !e.labels?.length && !e.getAttribute("aria-label")).map((e) => e.id));
  ok(unlabeled.length === 0, `unlabelled: ${unlabeled}`);
  await page.focus("#input");
  await page.keyboard.press("Tab");
  const f = await page.evaluate(() => document.activeElement.id);
  ok(f === "send", `Tab from the input goes to ${f}`);
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  ok(outline !== "none", "no visible focus");
});

test("screenshot; a phone-sized screen has no horizontal scroll", async () => {
  await page.evaluate(() => {
    document.getElementById("evil")?.parentElement.remove();
    document.getElementById("model-panel").open = false;
    document.getElementById("settings").open = false;
    window.scrollTo(0, 0);
  });
  await page.screenshot({ path: path.join(artifacts, "chat.png"), fullPage: true });
  await page.setViewportSize({ width: 375, height: 740 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(200);
  const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  ok(over <= 0, `page is ${over}px wider than the phone screen`);
  await page.screenshot({ path: path.join(artifacts, "chat-phone.png"), fullPage: false });
  await page.setViewportSize({ width: 1000, height: 900 });
});

test("GPU device lost mid-stream: the page says so as text, offers Reload model, and the chat goes on after it", async () => {
  await startLongReply();
  // Test-only hook of the engine (engine._loseDeviceForTest destroys its GPUDevice).
  await page.evaluate(() => window.qwenChat.state.engine._loseDeviceForTest());
  await page.waitForSelector("#lost:not([hidden])", { timeout: 30000 });
  await page.waitForFunction(() => !window.qwenChat.state.generating, null, { timeout: 30000 });
  const lostText = await text("#lost-text");
  ok(/GPU device was lost \(destroyed: /.test(lostText), `lost notice: ${lostText}`);
  ok((await page.locator("#lost-text").evaluate((n) => n.childElementCount)) === 0, "the notice holds elements");
  ok(await page.locator("#input").isDisabled(), "input enabled after the loss");
  ok(await page.locator("#send").isDisabled(), "Send enabled after the loss");
  ok(await page.locator("#reload-model").isVisible(), "no Reload model button");
  await page.click("#reload-model");
  await page.waitForFunction(() => !document.getElementById("load").disabled && document.getElementById("cancel-load").hidden && !document.getElementById("input").disabled, null, { timeout: 180000 });
  ok(!(await visible("#lost")), "the loss notice stays after the reload");
  ok(/^Loaded /.test(await text("#model-status")), `status after reload: ${await text("#model-status")}`);
  await page.fill("#max-tokens", "12");
  await page.fill("#input", "Are you back?");
  await watchReply();
  await page.click("#send");
  await idle();
  ok((await page.locator("#log .msg.assistant .body").last().textContent()).length > 0, "no reply after the reload");
  ok(!(await visible("#lost")), "loss notice after a good turn");
});

test("New chat clears the conversation", async () => {
  await page.click("#new-chat");
  ok((await page.locator("#log .msg").count()) === 0, "log not empty");
  ok((await page.evaluate(() => window.qwenChat.state.history.length)) === 0, "history not empty");
});

test("the cached model can be deleted from the page", async () => {
  await setModel(modelUrl);
  await page.waitForSelector("#cache-status:not([hidden])", { timeout: 10000 });
  await page.click("#cache-delete");
  await page.waitForFunction(() => /Deleted [1-9]\d* cached file/.test(document.getElementById("cache-text").textContent), null, { timeout: 10000 });
  ok(!(await page.evaluate(async (u) => (await import("/pkg/index.js")).hasModelInCache(u), modelUrl)), "still cached");
});

// ------------------------------------------------------------------ benchmark page (bench.html)

// A reduced Qwen-1.8B shape, so SwiftShader gets through it in seconds.
const BENCH = { layers: 1, vocab: 1024, weights: "q4", kv: "f32", prefill: [4, 8], decodeAt: [4], decodeTokens: 2 };
const benchQuery = `layers=${BENCH.layers}&vocab=${BENCH.vocab}&weights=${BENCH.weights}&kv=${BENCH.kv}` +
  `&prefill=${BENCH.prefill.join(",")}&decode_at=${BENCH.decodeAt.join(",")}&decode_tokens=${BENCH.decodeTokens}`;

/** GPU bytes of this shape, from the buffers the engine allocates (src/model/weights.rs, state.rs):
 *  every storage buffer is a whole number of 16-byte units (src/gpu/mod.rs). */
function expectedBenchBytes() {
  const [d, ff, heads, hd, L, V] = [2048, 5504, 16, 128, BENCH.layers, BENCH.vocab];
  const q = heads * hd, qkv = q + 2 * heads * hd;
  const buf = (n) => Math.ceil(n / 16) * 16;
  const q4 = (rows, cols) => rows * (cols / 8 * 4 + cols / 32 * 2); // every width here is a multiple of 64
  const layer = buf(q4(qkv, d)) + buf(q4(d, q)) + buf(q4(2 * ff, d)) /* gate|up */ + buf(q4(d, ff)) + 2 * buf(4 * d) + buf(4 * qkv); // + norms, qkv bias
  const weights = 2 * buf(q4(V, d)) + L * layer + buf(4 * d);
  const ctx = Math.max(...BENCH.prefill, ...BENCH.decodeAt) + BENCH.decodeTokens + 1;
  const t = Math.min(128, ctx);
  const partials = 2 * heads * 32 * (hd + 2) * 4; // split-K attention (ops::attention_partials_bytes)
  const acts = buf(4 * t) + 2 * buf(4 * t * d) + buf(4 * t * qkv) + 2 * buf(4 * t * q) + buf(partials) + buf(4 * t * 2 * ff) /* gate|up */ + buf(4 * t * ff) /* act */ +
    buf(4 * t * (hd + 1)) + buf(4 * V) /* logits */ + 16 /* next */ + buf(4 * Math.ceil(V / 32)) /* sampler's penalised-token bits */ + 2 * 16 /* next readbacks */ + 4 * V /* logits readback */;
  const kv = 2 * L * buf(ctx * heads * hd * 4);
  return { bytes: weights + acts + kv, ctx, weightsPerToken: q4(qkv, d) + q4(d, q) + 2 * q4(ff, d) + q4(d, ff) + q4(V, d) + q4(1, d) };
}

test("bench page: the chat page links to it; bad query options show as text, with no element", async () => {
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.qwenChat?.ready === true, null, { timeout: 60000 });
  await page.click("a[href='bench.html']");
  await page.waitForFunction(() => window.qwenBench?.ready === true, null, { timeout: 60000 });
  ok((await page.inputValue("#layers")) === "24" && (await page.inputValue("#vocab")) === "151936", "CLI defaults");
  ok((await page.inputValue("#prefill")) === "128,1024" && (await page.inputValue("#decode-at")) === "128,2048", "CLI default lengths");
  const evil = "<img src=x onerror=alert(1)>";
  await page.goto(`${pageUrl}bench.html?weights=${encodeURIComponent(evil)}&autorun=1`);
  await page.waitForFunction(() => window.qwenBench?.ready === true, null, { timeout: 60000 });
  const e = await text("#error");
  ok(e.includes(`weights=${evil} is not one of f16, q8, q4`), `error: ${e}`);
  ok((await page.locator("main img").count()) === 0 && dialogs.length === 0, "markup from the query became an element");
  ok(!(await page.evaluate(() => window.qwenBench.state.running || window.qwenBench.state.done)), "ran with a bad option");
  await page.goto(`${pageUrl}bench.html?layers=1&prefill=8,x&autorun=1`);
  await page.waitForFunction(() => window.qwenBench?.state.done === true, null, { timeout: 60000 });
  const e2 = await text("#error");
  ok(/Prefill lengths: "x" is not a whole number/.test(e2), `error: ${e2}`);
  ok(await page.locator("#results").isHidden(), "results shown after an error");
});

test("bench page: runs the benchmark in the browser and shows every figure", async () => {
  const t0 = Date.now();
  await page.goto(`${pageUrl}bench.html?${benchQuery}&autorun=1`);
  const seen = [];
  const poll = setInterval(async () => { try { seen.push(await text("#progress-text")); } catch { /* navigating */ } }, 200);
  try {
    await page.waitForFunction(() => window.qwenBench?.state.done === true, null, { timeout: 420000 });
  } finally {
    clearInterval(poll);
  }
  ok(!(await visible("#error")), `bench error: ${await text("#error")}`);
  ok(seen.some((s) => /Making random weights: .* of .*\(\d+%\)/.test(s)) || seen.some((s) => /Measuring: /.test(s)), `progress: ${JSON.stringify(seen.slice(-6))}`);
  const r = await page.evaluate(() => window.qwenBench.state.report);
  const exp = expectedBenchBytes();
  const num = (k) => { ok(typeof r[k] === "number" && Number.isFinite(r[k]), `${k} missing: ${JSON.stringify(r)}`); return r[k]; };
  ok(/swiftshader/i.test(r.adapter), `adapter ${r.adapter}`);
  ok(r.model === `Qwen-1.8B-shaped, random weights, ${BENCH.layers} layers, vocab ${BENCH.vocab}`, `model ${r.model}`);
  ok(num("parameters") === BENCH.vocab * 2048 * 2 + BENCH.layers * (2 * 2048 + 6144 * 2048 + 2048 * 2048 + 3 * 2048 * 5504 + 6144) + 2048, `parameters ${r.parameters}`);
  ok(r.weight_format === "q4" && r.kv_cache_format === "f32", "formats");
  ok(num("context") === exp.ctx, `context ${r.context} != ${exp.ctx}`);
  ok(num("gpu_bytes_allocated") === exp.bytes, `gpu bytes ${r.gpu_bytes_allocated} != expected ${exp.bytes}`);
  ok(num("weight_bytes_per_token") === exp.weightsPerToken, `weight bytes ${r.weight_bytes_per_token} != ${exp.weightsPerToken}`);
  ok(num("dispatches_per_decoded_token") >= 10, `dispatches ${r.dispatches_per_decoded_token}`);
  ok(num("submissions_per_decoded_token") === 1 && num("readback_bytes_per_decoded_token") === 4, "submissions / readback");
  ok(num("bandwidth_gb_s") > 0 && num("time_to_first_token_s") > 0 && num("load_s") > 0, "bandwidth / ttft / load time");
  ok(JSON.stringify(r.prefill.map((p) => p.tokens)) === JSON.stringify(BENCH.prefill), `prefill ${JSON.stringify(r.prefill)}`);
  for (const p of r.prefill) ok(p.tok_per_s > 0 && p.seconds > 0 && Math.abs(p.tok_per_s * p.seconds - p.tokens) < 1e-6 * p.tokens, `prefill ${JSON.stringify(p)}`);
  ok(r.time_to_first_token_s === r.prefill[0].seconds, "ttft is the first prefill");
  ok(JSON.stringify(r.decode.map((d) => d.context)) === JSON.stringify(BENCH.decodeAt), `decode ${JSON.stringify(r.decode)}`);
  const kvRow = 2 * BENCH.layers * 16 * 128 * 4;
  for (const d of r.decode) {
    ok(d.tok_per_s > 0 && Math.abs(d.ms_per_token * d.tok_per_s - 1000) < 1e-6, `decode ${JSON.stringify(d)}`);
    ok(d.dispatches >= 10, `dispatches at @${d.context}: ${d.dispatches}`);
    // The token decoded at step j after a `context`-token cache reads context + j + 1 keys
    // (itself included): on average context + (decodeTokens + 1) / 2 (bench::kv_positions_per_token).
    ok(d.bytes_per_token === exp.weightsPerToken + kvRow * (d.context + (BENCH.decodeTokens + 1) / 2), `bytes per token ${d.bytes_per_token}`);
    ok(d.roofline_fraction > 0 && d.roofline_fraction < 10, `roofline ${d.roofline_fraction}`);
  }
  ok(r.runtime.includes("browser") && r.user_agent.length > 0, `runtime ${r.runtime}`);
  // The table: the CLI's rows, as text.
  const rows = await page.locator("#rows tr").evaluateAll((trs) => trs.map((tr) => [tr.dataset.key, tr.querySelector("th").textContent, tr.querySelector("td").textContent]));
  const keys = rows.map((x) => x[0]);
  const want = ["adapter", "model", "gpu", "bandwidth", "per-token", "ttft", ...BENCH.prefill.map((n) => `prefill-${n}`), ...BENCH.decodeAt.map((c) => `decode-${c}`)];
  ok(JSON.stringify(keys) === JSON.stringify(want), `rows ${keys}`);
  ok(rows.every(([, th, td]) => th && td), "an empty cell");
  const cell = (k) => rows.find((x) => x[0] === k)[2];
  ok(cell("gpu").startsWith(`${exp.bytes} bytes (`), `gpu row ${cell("gpu")}`);
  ok(/^\d+ dispatches, 1 submission, 4 bytes read back, [\d.]+ MiB of weights$/.test(cell("per-token")), `per-token row ${cell("per-token")}`);
  ok(/^[\d.]+ tok\/s \([\d.]+ ms\/token, [\d.]+ MiB\/token, roofline [\d.]+, \d+ dispatches\)$/.test(cell(`decode-${BENCH.decodeAt[0]}`)), `decode row ${cell(`decode-${BENCH.decodeAt[0]}`)}`);
  ok(/Measured in this browser/.test(await text("#where")), `where: ${await text("#where")}`);
  ok(JSON.stringify(JSON.parse(await text("#json"))) === JSON.stringify(r), "the JSON shown differs from the report");
  // Copy JSON: the clipboard when allowed, else the JSON is selected.
  await browser.grantPermissions(["clipboard-read", "clipboard-write"], { origin });
  await page.click("#copy");
  await page.waitForFunction(() => document.getElementById("copy-status").textContent !== "", null, { timeout: 10000 });
  const status = await text("#copy-status");
  if (status === "Copied.") {
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    ok(JSON.stringify(JSON.parse(clip)) === JSON.stringify(r), "clipboard JSON differs");
  } else {
    ok((await page.evaluate(() => getSelection().toString())) === (await text("#json")), `copy: ${status}`);
  }
  await page.screenshot({ path: path.join(artifacts, "bench.png"), fullPage: true });
  const fmt = (x) => x.toPrecision(3);
  notes.push(`bench page (SwiftShader, ${BENCH.layers} layer, vocab ${BENCH.vocab}, q4/f32, ${((Date.now() - t0) / 1000).toFixed(1)}s): ` +
    `${r.gpu_bytes_allocated} B GPU, ${fmt(r.bandwidth_gb_s)} GB/s, ` +
    r.prefill.map((p) => `prefill ${p.tokens}: ${fmt(p.tok_per_s)} tok/s`).join(", ") + ", " +
    r.decode.map((d) => `decode @${d.context}: ${fmt(d.tok_per_s)} tok/s, roofline ${fmt(d.roofline_fraction)}`).join(", ") +
    `, ${r.dispatches_per_decoded_token} dispatches/token, weights made in ${fmt(r.load_s)} s`);
});

test("benchmark() of a loaded engine (the chat page's model, through the worker)", async () => {
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.qwenChat?.ready === true, null, { timeout: 60000 });
  const r = await page.evaluate(async (url) => {
    const { createEngine } = await import("/pkg/index.js");
    const engine = await createEngine({ model: url, useCache: false });
    const labels = [];
    try {
      const info = await engine.info();
      const report = await engine.benchmark({ prefill: [6], decodeAt: [5], decodeTokens: 2, onProgress: (p) => labels.push(p.text) });
      const again = await engine.benchmark({ prefill: [6], decodeAt: [5], decodeTokens: 2 });
      return { ...report, labels, info, again: { bytes: again.gpu_bytes_allocated, buffers: again.gpu_buffers } };
    } finally {
      await engine.unload();
    }
  }, modelUrl);
  ok(r.model === modelUrl && r.gpu_bytes_allocated > 0 && r.dispatches_per_decoded_token > 0, `report ${JSON.stringify(r).slice(0, 300)}`);
  ok(r.prefill.length === 1 && r.prefill[0].tok_per_s > 0 && r.decode.length === 1 && r.decode[0].tok_per_s > 0, "prefill/decode");
  ok(r.decode[0].roofline_fraction > 0 && r.decode[0].roofline_fraction < 10, `roofline ${r.decode[0].roofline_fraction}`);
  ok(JSON.stringify(r.labels) === JSON.stringify(["bandwidth", "warm-up", "prefill 6", "decode @5"]), `progress labels ${r.labels}`);
  // Memory from the allocations: the model's own buffers, the fit check's trial and the
  // bandwidth probe freed; a second run reports the same.
  ok(r.info.gpuBytes > 0 && r.gpu_bytes_allocated === r.info.gpuBytes && r.gpu_buffers === r.info.gpuBuffers,
    `report ${r.gpu_bytes_allocated} B / ${r.gpu_buffers} buffers, info ${r.info.gpuBytes} B / ${r.info.gpuBuffers}`);
  ok(r.again.bytes === r.gpu_bytes_allocated && r.again.buffers === r.gpu_buffers, `second run ${JSON.stringify(r.again)}`);
});

(await import("./estimate.mjs")).default({ test, ok, page, pageUrl, setModel, modelUrl, notes });
(await import("./gguf.mjs")).default({ test, ok, page, pageUrl, origin, fixtures, setModel, loadAndWait, idle, watchReply, openSettings, text, visible, notes });
(await import("./agent.mjs")).default({ test, ok, page, pageUrl, origin, fixtures, setModel, loadAndWait, idle, openSettings, text, notes, get });
(await import("./longchat.mjs")).default({ test, ok, page, pageUrl, modelUrl, setModel, loadAndWait, idle, openSettings, text, visible, notes });

// ------------------------------------------------------------------ run
let passed = 0;
let failed = 0;
for (const t of tests) {
  if (filter && !t.name.includes(filter)) continue;
  const t0 = Date.now();
  const cspBefore = csp.length;
  try {
    await t.fn();
    if (csp.length > cspBefore) throw new Error(`Content-Security-Policy violations: ${csp.slice(cspBefore).join("; ")}`);
    passed++;
    console.log(`  ok   ${t.name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  } catch (e) {
    failed++;
    console.log(`  FAIL ${t.name}: ${e.message}`);
    try { await page.screenshot({ path: path.join(artifacts, `fail-${passed + failed}.png`), fullPage: true }); } catch { /* ignore */ }
  }
}
for (const n of notes) console.log(`     ${n}`);
if (failed) console.log(logs.slice(-40).join("\n"));
await browser.close();
server.kill();
fs.rmSync(userDir, { recursive: true, force: true });
console.log(`www: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
