// Qwen chat page: plain ES module, no framework. Talks to the qwen-webgpu package only.
// Model output and tool output are only ever put in the page as text (textContent), never as HTML.
import { createEngine, hasModelInCache, deleteModelCache, runTools, tools as builtinTools } from "../pkg/index.js";
import { PythonSandbox, formatResult } from "./sandbox.js";

const $ = (id) => document.getElementById(id);
const el = {
  gpuStatus: $("gpu-status"), modelPanel: $("model-panel"), loadForm: $("load-form"), preset: $("preset"),
  url: $("model-url"), folder: $("folder"), ggufFile: $("gguf-file"), folderInfo: $("folder-info"), weights: $("weights"), kv: $("kv"),
  budget: $("gpu-budget"), context: $("context"), cacheStatus: $("cache-status"), cacheText: $("cache-text"), cacheDelete: $("cache-delete"),
  load: $("load"), cancelLoad: $("cancel-load"), progressBox: $("progress-box"), progress: $("progress"),
  progressText: $("progress-text"), error: $("error"), lost: $("lost"), lostText: $("lost-text"), reloadModel: $("reload-model"), modelStatus: $("model-status"), log: $("log"), stats: $("stats"),
  composer: $("composer"), input: $("input"), send: $("send"), stop: $("stop"), newChat: $("new-chat"),
  system: $("system"), temperature: $("temperature"), topP: $("top-p"), maxTokens: $("max-tokens"),
  tools: $("tools"), toolsStatus: $("tools-status"), thinking: $("thinking"), maxSteps: $("max-steps"), pyTimeout: $("py-timeout"),
};

const state = {
  engine: null,
  loading: null, // AbortController while loading
  generating: null, // AbortController while a reply streams
  history: [], // the conversation without the system prompt (tool calls and results included)
  sandbox: null, // the Python sandbox (www/sandbox.js), made on the first Python call
  toolsSupported: false, // whether the loaded model's prompt format has tool calls
  toolsChoice: undefined, // the user's Tools choice, kept across models
  runs: new Map(), // tool call id -> its Python run (seconds, ok), for the display
  folderFiles: null, // FileList from "Open a local folder" or "open a local .gguf file"
  modelName: "",
  dropped: 0, // tokens of older messages the last reply's prompt left out (a note shows when it grows)
};

// ------------------------------------------------------------------ helpers

function show(node, text) {
  node.textContent = text;
  node.hidden = !text;
}
const showError = (text) => show(el.error, text);

function fmtBytes(n) {
  if (!Number.isFinite(n) || n <= 0) return "0 B";
  const u = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
}

function fmtTime(s) {
  if (!Number.isFinite(s) || s < 0) return "–";
  if (s < 60) return `${Math.ceil(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** What to tell the user about an engine error, by its machine-readable `code` (see the
 *  package's README); the engine's message follows in brackets. */
function describeError(e) {
  const msg = e?.message || String(e);
  switch (e?.code) {
    case "gpu_out_of_memory":
      return `This model is too big for this GPU. Try q4 weights, a q8 KV cache or a smaller model. (${msg})`;
    case "gpu_unavailable":
      return `No usable WebGPU device: ${msg}`;
    case "gpu_lost":
      return `The GPU device was lost (the driver reset, or the browser reclaimed it). Reload the model to go on. (${msg})`;
    case "gpu_failed":
      return `GPU error: ${msg}. Reloading the model (or the page) may help.`;
    case "worker_failed":
      return `The engine's worker could not start: ${msg}`;
    case "wasm_failed":
      return `The engine could not start in this browser: ${msg}`;
    case "network":
      return `Network error: could not download the model. Check the URL and your connection; the server must allow cross-origin requests. (${msg})`;
    case "config_missing":
      return `This does not look like a model folder (config.json could not be read). Check the URL or folder, or give a .gguf file. (${msg})`;
    case "config_invalid":
      return `This model's configuration (config.json, or a GGUF file's metadata) is not one this engine runs. (${msg})`;
    case "weights_missing":
      return `A weights file of the model is missing: ${msg}`;
    case "weights_format":
      return /GGUF type/.test(msg)
        ? `This GGUF file holds a weight type this engine does not load: pick another quantization of the model (q4_0, q8_0, Q4_K_M...). (${msg})`
        : `This folder is stored in another weight format: pick "auto" (its own format). (${msg})`;
    case "weights_corrupt":
      return `The model's weights could not be read: ${msg}`;
    case "tokenizer_missing":
    case "tokenizer_invalid":
      return `The model's tokenizer could not be read: ${msg}`;
    case "context_full":
      // Long conversations never fail (older messages are left out): only one message that
      // does not fit the whole context on its own.
      return `Your message is too long for the model's context (${state.context ?? "?"} tokens) even on its own: shorten it, or load the model with a longer context. (${msg})`;
    case "request_invalid":
    case "engine_busy":
    case "engine_unloaded":
      return `Request error: ${msg}`;
    case "aborted":
      return "Loading was cancelled.";
    default:
      return `Unexpected error (${e?.name || "Error"}): ${msg}`;
  }
}

