// The tool loop for apps (`runTools`) and the built-in tools' code (a calculator with its own
// parser, the current time). Loaded on demand by index.js the first time one of them is used,
// so a page that never calls a tool fetches nothing more than before. Runs on the calling
// thread: the tools are the app's own functions, and only the OpenAI tool objects (JSON) go to
// the engine (and its worker).

import { qwenError } from "./errors.js";

const bad = (text) => qwenError("request_invalid", `runTools: ${text}`);

/** OpenAI's rule for function names (the chat template writes them into the prompt as is). */
const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The request's `tools` (OpenAI tool objects, sent to the engine) and the functions that run
 * them, by name, from either form runTools accepts: a map `{name: {description, parameters,
 * run}}`, or an array of OpenAI tools with a `functions` map `{name: run}`.
 */
function toolTable(spec, functions) {
  const defs = [];
  const runs = Object.create(null);
  const add = (name, description, parameters, run, where) => {
    if (typeof name !== "string" || !TOOL_NAME.test(name)) {
      throw bad(`${where}: a tool name is 1 to 64 letters, digits, _ or - (got ${JSON.stringify(name)})`);
    }
    if (name in runs) throw bad(`${where}: two tools are named ${name}`);
    if (typeof run !== "function") throw bad(`${where}: tool ${name} has no function to run`);
    if (description !== undefined && typeof description !== "string") throw bad(`${where}: the description of ${name} must be a string`);
    if (parameters !== undefined && (parameters === null || typeof parameters !== "object" || Array.isArray(parameters))) {
      throw bad(`${where}: the parameters of ${name} must be a JSON schema object`);
    }
    const fn = { name };
    if (description !== undefined) fn.description = description;
    fn.parameters = parameters ?? { type: "object", properties: {} };
    defs.push({ type: "function", function: fn });
    runs[name] = run;
  };
  if (Array.isArray(spec)) {
    if (functions === null || typeof functions !== "object") throw bad("tools given as OpenAI tool objects need `functions`: {name: run}");
    spec.forEach((t, i) => {
      if (!t || t.type !== "function" || !t.function || typeof t.function !== "object") {
        throw bad(`tools[${i}] must be {type: "function", function: {name, description, parameters}}`);
      }
      const name = t.function.name;
      add(name, t.function.description, t.function.parameters, Object.hasOwn(functions, name) ? functions[name] : undefined, `tools[${i}]`);
    });
    for (const name of Object.keys(functions)) {
      if (!(name in runs)) throw bad(`functions.${name} is not one of the tools`);
    }
  } else if (spec && typeof spec === "object") {
    if (functions !== undefined) throw bad("`functions` goes with tools given as an array of OpenAI tool objects; in the map form each tool has its own `run`");
    for (const [name, t] of Object.entries(spec)) {
      if (!t || typeof t !== "object") throw bad(`tools.${name} must be {description, parameters, run}`);
      add(name, t.description, t.parameters, t.run, `tools.${name}`);
    }
  } else {
    throw bad("`tools` must be a map {name: {description, parameters, run}} or an array of OpenAI tool objects");
  }
  return { defs, runs };
}

/** What a tool returned, as the text of its `tool` message. */
function resultText(out) {
  if (typeof out === "string") return out;
  if (out === undefined || out === null) return "";
  try {
    const s = JSON.stringify(out);
    return s === undefined ? String(out) : s;
  } catch {
    return String(out);
  }
}

/**
 * Run one parsed tool call. Never throws: an unknown tool, arguments that are not a JSON
 * object, or a tool that throws (or rejects) become an error result the model reads.
 */
async function runCall(call, runs, signal) {
  const id = typeof call?.id === "string" ? call.id : "";
  const name = call?.function?.name;
  const fail = (text) => ({ tool_call_id: id, name: String(name ?? ""), content: `Error: ${text}`, error: true });
  if (signal?.aborted) return fail("aborted");
  if (typeof name !== "string" || !(name in runs)) {
    return fail(`there is no tool named ${JSON.stringify(name ?? null)} (the tools are: ${Object.keys(runs).join(", ") || "none"})`);
  }
  const raw = call.function.arguments;
  let args;
  if (typeof raw === "string") {
    try {
      args = raw.trim() === "" ? {} : JSON.parse(raw);
    } catch (e) {
      return fail(`the arguments of ${name} are not valid JSON (${e.message}): ${raw}`);
    }
  } else {
    args = raw ?? {};
  }
  if (!args || typeof args !== "object" || Array.isArray(args)) {
    return fail(`the arguments of ${name} must be a JSON object (got ${resultText(args)})`);
  }
  try {
    const out = await runs[name](args, { signal, call });
    return { tool_call_id: id, name, content: resultText(out), error: false };
  } catch (e) {
    return fail(e?.message || String(e));
  }
}

