// Tools, stop strings, thinking and logprobs through the package's public API (issue 16), in
// headless Chromium, on the scripted checkpoint: examples/make_scripted.rs writes a tiny model
// over the real Qwen3 vocabulary, with Qwen3's real tokenizer_config.json (chat template),
// whose greedy decoding follows fixed replies (script.json lists each one's text and ids):
//   - after the prompt's `<|im_start|>assistant\n`: `tool_call`, a `<think>` block then a
//     `<tool_call>` calling `python` with `{"code": "print(6*7)"}`;
//   - the same, once the context holds a `<tool_response>`: `answer` ("The answer is 42.");
//     forbidding `<think>` with logit_bias also gives `answer`;
//   - after `\n\n` (Qwen3's prompt with `enable_thinking: false` ends `</think>\n\n`): `hello`,
//     mixed scripts and an emoji, for stop strings inside tokens and characters.
// So a reply that calls a tool, the tool loop's second turn and the text of every reply are
// known in advance: the checks below compare against script.json, not against the engine.
// Registered from run.mjs; skipped when run.sh could not make the fixture (no vocabulary or
// no tokenizer_config.json).
import fs from "node:fs";
import path from "node:path";

/** The tool the scripted model calls, as an OpenAI tool object. */
const PYTHON = {
  type: "function",
  function: {
    name: "python",
    description: "Run Python code and return what it prints",
    parameters: { type: "object", properties: { code: { type: "string" } }, required: ["code"] },
  },
};

/**
 * An engine that answers from a list of replies (`{message, finish}`), whole or streamed in
 * small pieces as the real one streams; it records each request. For runTools' own logic.
 */
function fakeEngine(replies) {
  const requests = [];
  const create = (req) => {
    const { signal, ...rest } = req;
    requests.push(JSON.parse(JSON.stringify(rest)));
    const m = replies[Math.min(requests.length - 1, replies.length - 1)];
    const usage = { prompt_tokens: 10 * requests.length, completion_tokens: 5, total_tokens: 10 * requests.length + 5 };
    const finish = signal?.aborted ? "abort" : m.finish;
    if (!req.stream) return Promise.resolve({ choices: [{ index: 0, message: m.message, finish_reason: finish, logprobs: null }], usage });
    return (async function* () {
      yield { choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] };
      for (const p of (m.message.reasoning_content ?? "").match(/.{1,3}/gsu) ?? []) yield { choices: [{ index: 0, delta: { reasoning_content: p }, finish_reason: null }] };
      for (const p of (m.message.content ?? "").match(/.{1,3}/gsu) ?? []) yield { choices: [{ index: 0, delta: { content: p }, finish_reason: null }] };
      for (const [index, c] of (m.message.tool_calls ?? []).entries()) {
        yield { choices: [{ index: 0, delta: { tool_calls: [{ index, id: c.id, type: "function", function: { name: c.function.name, arguments: "" } }] }, finish_reason: null }] };
        for (const p of c.function.arguments.match(/.{1,4}/gsu) ?? []) yield { choices: [{ index: 0, delta: { tool_calls: [{ index, function: { arguments: p } }] }, finish_reason: null }] };
      }
      yield { choices: [{ index: 0, delta: {}, finish_reason: finish }], usage };
    })();
  };
  return { requests, chat: { completions: { create } } };
}