// ------------------------------------------------------------------ WebGPU check

async function checkWebGpu() {
  if (!("gpu" in navigator) || !navigator.gpu) {
    return "This browser has no WebGPU. Use a recent Chrome or Edge (desktop or Android), or Safari 26+, and make sure the page is served over https or localhost.";
  }
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return "WebGPU is present but no GPU adapter is available (it may be disabled or blocklisted for this GPU/driver).";
  } catch (e) {
    return `WebGPU failed to start: ${e?.message || e}`;
  }
  return "";
}

// ------------------------------------------------------------------ model cache

/** Whether a URL (or a file name) names a GGUF file: its path ends in .gguf (a query string is fine). */
function isGguf(u) {
  try { return /\.gguf$/i.test(new URL(u, location.href).pathname); } catch { return /\.gguf$/i.test(u); }
}

/** The file name a .gguf URL ends in. */
function fileName(url) {
  const last = new URL(url, location.href).pathname.split("/").pop();
  try { return decodeURIComponent(last); } catch { return last; }
}

/** The model URL: a folder's ends in "/"; a .gguf file's is kept as typed. */
function currentUrl() {
  const u = el.url.value.trim();
  return u && !u.endsWith("/") && !isGguf(u) ? `${u}/` : u;
}

/** The weights choice before a GGUF model switched it to "auto" (put back for a folder). */
let weightsBeforeGguf = null;
let wasGguf = false;
/**
 * The model source changed: a GGUF model's own weight types are kept ("auto") unless another
 * format is chosen after; a model folder picked after a GGUF one gets the choice it had before.
 */
function modelKind(gguf) {
  if (gguf && !wasGguf) {
    if (el.weights.value !== "auto") weightsBeforeGguf = el.weights.value;
    el.weights.value = "auto";
  } else if (!gguf && wasGguf) {
    if (weightsBeforeGguf && el.weights.value === "auto") el.weights.value = weightsBeforeGguf;
    weightsBeforeGguf = null;
  }
  wasGguf = gguf;
}
el.weights.addEventListener("change", () => { weightsBeforeGguf = null; });

let cacheCheckSeq = 0;
async function refreshCacheStatus() {
  const seq = ++cacheCheckSeq;
  const url = currentUrl();
  if (!url || state.folderFiles) { el.cacheStatus.hidden = true; return; }
  let cached = false;
  try { cached = await hasModelInCache(new URL(url, location.href)); } catch { cached = false; }
  if (seq !== cacheCheckSeq) return;
  el.cacheStatus.hidden = !cached;
  if (cached) el.cacheText.textContent = "This model is already in the browser cache: loading it needs no download.";
}

el.cacheDelete.addEventListener("click", async () => {
  const url = currentUrl();
  try {
    const n = await deleteModelCache(new URL(url, location.href));
    el.cacheText.textContent = `Deleted ${n} cached file${n === 1 ? "" : "s"}.`;
    el.cacheDelete.hidden = true;
    setTimeout(() => { el.cacheDelete.hidden = false; refreshCacheStatus(); }, 2500);
  } catch (e) {
    showError(`Could not delete the cached model: ${e?.message || e}`);
  }
});

el.preset.addEventListener("change", () => {
  if (el.preset.value) el.url.value = el.preset.value;
  else el.url.focus();
  modelKind(isGguf(el.url.value.trim()));
  clearFolder();
  refreshCacheStatus();
});
el.url.addEventListener("input", () => {
  const match = [...el.preset.options].find((o) => o.value && o.value === el.url.value.trim());
  el.preset.value = match ? match.value : "";
  modelKind(isGguf(el.url.value.trim()));
  clearFolder();
  refreshCacheStatus();
});