/** Call `fn` for the app's display; what it throws is ignored (it must not break the loop). */
function notify(fn, ...args) {
  if (typeof fn !== "function") return;
  try { fn(...args); } catch { /* a display callback's failure is not the loop's */ }
}

/** Whether a delta carries anything to show. */
const hasDelta = (d) => !!(d && (d.content || d.reasoning_content || d.tool_calls?.length));

/**
 * One completion streamed: `onDelta` sees each chunk's delta; the reply is put together from
 * the deltas as an OpenAI client does (content and reasoning appended, tool calls merged by
 * `index`, their arguments appended).
 */
async function streamed(engine, req, onDelta) {
  let content = "";
  let reasoning = "";
  const calls = [];
  let finish = null;
  let usage = null;
  for await (const c of engine.chat.completions.create({ ...req, stream: true })) {
    if (c.usage) usage = c.usage;
    const ch = c.choices?.[0];
    if (!ch) continue;
    const d = ch.delta || {};
    if (hasDelta(d)) onDelta(d);
    if (typeof d.content === "string") content += d.content;
    if (typeof d.reasoning_content === "string") reasoning += d.reasoning_content;
    for (const t of Array.isArray(d.tool_calls) ? d.tool_calls : []) {
      const i = Number.isInteger(t?.index) ? t.index : 0;
      const cur = (calls[i] ||= { id: "", type: "function", function: { name: "", arguments: "" } });
      if (t.id) cur.id = t.id;
      if (t.type) cur.type = t.type;
      if (t.function?.name) cur.function.name += t.function.name;
      if (t.function?.arguments) cur.function.arguments += t.function.arguments;
    }
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  const toolCalls = calls.filter(Boolean);
  const message = { role: "assistant", content: content === "" && toolCalls.length ? null : content };
  if (reasoning) message.reasoning_content = reasoning;
  if (toolCalls.length) message.tool_calls = toolCalls;
  return { message, finish_reason: finish ?? "stop", usage };
}

/** One completion, whole. */
async function whole(engine, req) {
  const r = await engine.chat.completions.create({ ...req, stream: false });
  const ch = r.choices[0];
  return { message: ch.message, finish_reason: ch.finish_reason, usage: r.usage };
}

/**
 * The assistant message as it goes back into the conversation: only the fields a request's
 * message may have (the engine refuses unknown ones). `reasoning_content` stays: the chat
 * template decides whether to render it (Qwen3's keeps it within the current tool loop).
 */
function historyMessage(m) {
  const out = { role: "assistant", content: m.content ?? null };
  if (typeof m.reasoning_content === "string" && m.reasoning_content) out.reasoning_content = m.reasoning_content;
  if (Array.isArray(m.tool_calls) && m.tool_calls.length) {
    out.tool_calls = m.tool_calls.map((c) => ({
      id: c.id,
      type: c.type || "function",
      function: { name: c.function?.name ?? "", arguments: typeof c.function?.arguments === "string" ? c.function.arguments : resultText(c.function?.arguments ?? {}) },
    }));
  }
  return out;
}

/** The usage of several completions: summed counts, and each one's own. */
function sumUsage(list) {
  const n = (u, k) => (u && Number.isFinite(u[k]) ? u[k] : 0);
  return {
    prompt_tokens: list.reduce((s, u) => s + n(u, "prompt_tokens"), 0),
    completion_tokens: list.reduce((s, u) => s + n(u, "completion_tokens"), 0),
    total_tokens: list.reduce((s, u) => s + n(u, "total_tokens"), 0),
    completions: list,
  };
}

/** The most rounds of tool calls runTools allows itself to be asked for. */
export const MAX_STEPS = 100;

/**
 * The tool loop (index.d.ts: runTools): a completion; when its reply calls tools, run them,
 * append the assistant message and one `tool` message per call, and ask again; until a reply
 * calls no tool, or `maxSteps` rounds of calls have run (`finish_reason: "max_steps"`).
 */
export async function runTools(engine, opts) {
  if (!engine?.chat?.completions || typeof engine.chat.completions.create !== "function") {
    throw bad("the first argument must be an engine from createEngine");
  }
  if (!opts || typeof opts !== "object") throw bad("the options must be an object");
  const {
    messages, tools, functions, maxSteps = 5, signal,
    onDelta, onToolCall, onToolResult, onStep, prepareStep,
    stream, ...request
  } = opts;
  if (stream !== undefined) throw bad("`stream` is not an option of runTools: pass onDelta to see the replies as they come");
  if (!Array.isArray(messages)) throw bad("`messages` must be an array");
  if (!Number.isInteger(maxSteps) || maxSteps < 1 || maxSteps > MAX_STEPS) throw bad(`maxSteps must be a whole number from 1 to ${MAX_STEPS} (got ${maxSteps})`);
  for (const [k, f] of Object.entries({ onDelta, onToolCall, onToolResult, onStep, prepareStep })) {
    if (f !== undefined && typeof f !== "function") throw bad(`${k} must be a function`);
  }
  const { defs, runs } = toolTable(tools, functions);
  const conv = messages.slice();
  const steps = [];
  const usages = [];
  for (let step = 0; ; step++) {
    const extra = prepareStep ? await prepareStep({ step, messages: conv.slice() }) : undefined;
    if (extra !== undefined && extra !== null && (typeof extra !== "object" || Array.isArray(extra))) throw bad("prepareStep must return an object of request fields (or nothing)");
    const req = { ...request, ...(extra || {}), messages: conv.slice(), tools: defs };
    if (signal) req.signal = signal;
    const r = onDelta
      ? await streamed(engine, req, (d) => notify(onDelta, d, { step }))
      : await whole(engine, req);
    usages.push(r.usage);
    const message = r.message;
    const calls = Array.isArray(message.tool_calls) ? message.tool_calls : [];
    const end = (finish_reason) => ({ message, messages: [...conv, message], steps, usage: sumUsage(usages), finish_reason });
    // Only a reply that ended to call its tools has its calls run (one cut by max_tokens or
    // the context, or aborted, is returned as it is).
    if (!calls.length || signal?.aborted || !(r.finish_reason === "tool_calls" || r.finish_reason === "stop")) return end(r.finish_reason);
    if (steps.length >= maxSteps) return end("max_steps");
    conv.push(historyMessage(message));
    const results = [];
    for (const call of calls) {
      notify(onToolCall, call, { step });
      const res = await runCall(call, runs, signal);
      notify(onToolResult, res, { step });
      results.push(res);
      conv.push({ role: "tool", tool_call_id: res.tool_call_id, content: res.content });
    }
    const s = { step, message, toolCalls: calls, results, usage: r.usage };
    steps.push(s);
    notify(onStep, s);
    if (signal?.aborted) return { message, messages: conv.slice(), steps, usage: sumUsage(usages), finish_reason: "abort" };
  }
}

// ------------------------------------------------------------------ built-in tools

/** Functions the calculator knows, with their argument counts ([min, max]). */
const FUNCS = {
  sqrt: [Math.sqrt, 1, 1], abs: [Math.abs, 1, 1], sin: [Math.sin, 1, 1], cos: [Math.cos, 1, 1],
  tan: [Math.tan, 1, 1], asin: [Math.asin, 1, 1], acos: [Math.acos, 1, 1], atan: [Math.atan, 1, 2],
  exp: [Math.exp, 1, 1], ln: [Math.log, 1, 1], log: [Math.log10, 1, 1], log2: [Math.log2, 1, 1],
  floor: [Math.floor, 1, 1], ceil: [Math.ceil, 1, 1], round: [Math.round, 1, 1],
  min: [Math.min, 1, 64], max: [Math.max, 1, 64], pow: [Math.pow, 2, 2], hypot: [Math.hypot, 1, 64],
};
const CONSTS = { pi: Math.PI, e: Math.E };
/** The longest expression and the deepest nesting the calculator reads. */
const MAX_EXPR = 1000;
const MAX_DEPTH = 200;

/** The expression's tokens: numbers, names, operators and brackets (`×`/`÷` read as `*`/`/`). */
function lex(src) {
  const out = [];
  const re = /\s*(?:(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z_0-9]*)|(\*\*|[-+*/%^(),×÷−]))/y;
  let at = 0;
  while (at < src.length) {
    if (/^\s*$/.test(src.slice(at))) break;
    re.lastIndex = at;
    const m = re.exec(src);
    if (!m) {
      const pos = at + (src.length - at - src.slice(at).trimStart().length);
      throw new Error(`unexpected character ${JSON.stringify(src[pos])} at position ${pos + 1}`);
    }
    at = re.lastIndex;
    if (m[1] !== undefined) out.push({ t: "num", v: Number(m[1]) });
    else if (m[2] !== undefined) out.push({ t: "name", v: m[2] });
    else out.push({ t: "op", v: { "×": "*", "÷": "/", "−": "-" }[m[3]] ?? m[3] });
  }
  return out;
}