function nodeTests({ test, eq, ok, root }) {
  const load = () => import(path.join(root, "js/tools.js"));
  const call = (id, name, args) => ({ id, type: "function", function: { name, arguments: args } });
  const calls = { role: "assistant", content: null, reasoning_content: "let me see", tool_calls: [
    call("a", "calculator", '{"expression": "2^10 - 24"}'), call("b", "calculator", '{"expression": '), call("c", "clock", "{}")] };
  const answer = { role: "assistant", content: "1000." };

  test("runTools (node, a scripted engine): calls run in order, errors become tool messages, streamed and whole agree, prepareStep, maxSteps, abort", async () => {
    const { runTools } = await load();
    const { tools } = await import(path.join(root, "js/index.js"));
    const results = {};
    for (const streamed of [false, true]) {
      const engine = fakeEngine([{ message: calls, finish: "tool_calls" }, { message: answer, finish: "stop" }]);
      const deltas = [];
      const r = await runTools(engine, {
        messages: [{ role: "user", content: "2^10 - 24?" }], temperature: 0.5,
        tools: { calculator: tools.calculator, clock: { run: () => { throw new Error("no clock here"); } } },
        onDelta: streamed ? (d) => { deltas.push(d); throw new Error("a display bug"); } : undefined,
        prepareStep: ({ step, messages }) => (step === 1 ? { logit_bias: { 1: -100 }, seen: messages.length } : undefined),
      });
      results[streamed] = r;
      eq(r.finish_reason, "stop", `${streamed}: finish`);
      eq(r.message, answer, `${streamed}: the last reply`);
      eq(r.messages.map((m) => m.role), ["user", "assistant", "tool", "tool", "tool", "assistant"], `${streamed}: roles`);
      eq(r.messages[1], calls, `${streamed}: the reply with its calls and reasoning, as given`);
      eq(r.messages.slice(2, 5).map((m) => [m.tool_call_id, m.content]), [
        ["a", '{"expression":"2^10 - 24","result":1000}'],
        ["b", `Error: the arguments of calculator are not valid JSON (${(() => { try { JSON.parse('{"expression": '); } catch (e) { return e.message; } })()}): {"expression": `],
        ["c", "Error: no clock here"],
      ], `${streamed}: the tool messages`);
      eq(r.steps[0].results.map((x) => x.error), [false, true, true], `${streamed}: errors`);
      eq(engine.requests.length, 2, `${streamed}: completions`);
      eq(engine.requests[0].temperature, 0.5, `${streamed}: fields go to every completion`);
      eq([engine.requests[0].logit_bias, engine.requests[1].logit_bias, engine.requests[1].seen], [undefined, { 1: -100 }, 5], `${streamed}: prepareStep's fields, for its step only`);
      eq(engine.requests[1].tools.map((t) => t.function.name), ["calculator", "clock"], `${streamed}: tools as OpenAI objects`);
      eq(engine.requests[1].tools[1].function.parameters, { type: "object", properties: {} }, `${streamed}: default parameters`);
      eq(r.usage.prompt_tokens, 30, `${streamed}: summed usage`);
      eq(r.usage.completions.length, 2, `${streamed}: each completion's usage`);
      if (streamed) ok(deltas.length > 10 && deltas.every((d) => !d.role), `deltas: ${deltas.length}`);
    }
    eq(results.true.messages, results.false.messages, "streamed and whole give the same conversation");

    // A model that always calls: maxSteps rounds run, then the loop ends saying so.
    const always = fakeEngine([{ message: { role: "assistant", content: null, tool_calls: [call("x", "calculator", '{"expression":"1+1"}')] }, finish: "tool_calls" }]);
    const capped = await runTools(always, { messages: [], tools: { calculator: tools.calculator }, maxSteps: 2 });
    eq([capped.finish_reason, capped.steps.length, always.requests.length, capped.messages.length], ["max_steps", 2, 3, 5], "maxSteps");
    // A reply cut by max_tokens with a parsed call: not run.
    const cut = fakeEngine([{ message: calls, finish: "length" }]);
    const c = await runTools(cut, { messages: [], tools: { calculator: tools.calculator, clock: { run: () => "noon" } } });
    eq([c.finish_reason, c.steps.length], ["length", 0], "a reply cut short runs no tool");
    // Abort while a tool runs: the loop ends with "abort", the tool saw the signal.
    const ctl = new AbortController();
    let sawSignal = false;
    const ab = await runTools(fakeEngine([{ message: calls, finish: "tool_calls" }, { message: answer, finish: "stop" }]), {
      messages: [], signal: ctl.signal,
      tools: { calculator: { run: (a, { signal }) => { sawSignal = signal === ctl.signal; ctl.abort(); return "1"; } }, clock: { run: () => "noon" } },
    });
    ok(sawSignal, "the tool gets the signal");
    eq([ab.finish_reason, ab.steps.length, ab.steps[0].results.map((x) => x.content)], ["abort", 1, ["1", "Error: aborted", "Error: aborted"]], "abort");
    // Bad options are RequestErrors naming what is wrong.
    const bad = async (opts) => { try { await runTools(fakeEngine([{ message: answer, finish: "stop" }]), opts); return "no error"; } catch (e) { return `${e.name}/${e.code}: ${e.message}`; } };
    for (const [opts, want] of [
      [{ messages: [], tools: { f: {} } }, /tools\.f: tool f has no function/],
      [{ messages: [], tools: { "f g": { run() {} } } }, /tool name/],
      [{ messages: [], tools: [{ type: "function", function: { name: "f" } }] }, /functions/],
      [{ messages: [], tools: [{ type: "function", function: { name: "f" } }], functions: { f() {}, g() {} } }, /functions\.g is not one of the tools/],
      [{ messages: [], tools: {}, stream: true }, /onDelta/],
      [{ messages: [], tools: {}, maxSteps: 0 }, /maxSteps/],
      [{ messages: "hi", tools: {} }, /messages/],
      [{ messages: [], tools: {}, prepareStep: () => 5 }, /prepareStep/],
    ]) {
      const got = await bad(opts);
      ok(got.startsWith("RequestError/request_invalid: runTools: ") && want.test(got), `${JSON.stringify(opts)}: ${got}`);
    }
  });

  test("chat chunks from wasm's deltas (node, a scripted wasm engine): held-back tokens' logprobs ride the next chunk, the tail and finish last; JS-only fields never reach wasm", async () => {
    const { Engine } = await import(path.join(root, "pkg/engine.js"));
    const lp = (t) => ({ token: t, logprob: -0.5, bytes: [...new TextEncoder().encode(t)], top_logprobs: [] });
    // Token 2's text is held back (a possible stop string), token 4 is a tool call piece.
    const steps = [
      { id: 1, delta: { content: "Hi" } },
      { id: 2, delta: undefined },
      { id: 3, delta: { content: " there" } },
      { id: 4, delta: { tool_calls: [{ index: 0, id: "call_0", type: "function", function: { name: "f", arguments: "" } }] } },
      { id: 5, delta: { reasoning_content: "" } },
    ];
    const tail = { content: "!" };
    const message = { role: "assistant", content: "Hi there!", tool_calls: [{ id: "call_0", type: "function", function: { name: "f", arguments: "{}" } }] };
    const usage = { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 };
    const calls = [];
    let i = 0;
    const inner = {
      lost_info: () => null,
      async start(req, chat) { calls.push(["start", req, chat]); i = 0; },
      async next() { return i < steps.length ? steps[i++].id : undefined; },
      reply_push(id) { calls.push(["push", id]); return steps[i - 1].delta; },
      logprobs() { calls.push(["logprobs"]); return lp(`t${steps[i - 1].id}`); },
      reply_finish() { return tail; },
      reply_message() { return message; },
      finish_reason: () => "tool_calls",
      usage: () => usage,
      abort() {},
      unload() {},
      free() {},
    };
    const engine = new Engine(inner, { modelId: "fake", adapter: "none", load: null });
    const ctl = new AbortController();
    const chunks = [];
    for await (const c of engine.chat.completions.create({ messages: [], stream: true, stream_options: { include_usage: true }, signal: ctl.signal, logprobs: true, top_logprobs: 0 })) chunks.push(c);
    eq(calls[0][1], { messages: [], logprobs: true, top_logprobs: 0 }, "what wasm got (no stream, stream_options, signal)");
    eq(calls[0][2], true, "a chat");
    const view = chunks.map((c) => [c.choices[0].delta, c.choices[0].finish_reason, c.choices[0].logprobs?.content.map((e) => e.token) ?? null, !!c.usage]);
    eq(view, [
      [{ role: "assistant", content: "" }, null, null, false],
      [{ content: "Hi" }, null, ["t1"], false],
      [{ content: " there" }, null, ["t2", "t3"], false],
      [steps[3].delta, null, ["t4"], false],
      [tail, null, ["t5"], false],
      [{}, "tool_calls", null, true],
    ], "chunks");
    ok(chunks.every((c) => c.object === "chat.completion.chunk" && c.id === chunks[0].id && c.model === "fake"), "chunk ids");
    const whole = await engine.chat.completions.create({ messages: [], logprobs: true });
    eq(whole.choices[0].message, message, "whole: reply_message");
    eq(whole.choices[0].logprobs.content.map((e) => e.token), ["t1", "t2", "t3", "t4", "t5"], "whole: one entry per token");
    eq([whole.choices[0].finish_reason, whole.usage], ["tool_calls", usage], "whole: finish and usage");
    calls.length = 0;
    const plain = await engine.chat.completions.create({ messages: [] });
    eq(plain.choices[0].logprobs, null, "logprobs not asked");
    ok(!calls.some((c) => c[0] === "logprobs"), "logprobs() not called when not asked");
    let err = "";
    try { await engine.chat.completions.create({ messages: [], stream_options: { include_usage: 1 } }); } catch (e) { err = `${e.name}/${e.code}: ${e.message}`; }
    ok(/^RequestError\/request_invalid: stream_options\.include_usage/.test(err), err);
    err = "";
    try { for await (const c of engine.chat.completions.create({ messages: [], stream: true, stream_options: { nope: true } })) void c; } catch (e) { err = `${e.name}/${e.code}: ${e.message}`; }
    ok(/^RequestError\/request_invalid: unknown field stream_options\.nope/.test(err), err);
    await engine.unload();
  });

  test("calculator (node): its own parser against JavaScript's arithmetic; no eval, errors named", async () => {
    const { evaluate, calculator, currentTime } = await load();
    const cases = [
      ["1 + 2 * 3", 7], ["(1 + 2) * 3", 9], ["-2^2", -(2 ** 2)], ["2^3^2", 2 ** (3 ** 2)], ["2**-1", 0.5], ["10 % 4", 2],
      ["7 × 6 ÷ 2", 21], ["sqrt(16) + max(1, 5, 3)", 9], ["2e3 / 4", 500], [".5 + 1.", 1.5], ["pi * 2", Math.PI * 2],
      ["log(1000) + ln(e)", 4], ["round(2.5) + floor(-1.5) + ceil(1.2) + abs(-3)", 3 - 2 + 2 + 3], ["hypot(3, 4)", 5],
      ["1 - - 1", 2], ["((((3))))", 3], ["atan(1, 1) * 4", Math.PI],
    ];
    for (const [e, v] of cases) {
      const got = evaluate(e);
      ok(Math.abs(got - v) <= 1e-12 * Math.max(1, Math.abs(v)), `${e} = ${got}, want ${v}`);
    }
    // Random expressions over + - * / and brackets, against JavaScript's own evaluation of the
    // same text (this test's reference; the calculator never calls eval).
    let seed = 7;
    const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
    const gen = (d) => (d > 3 || rnd(3) === 0 ? String(1 + rnd(50)) : `(${gen(d + 1)} ${"+-*/"[rnd(4)]} ${gen(d + 1)})`);
    for (let i = 0; i < 300; i++) {
      const e = gen(0);
      const want = Function(`"use strict"; return (${e});`)();
      if (!Number.isFinite(want)) continue;
      const got = evaluate(e);
      ok(Math.abs(got - want) <= 1e-9 * Math.max(1, Math.abs(want)), `${e} = ${got}, want ${want}`);
    }
    for (const [e, why] of [["1/0", /not a finite number/], ["2 +", /ends too soon/], ["alert(1)", /unknown function alert/],
      ["constructor", /unknown name/], ["1 2", /after a complete expression/], ["3 $ 4", /character "\$" at position 3/],
      ["", /empty/], ["(".repeat(300) + "1" + ")".repeat(300), /nests deeper/], ["1".repeat(1001), /longer than/], ["min()", /min takes/],
      ["(1", /expected "\)"/], ["__proto__", /unknown name/], ["toString(1)", /unknown function/]]) {
      let got = "no error";
      try { got = String(evaluate(e)); } catch (x) { got = x.message; }
      ok(why.test(got), `${e.slice(0, 20)}: ${got}`);
    }
    eq(calculator({ expression: "6*7" }), { expression: "6*7", result: 42 }, "calculator()");
    let err = "";
    try { calculator({ expr: "1" }); } catch (x) { err = x.message; }
    ok(/expression/.test(err), err);
    const t = currentTime({ timeZone: "UTC" });
    ok(t.timeZone === "UTC" && Math.abs(Date.parse(t.iso) - Date.now()) < 5000 && t.unixMs === Date.parse(t.iso), JSON.stringify(t));
    try { currentTime({ timeZone: "Mars/Olympus" }); err = "no error"; } catch (x) { err = x.message; }
    ok(/unknown time zone/.test(err), err);
  });
}