function clearFolder() {
  if (!state.folderFiles) return;
  state.folderFiles = null;
  el.folder.value = "";
  el.ggufFile.value = "";
  el.folderInfo.textContent = "";
}
el.folder.addEventListener("change", () => {
  const files = el.folder.files;
  if (!files || !files.length) { clearFolder(); return; }
  el.ggufFile.value = "";
  state.folderFiles = files;
  const total = [...files].reduce((s, f) => s + f.size, 0);
  const dir = (files[0].webkitRelativePath || "").split("/")[0] || "folder";
  el.folderInfo.textContent = `Using local folder "${dir}": ${files.length} files, ${fmtBytes(total)}. Press Load model.`;
  modelKind(![...files].some((f) => f.name === "config.json") && [...files].some((f) => isGguf(f.name)));
  el.cacheStatus.hidden = true;
});
el.ggufFile.addEventListener("change", () => {
  const files = el.ggufFile.files;
  if (!files || !files.length) { clearFolder(); return; }
  el.folder.value = "";
  state.folderFiles = files;
  el.folderInfo.textContent = `Using local file "${files[0].name}": ${fmtBytes(files[0].size)}. Press Load model.`;
  modelKind(true);
  el.cacheStatus.hidden = true;
});

// ------------------------------------------------------------------ loading

function makeProgress() {
  const t0 = performance.now();
  let phase = "";
  let phaseStart = t0;
  let phaseStartBytes = 0;
  return (p) => {
    if (p.phase !== phase) { phase = p.phase; phaseStart = performance.now(); phaseStartBytes = p.loaded; }
    const label = { config: "Checking the model and the GPU", download: "Downloading", weights: "Uploading weights to the GPU", tokenizer: "Loading the tokenizer", ready: "Ready" }[p.phase] || p.phase;
    let frac = p.total > 0 ? Math.min(1, p.loaded / p.total) : 0;
    let text = label;
    // While bytes are coming: the whole load's bytes (all files), rate and time left, as the
    // engine measures them (bytesLoaded, bytesTotal, bytesPerSecond, etaSeconds).
    const downloading = (p.phase === "download" || p.phase === "weights") && p.bytesTotal > 0 && p.bytesLoaded < p.bytesTotal;
    if (downloading) {
      frac = p.bytesLoaded / p.bytesTotal;
      text = `Downloading — ${fmtBytes(p.bytesLoaded)} of ${fmtBytes(p.bytesTotal)} (${Math.floor(frac * 100)}%)`;
      if (p.bytesPerSecond > 0) text += `, ${fmtBytes(p.bytesPerSecond)}/s`;
      if (p.etaSeconds > 0 && Number.isFinite(p.etaSeconds)) text += `, about ${fmtTime(p.etaSeconds)} left`;
    } else if (p.phase === "download" || p.phase === "weights") {
      const dt = (performance.now() - phaseStart) / 1000;
      const rate = dt > 0.3 ? (p.loaded - phaseStartBytes) / dt : 0;
      const eta = rate > 0 ? (p.total - p.loaded) / rate : NaN;
      text += ` — ${fmtBytes(p.loaded)} of ${fmtBytes(p.total)} (${Math.floor(frac * 100)}%)`;
      if (p.loaded < p.total) text += `, about ${fmtTime(eta)} left`;
      if (rate > 0) text += `, ${fmtBytes(rate)}/s`;
    } else if (p.phase === "ready") {
      text += ` after ${fmtTime((performance.now() - t0) / 1000)}`;
    }
    el.progress.value = frac;
    el.progressText.textContent = text;
  };
}

/** The fit check's estimate (a progress event's `estimate`), shown before any download starts. */
function showEstimate(p) {
  const e = p?.estimate;
  if (!e) return;
  show(el.modelStatus, `This model needs ${fmtBytes(e.totalBytes)} of GPU memory: ${fmtBytes(e.weightBytes)} of ${weightsName(e)} weights ` +
    `and ${fmtBytes(e.stateBytes)} for the ${e.kvCache} KV cache and activations.`);
}

/** The weight format in words: q4, q8, f16, or a GGUF file's own types. */
function weightsName(e) {
  return e.weights === "gguf" ? `GGUF (${(e.weightTypes || []).join(", ")})` : e.weights;
}