/**
 * The value of an arithmetic expression, by recursive descent over its tokens (no eval, no
 * Function): `+ -` < `* / %` < unary `-` < `^` (`**`; right-associative, so -2^2 = -4 and
 * 2^3^2 = 512) < numbers, constants, calls and brackets.
 */
export function evaluate(expression) {
  if (typeof expression !== "string") throw new Error("the expression must be a string");
  if (expression.length > MAX_EXPR) throw new Error(`the expression is longer than ${MAX_EXPR} characters`);
  const toks = lex(expression);
  if (!toks.length) throw new Error("the expression is empty");
  let i = 0;
  let depth = 0;
  const peek = () => toks[i];
  const isOp = (v) => peek()?.t === "op" && peek().v === v;
  const expect = (v) => {
    if (!isOp(v)) throw new Error(`expected ${JSON.stringify(v)} ${peek() ? `before ${JSON.stringify(String(peek().v))}` : "at the end"}`);
    i++;
  };
  const nest = (f) => {
    if (++depth > MAX_DEPTH) throw new Error(`the expression nests deeper than ${MAX_DEPTH}`);
    try { return f(); } finally { depth--; }
  };
  const sum = () => nest(() => {
    let v = product();
    while (isOp("+") || isOp("-")) v = toks[i++].v === "+" ? v + product() : v - product();
    return v;
  });
  const product = () => {
    let v = unary();
    while (isOp("*") || isOp("/") || isOp("%")) {
      const op = toks[i++].v;
      const r = unary();
      v = op === "*" ? v * r : op === "/" ? v / r : v % r;
    }
    return v;
  };
  const unary = () => nest(() => {
    if (isOp("-")) { i++; return -unary(); }
    if (isOp("+")) { i++; return unary(); }
    return power();
  });
  const power = () => {
    const base = primary();
    if (isOp("^") || isOp("**")) { i++; return Math.pow(base, unary()); }
    return base;
  };
  const primary = () => {
    const t = peek();
    if (!t) throw new Error("the expression ends too soon");
    if (t.t === "num") { i++; return t.v; }
    if (isOp("(")) { i++; const v = sum(); expect(")"); return v; }
    if (t.t === "name") {
      i++;
      const name = t.v.toLowerCase();
      if (isOp("(")) {
        if (!Object.hasOwn(FUNCS, name)) throw new Error(`unknown function ${t.v} (known: ${Object.keys(FUNCS).join(", ")})`);
        i++;
        const args = [];
        if (!isOp(")")) {
          args.push(sum());
          while (isOp(",")) { i++; args.push(sum()); }
        }
        expect(")");
        const [f, lo, hi] = FUNCS[name];
        if (args.length < lo || args.length > hi) throw new Error(`${name} takes ${lo === hi ? lo : `${lo} to ${hi}`} argument${hi > 1 ? "s" : ""} (got ${args.length})`);
        return f(...args);
      }
      if (Object.hasOwn(CONSTS, name)) return CONSTS[name];
      throw new Error(`unknown name ${t.v} (constants: pi, e)`);
    }
    throw new Error(`unexpected ${JSON.stringify(String(t.v))}`);
  };
  const v = sum();
  if (i < toks.length) throw new Error(`unexpected ${JSON.stringify(String(toks[i].v))} after a complete expression`);
  if (!Number.isFinite(v)) throw new Error(`the result is not a finite number (${v})`);
  return v;
}

/** The calculator tool's `run`: `{expression}` → `{expression, result}`. */
export function calculator(args) {
  const expression = args?.expression;
  if (typeof expression !== "string") throw new Error("calculator needs {\"expression\": string}");
  return { expression, result: evaluate(expression) };
}

/** The current-time tool's `run`: `{timeZone?}` → the time now, in that zone or the browser's. */
export function currentTime(args) {
  const tz = args?.timeZone ?? args?.timezone;
  if (tz !== undefined && typeof tz !== "string") throw new Error("timeZone must be an IANA time zone name such as Europe/Paris");
  const now = new Date();
  let fmt;
  try {
    fmt = new Intl.DateTimeFormat("en-US", { timeZone: tz || undefined, dateStyle: "full", timeStyle: "long" });
  } catch {
    throw new Error(`unknown time zone ${JSON.stringify(tz)} (use an IANA name such as Europe/Paris or UTC)`);
  }
  return { iso: now.toISOString(), local: fmt.format(now), timeZone: fmt.resolvedOptions().timeZone, unixMs: now.getTime() };
}
