// End-to-end test of the chat page: scripts/serve.sh serves www/, pkg/ and FIXTURES at /models/;
// headless Chromium (SwiftShader WebGPU) uses the page as a person would.
// Usage (from run.sh): FIXTURES=dir ROOT=repo node run.mjs   (FILTER=substring runs a subset)
import { createRequire } from "node:module";
import { spawn } from "node:child_process";
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
const page = await browser.newPage();
const logs = [];
const dialogs = [];
page.on("console", (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
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

test("Stop mid-stream, then send again (multi-turn history)", async () => {
  await openSettings();
  await page.fill("#max-tokens", "4000");
  await page.fill("#input", "Tell me a very long story.");
  await watchReply();
  await page.click("#send");
  await page.waitForFunction(() => window.__updates >= 3, null, { timeout: 120000 });
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

// ------------------------------------------------------------------ run
let passed = 0;
let failed = 0;
for (const t of tests) {
  if (filter && !t.name.includes(filter)) continue;
  const t0 = Date.now();
  try {
    await t.fn();
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