export default function agentTests({ test, eq, ok, page, fixtures, root }) {
  nodeTests({ test, eq, ok, root });
  const file = path.join(fixtures, "scripted", "script.json");
  if (!fs.existsSync(file)) {
    test("agent: the scripted fixture is missing (run.sh needs the vocabulary and tokenizer_config.json): skipped", async () => {});
    return;
  }
  const script = JSON.parse(fs.readFileSync(file, "utf8"));
  const R = script.replies;
  const base = { model: "/fx/scripted/", useCache: false, context: 1024 };
  const ask = "What is 6 times 7? Use Python.";

  test("agent: tool_calls are parsed from the stream (deltas joined, ids, finish_reason tool_calls) and whole, in the worker and on the page's thread", async () => {
    const r = await page.evaluate(async ({ base, ask, PYTHON }) => {
      const out = {};
      for (const useWorker of [true, false]) {
        const engine = await qwen.createEngine({ ...base, useWorker });
        const req = { messages: [{ role: "user", content: ask }], tools: [PYTHON], temperature: 0 };
        const whole = await engine.chat.completions.create(req);
        const chunks = [];
        for await (const c of engine.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } })) chunks.push(c);
        const info = await engine.info();
        await engine.unload();
        out[useWorker ? "worker" : "thread"] = { whole, chunks, chatTemplate: info.chatTemplate };
      }
      return out;
    }, { base, ask, PYTHON });
    for (const [where, { whole, chunks, chatTemplate }] of Object.entries(r)) {
      eq(chatTemplate, "jinja", `${where}: info().chatTemplate`);
      const w = whole.choices[0];
      eq(w.finish_reason, "tool_calls", `${where}: whole finish_reason`);
      eq(w.logprobs, null, `${where}: logprobs not asked`);
      eq(w.message.role, "assistant", `${where}: role`);
      eq(w.message.reasoning_content, "I should run Python", `${where}: whole reasoning_content`);
      ok(w.message.content === null || w.message.content === "", `${where}: whole content ${JSON.stringify(w.message.content)}`);
      eq(w.message.tool_calls.length, 1, `${where}: one tool call`);
      const call = w.message.tool_calls[0];
      eq([call.type, call.function.name], ["function", "python"], `${where}: the call`);
      eq(JSON.parse(call.function.arguments), { code: "print(6*7)" }, `${where}: its arguments`);
      ok(typeof call.id === "string" && call.id.length > 0, `${where}: call id ${JSON.stringify(call.id)}`);

      // The stream: role first; tool call pieces as OpenAI streams them; finish and usage last.
      eq(chunks[0].choices[0].delta.role, "assistant", `${where}: first chunk's role`);
      const last = chunks[chunks.length - 1];
      eq(last.choices[0].finish_reason, "tool_calls", `${where}: streamed finish_reason`);
      ok(chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null), `${where}: finish_reason only on the last chunk`);
      ok(last.usage && last.usage.completion_tokens === whole.usage.completion_tokens, `${where}: usage on the last chunk ${JSON.stringify(last.usage)}`);
      eq(last.usage.prompt_tokens, whole.usage.prompt_tokens, `${where}: prompt tokens`);
      let reasoning = "";
      let content = "";
      const calls = [];
      let pieces = 0;
      for (const c of chunks) {
        const d = c.choices[0].delta;
        reasoning += d.reasoning_content ?? "";
        content += d.content ?? "";
        for (const t of d.tool_calls ?? []) {
          pieces++;
          ok(Number.isInteger(t.index), `${where}: a tool call delta without index: ${JSON.stringify(t)}`);
          if (!calls[t.index]) {
            ok(typeof t.id === "string" && t.id && t.type === "function" && t.function?.name === "python",
              `${where}: the first piece of call ${t.index} names it: ${JSON.stringify(t)}`);
            calls[t.index] = { id: t.id, name: t.function.name, arguments: t.function.arguments ?? "" };
          } else {
            ok(t.id === undefined && t.function?.name === undefined, `${where}: a later piece repeats the id or name: ${JSON.stringify(t)}`);
            calls[t.index].arguments += t.function?.arguments ?? "";
          }
        }
      }
      eq(reasoning, "I should run Python", `${where}: streamed reasoning`);
      eq(content, "", `${where}: streamed content`);
      eq(calls.length, 1, `${where}: streamed calls`);
      eq(calls[0].arguments, call.function.arguments, `${where}: streamed arguments joined vs the whole message's`);
      ok(pieces >= 1, `${where}: tool call pieces`);
    }
  });

  test("agent: runTools runs a JS tool, the next turn's prompt holds its result and the reply is the scripted answer (streamed and whole, worker and thread)", async () => {
    const r = await page.evaluate(async ({ base, ask, PYTHON }) => {
      const out = [];
      for (const useWorker of [true, false]) {
        const engine = await qwen.createEngine({ ...base, useWorker });
        for (const [label, result] of [["short", "42\n"], ["long", "42\nand then some more words of output\n"]]) {
          for (const streamed of [false, true]) {
            const seen = [];
            const deltas = [];
            const events = [];
            const res = await qwen.runTools(engine, {
              messages: [{ role: "user", content: ask }],
              tools: { python: { description: PYTHON.function.description, parameters: PYTHON.function.parameters,
                run: async (args, ctx) => { seen.push({ args, hasCall: !!ctx.call }); return result; } } },
              temperature: 0,
              maxSteps: 3,
              onDelta: streamed ? (d, { step }) => deltas.push([step, d]) : undefined,
              onToolCall: (c, { step }) => events.push(["call", step, c.function.name]),
              onToolResult: (x, { step }) => events.push(["result", step, x.content]),
              onStep: (s) => events.push(["step", s.step, s.results.length]),
            });
            out.push({ useWorker, label, streamed, res, seen, deltas, events,
              resultTokens: (await engine.tokenize(result)).length });
          }
        }
        await engine.unload();
      }
      return out;
    }, { base, ask, PYTHON });
    const prompts = {};
    for (const o of r) {
      const where = `${o.useWorker ? "worker" : "thread"} ${o.label} ${o.streamed ? "streamed" : "whole"}`;
      const { res } = o;
      eq(o.seen, [{ args: { code: "print(6*7)" }, hasCall: true }], `${where}: the tool ran once with the model's arguments`);
      eq(res.finish_reason, "stop", `${where}: finish_reason`);
      eq(res.message.content, R.answer.text, `${where}: the final reply is the scripted answer`);
      eq(res.steps.length, 1, `${where}: steps`);
      eq(res.usage.completions.length, 2, `${where}: completions`);
      const [first, second] = res.usage.completions;
      eq(res.usage.prompt_tokens, first.prompt_tokens + second.prompt_tokens, `${where}: summed prompt tokens`);
      // The conversation: user, the reply with its call, the tool's result, the answer.
      const m = res.messages;
      eq(m.map((x) => x.role), ["user", "assistant", "tool", "assistant"], `${where}: roles`);
      const call = m[1].tool_calls[0];
      eq(m[2], { role: "tool", tool_call_id: call.id, content: o.label === "short" ? "42\n" : "42\nand then some more words of output\n" }, `${where}: the tool message`);
      eq(m[1].reasoning_content, "I should run Python", `${where}: the reply keeps its reasoning for the template`);
      eq(o.events, [["call", 0, "python"], ["result", 0, m[2].content], ["step", 0, 1]], `${where}: callbacks`);
      if (o.streamed) {
        const text = o.deltas.filter(([s]) => s === 1).map(([, d]) => d.content ?? "").join("");
        eq(text, R.answer.text, `${where}: onDelta streams the answer`);
        ok(o.deltas.some(([s, d]) => s === 0 && d.tool_calls?.length), `${where}: onDelta saw the tool call pieces`);
      }
      // The second prompt holds the first prompt, the reply and the tool message.
      ok(second.prompt_tokens > first.prompt_tokens + o.resultTokens, `${where}: prompt tokens ${first.prompt_tokens} then ${second.prompt_tokens} (result ${o.resultTokens} tokens)`);
      prompts[`${o.useWorker}/${o.streamed}/${o.label}`] = [second.prompt_tokens, o.resultTokens];
    }
    // A longer result makes the second prompt longer by exactly its extra tokens.
    for (const k of ["true/false", "true/true", "false/false", "false/true"]) {
      const [s, sTok] = prompts[`${k}/short`];
      const [l, lTok] = prompts[`${k}/long`];
      eq(l - s, lTok - sTok, `${k}: the second prompt grows by the result's extra tokens`);
    }
  });

  test("agent: runTools never throws for a tool that throws, an unknown tool or a cut tool call; a bad definition or a function sent to the worker is a RequestError", async () => {
    const r = await page.evaluate(async ({ base, ask, PYTHON, ids }) => {
      const engine = await qwen.createEngine(base);
      const messages = [{ role: "user", content: ask }];
      const throwing = await qwen.runTools(engine, { messages, temperature: 0,
        tools: { python: { parameters: PYTHON.function.parameters, run: () => { throw new Error("the sandbox is down"); } } } });
      // OpenAI tool objects + functions; a tool set without `python` (an unknown tool for the model).
      const unknown = await qwen.runTools(engine, { messages, temperature: 0,
        tools: [{ type: "function", function: { name: "calculator", parameters: qwen.tools.calculator.parameters } }],
        functions: { calculator: qwen.tools.calculator.run } });
      // The reply is cut inside the tool call's JSON: content, not a call, and no tool runs.
      const { chunks } = await engine.detokenize(ids);
      let ran = 0;
      const cut = await qwen.runTools(engine, { messages, temperature: 0, max_tokens: chunks.findIndex((c) => c.includes("<tool_call>")) + 2,
        tools: { python: { run: () => { ran++; return "42"; } } } });
      let badDef = "";
      try { await qwen.runTools(engine, { messages, tools: { python: {} } }); } catch (e) { badDef = `${e.name}/${e.code}: ${e.message}`; }
      let fnToWorker = "";
      try {
        await engine.chat.completions.create({ messages, tools: [{ ...PYTHON, run: () => 1 }] });
      } catch (e) { fnToWorker = `${e.name}/${e.code}: ${e.message}`; }
      await engine.unload();
      return { throwing, unknown, cut, ran, badDef, fnToWorker };
    }, { base, ask, PYTHON, ids: R.tool_call.ids });
    const t = r.throwing;
    eq(t.finish_reason, "stop", "throwing tool: the loop goes on");
    eq(t.steps[0].results[0].error, true, "throwing tool: error result");
    eq(t.steps[0].results[0].content, "Error: the sandbox is down", "throwing tool: the model reads the error");
    eq(t.messages[2].content, "Error: the sandbox is down", "throwing tool: the tool message");
    eq(t.message.content, R.answer.text, "throwing tool: the next turn still saw a <tool_response>");
    const u = r.unknown.steps[0].results[0];
    ok(u.error && /^Error: there is no tool named "python"/.test(u.content) && /calculator/.test(u.content), `unknown tool: ${u.content}`);
    eq(r.cut.finish_reason, "invalid_tool_call", "cut reply: finish_reason");
    ok(!r.cut.message.tool_calls?.length && r.cut.steps.length === 0 && r.cut.message.content.includes("<tool_call>"), `cut reply: ${JSON.stringify(r.cut.message)}`);
    eq(r.ran, 0, "cut reply: no tool ran");
    ok(/^RequestError\/request_invalid: .*python/.test(r.badDef), r.badDef);
    ok(/^RequestError\/request_invalid: /.test(r.fnToWorker), r.fnToWorker);
  });

  test("agent: a malformed (cut) tool call comes back as content with finish_reason invalid_tool_call, streamed and whole, never a throw", async () => {
    const ids = R.tool_call.ids;
    const r = await page.evaluate(async ({ base, ask, PYTHON, ids }) => {
      const engine = await qwen.createEngine(base);
      const { chunks: pieces } = await engine.detokenize(ids);
      const out = [];
      // Cut the reply after each token from `<tool_call>` on (before its `</tool_call>`).
      const from = pieces.findIndex((p) => p.includes("<tool_call>"));
      const to = pieces.findIndex((p) => p.includes("</tool_call>"));
      for (const n of [from + 1, from + 3, Math.floor((from + to) / 2)]) {
        const req = { messages: [{ role: "user", content: ask }], tools: [PYTHON], temperature: 0, max_tokens: n };
        const whole = await engine.chat.completions.create(req);
        let text = "";
        let reasoning = "";
        let finish = null;
        let calls = 0;
        for await (const c of engine.chat.completions.create({ ...req, stream: true })) {
          text += c.choices[0].delta.content ?? "";
          reasoning += c.choices[0].delta.reasoning_content ?? "";
          calls += c.choices[0].delta.tool_calls?.length ?? 0;
          finish = c.choices[0].finish_reason ?? finish;
        }
        out.push({ n, whole, text, reasoning, finish, calls, expect: pieces.slice(0, n).join("") });
      }
      await engine.unload();
      return { out, from, to };
    }, { base, ask, PYTHON, ids });
    ok(r.from > 0 && r.to > r.from, `the script has <tool_call> at ${r.from} and </tool_call> at ${r.to}`);
    for (const o of r.out) {
      const m = o.whole.choices[0].message;
      eq(o.whole.choices[0].finish_reason, "invalid_tool_call", `cut after ${o.n} tokens: whole finish_reason`);
      eq(o.finish, "invalid_tool_call", `cut after ${o.n} tokens: streamed finish_reason`);
      ok(!m.tool_calls?.length && o.calls === 0, `cut after ${o.n} tokens: no tool call`);
      ok(typeof m.content === "string" && m.content.startsWith("<tool_call>"), `cut after ${o.n} tokens: the raw text is content: ${JSON.stringify(m.content)}`);
      eq(o.text, m.content, `cut after ${o.n} tokens: streamed content`);
      // What was generated, reasoning and content together, is the script's text so far.
      eq(`<think>${m.reasoning_content}</think>${m.content}`, o.expect, `cut after ${o.n} tokens: the text generated`);
    }
  });

  test("agent: stop strings end the reply inside a token and inside a character, streamed and whole; generation ends there", async () => {
    const r = await page.evaluate(async ({ base, ids, text }) => {
      const engine = await qwen.createEngine(base);
      const { chunks } = await engine.detokenize(ids);
      const req = { messages: [{ role: "user", content: "Say hello." }], enable_thinking: false, temperature: 0 };
      const full = await engine.chat.completions.create(req);
      const out = [];
      // Every stop: [the stop string, where it starts in the text].
      const cps = Array.from(text);
      const stops = [];
      // Inside a token: the second character of each token of at least two characters.
      let at = 0;
      for (const c of chunks) {
        if (Array.from(c).length >= 2 && at > 0) stops.push(text.slice(at + Array.from(c)[0].length, at + Array.from(c)[0].length + 3));
        at += c.length;
      }
      stops.unshift("😀", "界", "Bye.", cps.slice(-3).join(""));
      for (const stop of [...new Set(stops)].filter((s) => s && text.includes(s)).slice(0, 8)) {
        const whole = await engine.chat.completions.create({ ...req, stop });
        let streamed = "";
        const pieces = [];
        let finish = null;
        for await (const c of engine.chat.completions.create({ ...req, stop: [stop, "never appears"], stream: true })) {
          const d = c.choices[0].delta.content ?? "";
          if (d) pieces.push(d);
          streamed += d;
          finish = c.choices[0].finish_reason ?? finish;
        }
        out.push({ stop, whole, streamed, pieces, finish });
      }
      await engine.unload();
      return { full, chunks, out };
    }, { base, ids: R.hello.ids, text: R.hello.text });
    eq(r.full.choices[0].message.content, R.hello.text, "without stop: the scripted reply");
    eq(r.full.choices[0].finish_reason, "stop", "without stop: finish_reason");
    ok(r.out.length >= 4, `stops tried: ${r.out.map((o) => o.stop)}`);
    for (const o of r.out) {
      const p = R.hello.text.indexOf(o.stop);
      const want = R.hello.text.slice(0, p);
      eq(o.whole.choices[0].message.content, want, `stop ${JSON.stringify(o.stop)}: whole content`);
      eq(o.whole.choices[0].finish_reason, "stop", `stop ${JSON.stringify(o.stop)}: finish_reason`);
      eq(o.streamed, want, `stop ${JSON.stringify(o.stop)}: streamed content`);
      eq(o.finish, "stop", `stop ${JSON.stringify(o.stop)}: streamed finish_reason`);
      // Generation ended at the token that completed the stop string.
      let n = 0;
      let len = 0;
      while (len < p + o.stop.length) len += r.chunks[n++].length;
      eq(o.whole.usage.completion_tokens, n, `stop ${JSON.stringify(o.stop)}: tokens generated`);
      // The stream did not hold back text that could not become the stop string.
      if (p > 8) ok(o.pieces.length >= 2, `stop ${JSON.stringify(o.stop)}: streamed in ${o.pieces.length} pieces`);
    }
  });

  test("agent: logprobs are there and sane (≤ 0, top sorted, as many as asked, bytes spell the text), streamed and whole alike", async () => {
    const r = await page.evaluate(async ({ base }) => {
      const engine = await qwen.createEngine(base);
      const req = { messages: [{ role: "user", content: "Say hello." }], enable_thinking: false, temperature: 0 };
      const off = await engine.chat.completions.create(req);
      const runs = {};
      for (const k of [0, 3, 20]) {
        const whole = await engine.chat.completions.create({ ...req, logprobs: true, top_logprobs: k });
        const streamed = [];
        let nulls = 0;
        for await (const c of engine.chat.completions.create({ ...req, logprobs: true, top_logprobs: k, stream: true })) {
          if (c.choices[0].logprobs) streamed.push(...c.choices[0].logprobs.content);
          else nulls++;
        }
        runs[k] = { whole, streamed, nulls };
      }
      // Sampling at a high temperature: logprobs are still those of the raw logits.
      const hot = await engine.chat.completions.create({ ...req, logprobs: true, top_logprobs: 2, temperature: 1.5, seed: 3, max_tokens: 16 });
      let bad = "";
      try { await engine.chat.completions.create({ ...req, logprobs: true, top_logprobs: 21 }); } catch (e) { bad = `${e.name}/${e.code}: ${e.message}`; }
      await engine.unload();
      return { off: off.choices[0].logprobs, runs, hot, bad };
    }, { base });
    eq(r.off, null, "logprobs not asked: null");
    const text = R.hello.text;
    for (const [k, { whole, streamed }] of Object.entries(r.runs)) {
      const c = whole.choices[0];
      const entries = c.logprobs.content;
      eq(entries.length, whole.usage.completion_tokens, `k=${k}: one entry per generated token`);
      eq(JSON.stringify(streamed), JSON.stringify(entries), `k=${k}: streamed entries vs whole`);
      for (const [i, e] of entries.entries()) {
        ok(Number.isFinite(e.logprob) && e.logprob <= 0, `k=${k} #${i}: logprob ${e.logprob}`);
        eq(e.top_logprobs.length, Number(k), `k=${k} #${i}: top_logprobs length`);
        for (let j = 1; j < e.top_logprobs.length; j++) {
          ok(e.top_logprobs[j - 1].logprob >= e.top_logprobs[j].logprob, `k=${k} #${i}: top_logprobs sorted`);
        }
        if (e.top_logprobs.length) {
          eq(e.top_logprobs[0].token, e.token, `k=${k} #${i}: greedy picks the most likely`);
          ok(Math.abs(e.top_logprobs[0].logprob - e.logprob) < 1e-6, `k=${k} #${i}: its logprob`);
          // The script's logits are far apart: the runner-up is much less likely.
          if (e.top_logprobs.length > 1) ok(e.top_logprobs[1].logprob < e.logprob - 1, `k=${k} #${i}: runner-up ${e.top_logprobs[1].logprob} vs ${e.logprob}`);
          const mass = e.top_logprobs.reduce((s, t) => s + Math.exp(t.logprob), 0);
          ok(mass <= 1 + 1e-4, `k=${k} #${i}: top probabilities sum to ${mass}`);
        }
        ok(Array.isArray(e.bytes) && e.bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256), `k=${k} #${i}: bytes`);
      }
      // The entries' bytes spell the reply (then `<|im_end|>`'s text, if the stop token has an entry).
      const bytes = entries.flatMap((e) => e.bytes);
      const spelled = new TextDecoder().decode(new Uint8Array(bytes));
      ok(spelled.startsWith(text), `k=${k}: the bytes spell ${JSON.stringify(spelled)}`);
    }
    const hot = r.hot.choices[0].logprobs.content;
    ok(hot.length > 0 && hot.every((e) => e.logprob <= 0 && e.top_logprobs.length === 2), "sampled: entries");
    ok(/^RequestError\/request_invalid: .*top_logprobs/.test(r.bad), `top_logprobs 21: ${r.bad}`);
  });

  test("agent: unknown request fields are RequestErrors naming them (whole, streamed, worker and thread); logit_bias and enable_thinking steer the script", async () => {
    const r = await page.evaluate(async ({ base, ask, thinkId }) => {
      const out = {};
      for (const useWorker of [true, false]) {
        const engine = await qwen.createEngine({ ...base, useWorker });
        const messages = [{ role: "user", content: ask }];
        const errs = {};
        const attempt = async (name, f) => { try { await f(); errs[name] = "no error"; } catch (e) { errs[name] = `${e.name}/${e.code}: ${e.message}`; } };
        await attempt("max_token", () => engine.chat.completions.create({ messages, max_token: 5 }));
        await attempt("n", () => engine.chat.completions.create({ messages, n: 2 }));
        await attempt("streamed", async () => { for await (const c of engine.chat.completions.create({ messages, stream: true, response_format: { type: "json_object" } })) void c; });
        await attempt("stream_options", () => engine.chat.completions.create({ messages, stream_options: { include_usage: true, extra: 1 } }));
        // Accepted: `model` (ignored) and stream_options.
        const accepted = await engine.chat.completions.create({ messages, model: "anything", temperature: 0, max_tokens: 3, stream_options: { include_usage: true } });
        // <think> forbidden: the script's runner-up, the answer.
        const biased = await engine.chat.completions.create({ messages, temperature: 0, logit_bias: { [thinkId]: -100 } });
        const noThinking = await engine.chat.completions.create({ messages, temperature: 0, enable_thinking: false });
        const kwargs = await engine.chat.completions.create({ messages, temperature: 0, chat_template_kwargs: { enable_thinking: false } });
        await engine.unload();
        out[useWorker ? "worker" : "thread"] = { errs, accepted: accepted.choices[0].finish_reason, biased: biased.choices[0].message,
          noThinking: noThinking.choices[0].message, kwargs: kwargs.choices[0].message };
      }
      return out;
    }, { base, ask, thinkId: R.tool_call.ids[0] });
    eq(R.tool_call.ids[0], 151667, "the tool_call script starts with <think> (151667 in Qwen3's vocabulary)");
    for (const [where, o] of Object.entries(r)) {
      for (const [field, e] of Object.entries(o.errs)) {
        const name = field === "streamed" ? "response_format" : field === "stream_options" ? "extra" : field;
        ok(e.startsWith("RequestError/request_invalid: ") && e.includes(name), `${where} ${field}: ${e}`);
      }
      eq(o.accepted, "length", `${where}: model and stream_options accepted`);
      eq(o.biased.content, R.answer.text, `${where}: logit_bias -100 on <think> gives the answer`);
      eq(o.noThinking.content, R.hello.text, `${where}: enable_thinking false ends the prompt in </think>\\n\\n`);
      eq(o.kwargs, o.noThinking, `${where}: chat_template_kwargs.enable_thinking`);
    }
  });
}
