// Benchmark page: `qwen-webgpu bench` in this browser. Plain ES module, no framework; talks to
// the qwen-webgpu package only. Everything is put in the page as text (textContent), never HTML.
import { benchmark } from "../pkg/index.js";

const $ = (id) => document.getElementById(id);
const el = {
  gpuStatus: $("gpu-status"), form: $("bench-form"), layers: $("layers"), vocab: $("vocab"), weights: $("weights"),
  kv: $("kv"), prefill: $("prefill"), decodeAt: $("decode-at"), decodeTokens: $("decode-tokens"), context: $("context"), window: $("window"),
  run: $("run"), cancel: $("cancel"), progressBox: $("progress-box"), progress: $("progress"),
  progressText: $("progress-text"), error: $("error"), results: $("results"), where: $("where"), rows: $("rows"),
  copy: $("copy"), copyStatus: $("copy-status"), json: $("json"),
};

const state = { running: null, report: null, error: "", done: false };
window.qwenBench = { state, ready: false };

function show(node, text) {
  node.textContent = text;
  node.hidden = !text;
}

const mib = (b) => b / (1 << 20);
const fmtBytes = (n) => {
  const u = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
};

// ------------------------------------------------------------------ options

/** A positive integer, or undefined when empty; throws a readable message otherwise. */
function int(input, what) {
  const s = input.value.trim();
  if (!s) return undefined;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${what} must be a whole number of at least 1, not "${s}"`);
  return n;
}

function list(input, what) {
  const parts = input.value.split(/[\s,]+/).filter(Boolean);
  const out = parts.map((p) => Number(p));
  const bad = parts.find((p, i) => !Number.isInteger(out[i]) || out[i] < 1);
  if (bad !== undefined) throw new Error(`${what}: "${bad}" is not a whole number of at least 1`);
  return out;
}

function options() {
  return {
    layers: int(el.layers, "Layers"),
    vocab: int(el.vocab, "Vocabulary"),
    weights: el.weights.value,
    kvCache: el.kv.value,
    prefill: list(el.prefill, "Prefill lengths"),
    decodeAt: list(el.decodeAt, "Decode at"),
    decodeTokens: int(el.decodeTokens, "Tokens per decode measurement"),
    context: int(el.context, "KV cache length"),
    window: el.window.value.trim() || undefined,
  };
}

/** ?layers=1&vocab=1024&weights=q4&kv=q8&prefill=16&decode_at=16&decode_tokens=4&context=64&window=512&autorun=1 */
function presetFromQuery() {
  const q = new URLSearchParams(location.search);
  const set = (input, ...keys) => {
    for (const k of keys) if (q.has(k)) { input.value = q.get(k); return; }
  };
  set(el.layers, "layers");
  set(el.vocab, "vocab");
  set(el.prefill, "prefill");
  set(el.decodeAt, "decode_at", "decode-at", "decodeAt");
  set(el.decodeTokens, "decode_tokens", "decode-tokens", "decodeTokens");
  set(el.context, "context");
  set(el.window, "window");
  let valid = true;
  for (const [select, keys] of [[el.weights, ["weights"]], [el.kv, ["kv", "kv_cache", "kv-cache", "kvCache"]]]) {
    const k = keys.find((x) => q.has(x));
    if (k === undefined) continue;
    const v = q.get(k);
    if ([...select.options].some((o) => o.value === v)) select.value = v;
    else {
      valid = false;
      show(el.error, `Not run: ${k}=${v} is not one of ${[...select.options].map((o) => o.value).join(", ")}.`);
    }
  }
  return q.get("autorun") === "1" && valid;
}

// ------------------------------------------------------------------ results

/** The CLI's table (BenchReport::table), one row per line. */
function tableRows(r) {
  const rows = [
    ["adapter", "adapter", r.adapter],
    ["model", "model", `${r.model} (${(r.parameters / 1e9).toFixed(3)} B params, ${r.weight_format} weights, ${r.kv_cache_format} KV cache, context ${r.context})`],
    ["gpu", "gpu memory", `${r.gpu_bytes_allocated} bytes (${mib(r.gpu_bytes_allocated).toFixed(1)} MiB)`],
    ...((r.windows ?? []).some((w) => w > 0) ? [["windows", "windows", `${r.windows.map((w) => (w === 0 ? "all" : String(w))).join(",")} (keys per layer)`]] : []),
    ["bandwidth", "bandwidth", `${r.bandwidth_gb_s.toFixed(2)} GB/s (copy kernel, this run)`],
    ["per-token", "per token", `${r.dispatches_per_decoded_token} dispatches, ${r.submissions_per_decoded_token} submission, ${r.readback_bytes_per_decoded_token} bytes read back, ${mib(r.weight_bytes_per_token).toFixed(1)} MiB of weights`],
    ["ttft", "first token", `${r.time_to_first_token_s.toFixed(3)} s`],
  ];
  for (const p of r.prefill) rows.push([`prefill-${p.tokens}`, `prefill ${p.tokens}`, `${p.tok_per_s.toFixed(1)} tok/s (${p.seconds.toFixed(3)} s)`]);
  for (const d of r.decode) {
    rows.push([`decode-${d.context}`, `decode @${d.context}`,
      `${d.tok_per_s.toFixed(2)} tok/s (${d.ms_per_token.toFixed(1)} ms/token, ${mib(d.bytes_per_token).toFixed(1)} MiB/token, roofline ${d.roofline_fraction.toFixed(2)}, ${d.dispatches} dispatches)`]);
  }
  return rows;
}

function render(r) {
  el.rows.replaceChildren();
  for (const [key, label, value] of tableRows(r)) {
    const tr = document.createElement("tr");
    tr.dataset.key = key;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = label;
    const td = document.createElement("td");
    td.textContent = value;
    tr.append(th, td);
    el.rows.append(tr);
  }
  el.where.textContent = `Measured in this browser (WebAssembly + WebGPU), not by the native CLI: ${r.user_agent}. ` +
    `Random weights made and uploaded in ${r.load_s.toFixed(1)} s.`;
  el.json.textContent = JSON.stringify(r, null, 2);
  el.copyStatus.textContent = "";
  el.results.hidden = false;
}

el.copy.addEventListener("click", async () => {
  const text = el.json.textContent;
  try {
    await navigator.clipboard.writeText(text);
    el.copyStatus.textContent = "Copied.";
  } catch {
    // No clipboard permission: select the JSON so Ctrl+C copies it.
    el.json.closest("details").open = true;
    const range = document.createRange();
    range.selectNodeContents(el.json);
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    el.copyStatus.textContent = "The clipboard is not available here: the JSON is selected, press Ctrl+C.";
  }
});

// ------------------------------------------------------------------ run

/** What to tell the user, by the error's machine-readable `code` (see the package's README). */
function describeError(e) {
  const msg = e?.message || String(e);
  if (e?.code === "aborted") return "The benchmark was cancelled.";
  if (e?.code === "gpu_out_of_memory") {
    return `This size does not fit this GPU: try fewer layers, a smaller vocabulary, q4 weights or a q8 KV cache. (${msg})`;
  }
  return `${e?.name || "Error"}: ${msg}`;
}

function setRunning(on) {
  el.run.disabled = on;
  el.cancel.hidden = !on;
  for (const i of el.form.querySelectorAll("input, select")) i.disabled = on;
}

function progress(p) {
  el.progressBox.hidden = false;
  el.progress.value = p.total > 0 ? Math.min(1, p.loaded / p.total) : 0;
  let text;
  if (p.phase === "gpu") text = p.loaded ? `GPU: ${p.text}` : "Opening the GPU…";
  else if (p.phase === "weights") text = `Making random weights: ${fmtBytes(p.loaded)} of ${fmtBytes(p.total)} (${Math.floor((100 * p.loaded) / (p.total || 1))}%)`;
  else text = p.text === "done" ? "Done." : `Measuring: ${p.text}`;
  el.progressText.textContent = text;
}

async function run() {
  if (state.running) return;
  show(el.error, "");
  let opts;
  try {
    opts = options();
  } catch (e) {
    state.error = e.message;
    state.done = true;
    show(el.error, e.message);
    return;
  }
  const ctl = new AbortController();
  state.running = ctl;
  state.done = false;
  state.error = "";
  setRunning(true);
  progress({ phase: "gpu", loaded: 0, total: 1 });
  try {
    const r = await benchmark({ ...opts, signal: ctl.signal, onProgress: progress });
    state.report = r;
    render(r);
  } catch (e) {
    state.error = describeError(e);
    show(el.error, state.error);
  } finally {
    state.running = null;
    state.done = true;
    setRunning(false);
  }
}

el.form.addEventListener("submit", (e) => {
  e.preventDefault();
  run();
});
el.cancel.addEventListener("click", () => state.running?.abort());

// ------------------------------------------------------------------ start

async function checkWebGpu() {
  if (!navigator.gpu) {
    return "This browser has no WebGPU. Use a recent Chrome or Edge (desktop or Android), or Safari 26+, and make sure the page is served over https or localhost.";
  }
  try {
    if (!(await navigator.gpu.requestAdapter())) return "WebGPU is present but no GPU adapter is available.";
  } catch (e) {
    return `WebGPU failed to start: ${e?.message || e}`;
  }
  return "";
}

const autorun = presetFromQuery();
const problem = await checkWebGpu();
show(el.gpuStatus, problem);
if (problem) el.run.disabled = true;
window.qwenBench.ready = true;
if (autorun && !problem) run();