/** The engine's GPU device was lost: say so (as text) and offer to load the model again. */
function onDeviceLost(engine, info) {
  if (state.engine !== engine) return; // an engine already replaced or unloaded
  state.generating?.abort();
  setChatEnabled(false);
  show(el.modelStatus, "");
  el.lostText.textContent = `The GPU device was lost (${info?.reason || "unknown"}: ${info?.message || "no details"}). ` +
    "Reload the model to go on; the conversation is kept.";
  el.lost.hidden = false;
}

el.reloadModel.addEventListener("click", () => { el.lost.hidden = true; loadModel(); });

async function loadModel() {
  showError("");
  el.lost.hidden = true;
  show(el.modelStatus, "");
  if (state.generating) state.generating.abort();
  if (state.engine) {
    const old = state.engine;
    state.engine = null;
    setChatEnabled(false);
    try { await old.unload(); } catch { /* already gone */ }
  }
  const fromFolder = !!state.folderFiles;
  const url = currentUrl();
  if (!fromFolder && !url) { showError("Enter a model URL or open a local folder."); el.url.focus(); return; }
  let model;
  if (fromFolder) model = [...state.folderFiles].filter((f) => !f.name.startsWith("."));
  else {
    try { model = new URL(url, location.href).href; } catch { showError(`"${url}" is not a valid URL.`); el.url.focus(); return; }
  }
  const budgetMiB = Number(el.budget.value);
  const context = Math.round(Number(el.context.value));
  const ctl = new AbortController();
  state.loading = ctl;
  el.load.disabled = true;
  el.cancelLoad.hidden = false;
  el.progressBox.hidden = false;
  el.progress.value = 0;
  el.progressText.textContent = "Starting…";
  const onProgress = makeProgress();
  try {
    const engine = await createEngine({
      model,
      onProgress: (p) => { showEstimate(p); onProgress(p); },
      weights: el.weights.value,
      kvCache: el.kv.value,
      signal: ctl.signal,
      ...(budgetMiB > 0 ? { maxGpuBytes: Math.round(budgetMiB * 1024 * 1024) } : {}),
      ...(context > 0 ? { context } : {}),
    });
    if (ctl.signal.aborted) { await engine.unload(); throw Object.assign(new Error("cancelled"), { name: "AbortError", code: "aborted" }); }
    state.engine = engine;
    engine.lost.then((info) => onDeviceLost(engine, info));
    const info = await engine.info();
    state.context = info.context;
    state.dropped = 0;
    // Left empty, the engine uses the model's default system prompt (its chat template's, or
    // for Qwen v1 the crate's ChatML default).
    const dflt = info.chatFormat?.default_system;
    el.system.placeholder = dflt ? `Empty: the default, "${dflt}"` : "Empty: the model's chat template decides";
    state.toolsSupported = toolSupport(info);
    updateToolsUi();
    state.modelName = fromFolder ? (el.folderInfo.textContent.match(/"([^"]*)"/)?.[1] || "local model")
      : isGguf(url) ? fileName(url)
      : url.replace(/\/+$/, "").replace(/\/resolve\/main$/, "").split("/").slice(-2).join("/");
    show(el.modelStatus, `Loaded ${state.modelName} (${weightsName(info)} weights, ${info.kvCache} KV cache, context ${info.context} tokens) on ${info.adapter}.`);
    if (!info.hasTokenizer) showError("This model has no tokenizer (tokenizer.json / qwen.tiktoken, or a GGUF file's vocabulary), so it cannot chat.");
    setChatEnabled(info.hasTokenizer);
    el.modelPanel.open = false;
    el.input.focus();
  } catch (e) {
    console.error(e);
    showError(describeError(e));
    el.progressText.textContent = "Not loaded.";
  } finally {
    state.loading = null;
    el.load.disabled = false;
    el.cancelLoad.hidden = true;
    refreshCacheStatus();
  }
}

el.loadForm.addEventListener("submit", (ev) => { ev.preventDefault(); loadModel(); });
el.cancelLoad.addEventListener("click", () => state.loading?.abort());

// ------------------------------------------------------------------ chat

function setChatEnabled(on) {
  el.input.disabled = !on;
  el.input.placeholder = on ? "Message Qwen: Enter sends, Shift+Enter adds a new line." : "Load a model, then type here. Enter sends, Shift+Enter adds a new line.";
  el.send.disabled = !on || !!state.generating;
  el.stop.disabled = !state.generating;
}

