// The chat page past its context (issue 17): with a small context (the model panel's Context
// field), a short conversation outgrows it; the page shows a quiet note under the reply whose
// prompt left older messages out (plain text, no element inside), never an error, and a single
// message longer than the whole context is the one error it shows, after which the chat goes on.
// Registered from run.mjs.

export default function longChatPageTests({ test, ok, page, pageUrl, modelUrl, setModel, loadAndWait, idle, openSettings, text, visible, notes }) {
  test("a conversation past a small context: a quiet plain-text note under the reply that left older messages out, no error; only a message larger than the context is one", async () => {
    await page.goto(pageUrl);
    await page.waitForFunction(() => window.qwenChat?.ready === true, null, { timeout: 60000 });
    await setModel(modelUrl, "");
    await page.fill("#context", "128");
    await loadAndWait();
    ok(/context 128 tokens/.test(await text("#model-status")), `status: ${await text("#model-status")} ${await text("#error")}`);
    await openSettings();
    await page.fill("#max-tokens", "6");
    await page.fill("#temperature", "0");
    const words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
    let turn = 0;
    let firstNote = -1;
    for (; turn < 8 && firstNote < 0; turn++) {
      const msg = `Message ${turn}: ` + Array.from({ length: 12 }, (_, k) => words[(turn + k) % words.length]).join(" ");
      await page.fill("#input", msg);
      await page.click("#send");
      await idle();
      ok(!(await visible("#error")), `turn ${turn}: error ${await text("#error")}`);
      const n = await page.locator("#log .msg.assistant").last().locator(".context-note").count();
      if (n) firstNote = turn;
    }
    ok(firstNote > 0, `no note after ${turn} turns of a 128-token context`);
    const note = await page.evaluate(() => {
      const notes = [...document.querySelectorAll("#log .context-note")];
      const n = notes.at(-1);
      return { count: notes.length, text: n.textContent, children: n.childElementCount, inAssistant: !!n.closest(".msg.assistant"),
        color: getComputedStyle(n).color, bodyColor: getComputedStyle(document.body).color, title: n.title };
    });
    ok(note.count === 1 && note.text === "Older messages were left out to fit the context." && note.children === 0 && note.inAssistant,
      `note ${JSON.stringify(note)}`);
    ok(note.color !== note.bodyColor, `the note is not quiet: color ${note.color}`);
    ok(/^\d+ tokens of older messages/.test(note.title), `title ${note.title}`);
    const stats = await text("#stats");
    notes.push(`context 128: the note after turn ${firstNote}; ${stats}`);
    // A message larger than the whole context: the one error, as text.
    await page.fill("#input", Array.from({ length: 150 }, (_, i) => `w${i}`).join(" "));
    await page.click("#send");
    await idle();
    ok(await visible("#error"), "no error for a message larger than the context");
    const err = await text("#error");
    ok(/too long for the model's context \(128 tokens\)/.test(err), `error: ${err}`);
    ok((await page.locator("#error").evaluate((e) => e.querySelectorAll("*").length)) === 0, "elements in the error");
    // The chat goes on.
    await page.fill("#input", "Short again.");
    await page.click("#send");
    await idle();
    ok(!(await visible("#error")), `after the long message: error ${await text("#error")}`);
    ok((await page.locator("#log .msg.assistant .body").last().textContent()).length > 0, "no reply after the long message");
  });
}
