// Chat page (issue 15): GGUF models. The presets name official Qwen GGUF files (never fetched
// here); a `.gguf` URL typed in the URL field and a `.gguf` file from the file picker load and
// chat. The fixture is llama.cpp's own Q4_0 file of the vocab model (run.sh, through
// scripts/gguf-tools.sh). Registered by run.mjs: `(await import("./gguf.mjs")).default(ctx)`.
import fs from "node:fs";
import path from "node:path";

export default function ggufTests({ test, ok, page, pageUrl, origin, fixtures, setModel, loadAndWait, idle, watchReply, openSettings, text, visible, notes }) {
  const file = path.join(fixtures, "gguf/vocab-q4_0.gguf");
  if (!fs.existsSync(file)) {
    test("GGUF: no fixture (run.sh needs scripts/gguf-tools.sh): skipped", async () => {});
    return;
  }
  const ggufUrl = `${origin}/models/gguf/vocab-q4_0.gguf`;

  /** Press Load model and wait until the page says Loaded (or shows an error). */
  async function load() {
    await loadAndWait();
    // With a model loaded already the page unloads it before the Load button turns busy.
    await page.waitForFunction(() => /^Loaded /.test(document.getElementById("model-status").textContent) || !document.getElementById("error").hidden,
      null, { timeout: 180000 });
  }

  /** Send `message` and wait for the whole reply; its text. */
  async function chat(message) {
    await openSettings();
    await page.fill("#max-tokens", "8");
    await page.fill("#input", message);
    await watchReply();
    await page.click("#send");
    await idle();
    return await page.locator("#log .msg.assistant .body").last().textContent();
  }

  test("GGUF presets: official Qwen GGUF files by their resolve URLs; picking one keeps the URL as a file and weights on auto", async () => {
    await page.goto(pageUrl);
    await page.waitForFunction(() => window.qwenChat?.ready === true, null, { timeout: 60000 });
    const presets = await page.locator("#preset optgroup option").evaluateAll((os) => os.map((o) => ({ label: o.textContent, value: o.value })));
    const folder = await page.locator("#preset > option").evaluateAll((os) => os.map((o) => o.value).filter(Boolean));
    ok(presets.length >= 4, `GGUF presets ${JSON.stringify(presets)}`);
    const host = new URL(folder[0]).origin;
    for (const p of presets) {
      ok(p.value.startsWith(`${host}/Qwen/`) && /-GGUF\/resolve\/main\/[^/]+\.gguf$/.test(p.value), `preset ${p.label}: ${p.value} (the safetensors presets' host and resolve/main style)`);
    }
    for (const want of ["Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q4_0.gguf", "Qwen2.5-1.5B-Instruct-GGUF/resolve/main/qwen2.5-1.5b-instruct-q4_0.gguf",
      "Qwen3-0.6B-GGUF/resolve/main/Qwen3-0.6B-Q8_0.gguf", "Qwen1.5-1.8B-Chat-GGUF/resolve/main/qwen1_5-1_8b-chat-q4_0.gguf"]) {
      ok(presets.some((p) => p.value.endsWith(`/Qwen/${want}`)), `no preset for ${want}`);
    }
    ok((await page.inputValue("#weights")) === "q4", "weights start at q4");
    await page.selectOption("#preset", presets[0].value);
    ok((await page.inputValue("#model-url")) === presets[0].value, "the preset fills the URL");
    ok((await page.inputValue("#weights")) === "auto", "a GGUF preset selects weights auto (the file's own types)");
    const url = await page.evaluate(() => document.getElementById("model-url").value);
    ok(!url.endsWith("/"), `the URL stays a file's: ${url}`);
    await page.selectOption("#preset", folder[0]);
    ok((await page.inputValue("#weights")) === "q4", "a folder preset after it puts the weights choice back");
  });

  test("GGUF by URL: a .gguf URL loads (header, tokenizer from its metadata) and chats; its own types are shown", async () => {
    await setModel(ggufUrl, "");
    ok((await page.inputValue("#weights")) === "auto", "typing a .gguf URL selects weights auto");
    const t0 = Date.now();
    await load();
    ok(!(await visible("#error")), `load error: ${await text("#error")}`);
    const status = await text("#model-status");
    ok(/^Loaded vocab-q4_0\.gguf \(GGUF \(F32, Q4_0, Q8_0\) weights, /.test(status), `status: ${status}`);
    ok(!(await page.locator("#input").isDisabled()), "the input is enabled (the GGUF has a tokenizer)");
    await page.click("#new-chat");
    const reply = await chat("Hello");
    ok(reply.length > 0 && reply !== "(no reply)", `reply: ${reply}`);
    notes.push(`GGUF by URL: load ${((Date.now() - t0) / 1000).toFixed(1)} s: ${status}`);
  });

  test("GGUF file: a .gguf file from the file picker loads and chats", async () => {
    if (!(await page.locator("#model-panel").evaluate((d) => d.open))) await page.click("#model-panel > summary");
    await page.setInputFiles("#gguf-file", file);
    ok(/Using local file "vocab-q4_0\.gguf"/.test(await text("#folder-info")), `file info: ${await text("#folder-info")}`);
    ok((await page.inputValue("#weights")) === "auto", "picking a .gguf file selects weights auto");
    await load();
    ok(!(await visible("#error")), `load error: ${await text("#error")}`);
    const status = await text("#model-status");
    ok(/^Loaded vocab-q4_0\.gguf \(GGUF/.test(status), `status: ${status}`);
    await page.click("#new-chat");
    const reply = await chat("你好");
    ok(reply.length > 0 && reply !== "(no reply)", `reply: ${reply}`);
    // Back to a model folder for whatever runs next: the weights choice comes back.
    await setModel(`${origin}/models/vocab/`, "");
    ok((await page.inputValue("#weights")) === "q4", `weights after a folder URL: ${await page.inputValue("#weights")}`);
  });
}