/** Add a message bubble; its text is set with textContent only. */
function addMessage(role, text) {
  const wrap = document.createElement("div");
  wrap.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : role === "assistant" ? "Qwen" : role;
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = text;
  wrap.append(who, body);
  el.log.append(wrap);
  scrollToEnd();
  return body;
}

/** The streaming path: set a bubble's text (never HTML). */
function renderText(body, text) {
  body.textContent = text;
  scrollToEnd();
}

function scrollToEnd() {
  const nearEnd = el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 120;
  if (nearEnd) el.log.scrollTop = el.log.scrollHeight;
}

function num(input, fallback) {
  const v = Number(input.value);
  return Number.isFinite(v) && input.value !== "" ? v : fallback;
}

/** A small element with text content only (model and tool output are untrusted: never HTML). */
function node(tag, className, text = "") {
  const n = document.createElement(tag);
  if (className) n.className = className;
  n.textContent = text;
  return n;
}

/**
 * One assistant turn as it streams: for each completion of the tool loop, its reasoning folded
 * ("Thinking…"), its text, and its tool calls folded (the call, then the result); the answer
 * of the last completion is the turn's last `.body`.
 */
class Turn {
  constructor() {
    this.body = addMessage("assistant", "");
    this.wrap = this.body.parentElement;
    this.wrap.classList.add("streaming");
    this.body.remove(); // each completion gets its own parts, made as they come
    this.parts = null;
    this.step = -1;
    this.text = ""; // the current completion's text
    this.answer = ""; // the last completion's text
    this.calls = []; // this completion's tool-call displays, by delta index
    this.toolCount = 0;
    this.newStep(0);
  }

  /** A new completion (step): fresh thinking, text and tool-call places. */
  newStep(step) {
    if (step === this.step) return;
    this.finishThinking();
    this.step = step;
    this.text = "";
    this.calls = [];
    this.thinking = null;
    this.reasoning = "";
    this.body = node("div", "body");
    this.wrap.append(this.body);
  }

  /** Reasoning text (`reasoning_content`), shown folded above the text. */
  addReasoning(t) {
    if (!this.thinking) {
      const d = node("details", "thinking");
      const s = node("summary", "", "Thinking…");
      const pre = node("div", "thinking-text");
      d.append(s, pre);
      this.wrap.insertBefore(d, this.body);
      this.thinking = { details: d, summary: s, text: pre, t0: performance.now(), done: false };
    }
    this.reasoning += t;
    this.thinking.text.textContent = this.reasoning;
    scrollToEnd();
  }

  finishThinking() {
    const th = this.thinking;
    if (!th || th.done) return;
    th.done = true;
    th.summary.textContent = `Thought for ${((performance.now() - th.t0) / 1000).toFixed(1)} s`;
  }

  addText(t) {
    if (t) this.finishThinking();
    this.text += t;
    this.answer = this.text;
    renderText(this.body, this.text);
  }

  /** A tool call's display (made from its first streamed delta or when it runs). */
  callView(index) {
    if (!this.calls[index]) {
      this.finishThinking();
      const d = node("details", "tool-call");
      d.dataset.step = String(this.step);
      const s = node("summary", "", "Calling a tool…");
      const args = node("pre", "tool-args");
      const res = node("pre", "tool-result");
      res.hidden = true;
      d.append(s, args, res);
      this.wrap.append(d);
      this.calls[index] = { details: d, summary: s, args, res, id: "", name: "", raw: "" };
      this.toolCount++;
    }
    return this.calls[index];
  }

  /** A streamed tool_calls delta: name and arguments appear as they come. */
  addToolDelta(t) {
    const v = this.callView(Number.isInteger(t.index) ? t.index : 0);
    if (t.id) v.id = t.id;
    if (t.function?.name) { v.name += t.function.name; v.summary.textContent = `Calling ${v.name}…`; }
    if (t.function?.arguments) { v.raw += t.function.arguments; v.args.textContent = v.raw; }
    scrollToEnd();
  }

  /** The parsed call, just before it runs: show its code (python) or its arguments. */
  toolCall(call) {
    let i = this.calls.findIndex((v) => v && call.id && v.id === call.id);
    if (i < 0) i = this.calls.findIndex((v) => v && !v.ran);
    if (i < 0) i = this.calls.length;
    const v = this.callView(i);
    v.ran = true;
    v.id = call.id || v.id;
    v.name = call.function?.name || v.name || "?";
    v.summary.textContent = `Running ${v.name}…`;
    v.args.textContent = callText(v.name, call.function?.arguments);
    v.details.classList.add("running");
    scrollToEnd();
  }

  /** A tool's result, under its call. */
  toolResult(r) {
    const v = this.calls.find((c) => c && c.id && c.id === r.tool_call_id) || this.calls.find((c) => c && c.ran && !c.done);
    if (!v) return;
    v.done = true;
    v.details.classList.remove("running");
    // A Python run that raised, timed out or was stopped is a failure too (the model reads it).
    const run = state.runs.get(r.tool_call_id);
    state.runs.delete(r.tool_call_id);
    const failed = !!r.error || (run !== undefined && !run.ok);
    v.details.classList.toggle("failed", failed);
    const secs = run !== undefined ? ` (${run.seconds.toFixed(2)} s)` : "";
    v.summary.textContent = `${failed ? "✗" : "✓"} ${v.name || r.name}: ${failed ? preview(run?.error || r.content, true) : preview(r.content)}${secs}`;
    v.res.hidden = false;
    v.res.textContent = r.content;
    scrollToEnd();
  }

  end(finish) {
    this.finishThinking();
    this.wrap.classList.remove("streaming");
    for (const v of this.calls) {
      if (!v || v.done) continue;
      v.details.classList.remove("running");
      v.summary.textContent = v.ran ? `${v.name}: stopped` : `A call of ${v.name || "a tool"} (not run)`;
    }
    // Empty text places of completions that only called tools are left out.
    for (const b of this.wrap.querySelectorAll(".body")) if (!b.textContent && b !== this.body) b.remove();
    if (finish === "abort") this.wrap.classList.add("stopped");
  }
}

/** How a call shows: a python call's code as code, other arguments as (pretty) JSON. */
function callText(name, args) {
  let a = args;
  if (typeof a === "string") { try { a = JSON.parse(a); } catch { return args; } }
  if (name === "python" && a && typeof a.code === "string") return a.code;
  try { return JSON.stringify(a, null, 2); } catch { return String(args); }
}

/** The first line of a tool's result (the last of an error: where the error is named),
 *  shortened, for the folded summary. */
function preview(s, last = false) {
  const lines = String(s ?? "").split("\n").filter((l) => l.trim());
  const line = (last ? lines.at(-1) : lines[0]) ?? "";
  const t = line.trim() || "(no output)";
  return t.length > 60 ? `${t.slice(0, 57)}…` : t;
}

// ------------------------------------------------------------------ tools

/** Whether the loaded model's prompt format can offer tools: a chat template from the checkpoint
 *  (Qwen2.5/Qwen3: `<tool_call>`), or Qwen v1's ChatML with its ReAct format. */
function toolSupport(info) {
  return info?.chatTemplate === "jinja" || info?.chatTemplate === "chatml";
}

/** The Python sandbox: made on the first Python call (Pyodide loads then, a few seconds). */
function sandbox() {
  const timeoutMs = Math.round(Math.max(1, Math.min(300, num(el.pyTimeout, 10))) * 1000);
  if (!state.sandbox) state.sandbox = new PythonSandbox({ timeoutMs });
  state.sandbox.timeoutMs = timeoutMs;
  return state.sandbox;
}

/** The tools the page offers: python (the sandbox) and the package's calculator and clock. */
function pageTools() {
  const sb = sandbox();
  const py = sb.tool();
  return {
    python: {
      ...py,
      // The sandbox's own run, so that the page can show how long the code itself ran.
      run: async (args, { signal, call } = {}) => {
        const code = args?.code;
        if (typeof code !== "string" || !code.trim()) return py.run(args, { signal });
        if (!sb.info) show(el.toolsStatus, "Starting Python (Pyodide)…");
        const r = await sb.run(code, { signal });
        if (call?.id) state.runs.set(call.id, r);
        updateToolsStatus();
        return formatResult(r);
      },
    },
    calculator: builtinTools.calculator,
    current_time: builtinTools.currentTime,
  };
}

/** Below this context, Tools start off: the tools' descriptions in the prompt take several
 *  hundred tokens (Qwen3's template: about 450 for the three tools), too much of a tiny context. */
const MIN_TOOLS_CONTEXT = 2048;

function updateToolsStatus() {
  const sb = state.sandbox;
  if (!state.engine) { show(el.toolsStatus, ""); return; }
  if (!state.toolsSupported) {
    show(el.toolsStatus, "This model's prompt format has no tool calls: tools are off.");
    return;
  }
  if (!el.tools.checked) {
    show(el.toolsStatus, (state.context || 0) < MIN_TOOLS_CONTEXT && state.toolsChoice === undefined
      ? `Tools are off: this model's context (${state.context} tokens) leaves little room for their descriptions.` : "");
    return;
  }
  const py = sb?.info ? `Python ${sb.info.version} ready (no network, ${sb.timeoutMs / 1000} s limit)` : "Python loads on first use";
  show(el.toolsStatus, `The model may call python, calculator and current_time. ${py}.`);
}

/** After a load: Tools on where the model can call them (and its context has room), unless the
 *  user chose otherwise. */
function updateToolsUi() {
  el.tools.disabled = !state.toolsSupported;
  if (!state.toolsSupported) el.tools.checked = false;
  else if (state.toolsChoice !== undefined) el.tools.checked = state.toolsChoice;
  else el.tools.checked = (state.context || 0) >= MIN_TOOLS_CONTEXT;
  updateToolsStatus();
}
el.tools.addEventListener("change", () => { state.toolsChoice = el.tools.checked; updateToolsStatus(); });

// ------------------------------------------------------------------ sending

/** The request fields from the settings (sampling, length, thinking). */
function requestFields(messages) {
  // The prompt and the reply share the context: keep at least half of it for the conversation.
  const maxTokens = Math.max(1, Math.min(Math.round(num(el.maxTokens, 512)), Math.floor((state.context || 4096) / 2)));
  const req = { messages, temperature: num(el.temperature, 0.7), top_p: num(el.topP, 1), max_tokens: maxTokens };
  if (el.thinking.value) req.enable_thinking = el.thinking.value === "on";
  return req;
}

async function send() {
  const text = el.input.value.trim();
  if (!text || !state.engine || state.generating) return;
  showError("");
  el.input.value = "";
  const before = state.history.length;
  state.history.push({ role: "user", content: text });
  addMessage("user", text);
  const turn = new Turn();
  const ctl = new AbortController();
  state.generating = ctl;
  setChatEnabled(true);
  el.stats.textContent = "Thinking…";
  const system = el.system.value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...state.history];
  const req = requestFields(messages);
  const useTools = state.toolsSupported && el.tools.checked;
  const t0 = performance.now();
  let usage = null;
  let finish = null;
  let tFirst = null;
  const done = []; // messages of finished tool rounds: [assistant with tool_calls, tool results...]
  const onDelta = (d, { step } = { step: 0 }) => {
    turn.newStep(step);
    if (tFirst === null) tFirst = performance.now();
    if (d.reasoning_content) turn.addReasoning(d.reasoning_content);
    if (d.content) turn.addText(d.content);
    for (const t of Array.isArray(d.tool_calls) ? d.tool_calls : []) turn.addToolDelta(t);
  };
  try {
    if (useTools) {
      const r = await runTools(state.engine, {
        ...req,
        tools: pageTools(),
        maxSteps: Math.max(1, Math.min(20, Math.round(num(el.maxSteps, 5)))),
        signal: ctl.signal,
        onDelta,
        onToolCall: (call) => turn.toolCall(call),
        onToolResult: (res) => turn.toolResult(res),
        onStep: (s) => {
          done.push(s.message, ...s.results.map((x) => ({ role: "tool", tool_call_id: x.tool_call_id, content: x.content })));
        },
      });
      finish = r.finish_reason;
      const all = r.usage?.completions?.filter(Boolean) ?? [];
      usage = all.at(-1) ?? null;
      if (usage) {
        const dropped = Math.max(...all.map((u) => u.prompt_tokens_details?.dropped_tokens ?? 0));
        usage = { ...usage, tool_rounds: r.steps.length, prompt_tokens_details: { ...usage.prompt_tokens_details, dropped_tokens: dropped } };
      }
      // The conversation as the model saw it (tool calls and results kept for later turns).
      state.history = r.messages.filter((m) => m.role !== "system");
      turn.answer = r.message?.content ?? turn.answer;
      if (r.finish_reason === "max_steps" && !turn.text) renderText(turn.body, "(stopped: the model still called tools after the tool-round limit)");
    } else {
      const stream = state.engine.chat.completions.create({ ...req, stream: true, signal: ctl.signal });
      for await (const chunk of stream) {
        const c = chunk.choices[0];
        if (c?.delta) onDelta(c.delta);
        if (c?.finish_reason) finish = c.finish_reason;
        if (chunk.usage) usage = chunk.usage;
      }
      if (turn.answer || turn.reasoning) state.history.push({ role: "assistant", content: turn.answer, ...(turn.reasoning ? { reasoning_content: turn.reasoning } : {}) });
    }
  } catch (e) {
    if (e?.code === "aborted" || e?.name === "AbortError") finish = "abort";
    else { console.error(e); showError(describeError(e)); finish = "error"; }
    // Keep what happened: finished tool rounds, then the partial answer.
    state.history.splice(before + 1, Infinity, ...done);
    if (turn.answer) state.history.push({ role: "assistant", content: turn.answer });
  } finally {
    state.generating = null;
    turn.end(finish);
    const last = state.history[state.history.length - 1];
    if (state.history.length === before + 1 && last?.role === "user") {
      state.history.pop(); // nothing came back: forget the question so the turns stay paired
    } else if (last?.role === "tool") {
      // Stopped after a tool ran: the model never answered; the assistant turn says so.
      state.history.push({ role: "assistant", content: "" });
    }
    if (!turn.answer && !turn.toolCount && !turn.reasoning) renderText(turn.body, finish === "abort" ? "(stopped)" : "(no reply)");
    contextNote(turn, usage);
    setChatEnabled(!!state.engine && el.lost.hidden);
    el.stats.textContent = statsLine(usage, finish, t0, tFirst);
    if (!el.input.disabled) el.input.focus();
  }
}

/**
 * A quiet note under a reply whose prompt left out more of the older messages than the last
 * one did (the engine leaves them out in blocks, so this shows every few turns of a long
 * conversation, not on every reply), or that went on past the end of the context.
 */
function contextNote(turn, u) {
  const d = u?.prompt_tokens_details;
  if (!d) return;
  const dropped = d.dropped_tokens ?? 0;
  const grew = dropped > state.dropped;
  state.dropped = dropped;
  if (!grew && !(d.continuations > 0)) return;
  const n = node("p", "context-note", "Older messages were left out to fit the context.");
  n.title = `${dropped} tokens of older messages are no longer in the model's context`;
  turn.wrap.append(n);
  scrollToEnd();
}

function statsLine(u, finish, t0, tFirst) {
  const why = { stop: "", length: " · hit max tokens", context_full: " · context is full", abort: " · stopped", error: " · failed",
    max_steps: " · hit the tool-round limit", invalid_tool_call: " · the model wrote a tool call that could not be read", tool_calls: "" }[finish] ?? "";
  const tools = u?.tool_rounds ? ` · ${u.tool_rounds} tool round${u.tool_rounds === 1 ? "" : "s"}` : "";
  if (u && Number.isFinite(u.time_to_first_token_s)) {
    const cached = u.prompt_tokens_details?.cached_tokens ?? 0;
    const reuse = cached > 0 ? ` (${cached} already in the cache)` : "";
    return `TTFT ${u.time_to_first_token_s.toFixed(2)} s · ${u.decode_tokens_per_s.toFixed(1)} tok/s · prefill ${u.prefill_tokens_per_s.toFixed(0)} tok/s · ${u.prompt_tokens} prompt${reuse} + ${u.completion_tokens} reply tokens${tools}${why}`;
  }
  const ttft = tFirst !== null ? ((tFirst - t0) / 1000).toFixed(2) : "–";
  return `TTFT ${ttft} s${tools}${why}`;
}

el.composer.addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
el.input.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); send(); }
});
el.stop.addEventListener("click", () => state.generating?.abort());
el.newChat.addEventListener("click", async () => {
  state.generating?.abort();
  state.history = [];
  state.dropped = 0;
  el.log.replaceChildren();
  el.stats.textContent = "";
  showError("");
  state.sandbox?.reset(); // a new chat gets a fresh Python session
  try { await state.engine?.resetChat(); } catch { /* the next request prefills anyway */ }
  if (!el.input.disabled) el.input.focus();
});

// ------------------------------------------------------------------ start

// A small hook for the end-to-end test: the same functions the streaming path uses.
window.qwenChat = { addMessage, renderText, state, sandbox };

(async () => {
  const problem = await checkWebGpu();
  if (problem) {
    el.gpuStatus.classList.add("error");
    show(el.gpuStatus, problem);
    el.load.disabled = true;
  }
  refreshCacheStatus();
  window.qwenChat.ready = true;
})();
