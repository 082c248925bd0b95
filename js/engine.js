// The engine itself: wasm + the loader + the OpenAI-shaped API. Runs in a Web Worker (see
// worker.js / index.js) or, with `useWorker: false`, on the calling thread (index.js then
// imports this module on demand). The Qwen rules (default system prompt, prompt budget, stop
// ids, request defaults and checks) are the crate's, in wasm: this file only drives it.

import init, * as wasm from "./qwen_webgpu.js";
import { openSource, readPieces } from "./sources.js";
import { qwenError, asQwenError } from "./errors.js";
import { pushStream } from "./stream.js";
import { StoreSource, storeAvailable, writeStore, revisionOf, removeEntry } from "./store.js";
import { findStored, normaliseBase, storeWeights, ggufUrl } from "./cache.js";
// Static, not import(): a dynamic import splits the worker's bundle, which bundlers that
// build workers as one classic script (Vite's worker.format "iife") refuse.
import { runTools } from "./tools.js";

let ready = null;
/** Instantiate the wasm module once. */
export function initWasm(wasmUrl) {
  if (!ready) {
    ready = init({ module_or_path: wasmUrl || new URL("./qwen_webgpu_bg.wasm", import.meta.url) }).catch((e) => {
      ready = null;
      throw qwenError("wasm_failed", `cannot instantiate the WebAssembly module: ${e.message || e}`, e);
    });
  }
  return ready;
}

/** Qwen's ChatML constants, from the crate (`tokenizer::CHATML`). */
export async function chatFormat(wasmUrl) {
  await initWasm(wasmUrl);
  return wasm.chat_format();
}

const now = () => (typeof performance !== "undefined" ? performance.now() : Date.now());

/**
 * Load a model. `model`: base URL, a `.gguf` file's URL, Files (or one `.gguf` File),
 * directory handle or {name: data}.
 * Options: context, maxBatch, weights (omitted: the checkpoint's own format if it is
 * pre-quantized, else f16), encoder ("auto", "gpu" or "cpu": where a plain checkpoint is
 * quantized; the same bytes either way), kvCache, window (layer-wise window attention), cache
 * (keep the loaded model in the browser's model store; default: as useCache), useCache (true),
 * maxGpuBytes (also picks a Qwen v1 model's default context), maxBindingBytes, onProgress,
 * signal, wasmUrl, fetch.
 *
 * The model store (store.js): for a URL model with `cache` on, a model stored before (same
 * URL, `weights`, store version) loads from the browser's storage with no network request and
 * nothing to quantize; else it loads from the URL (its raw files then skip the Cache API) and
 * what the GPU holds is stored. A stored copy that fails to load is removed and the model is
 * loaded from its URL instead. Storage problems never fail a load: they are `warning` events.
 */
export async function loadEngine(model, opts = {}) {
  checkLoadOptions(opts);
  const store = await storeFor(model, opts);
  if (store?.hit) {
    store.source = new StoreSource(store.hit, store.base);
    try {
      return await loadOnce(model, opts, store);
    } catch (e) {
      if (!STORE_DAMAGE.has(e?.code)) throw e;
      warn(opts, "cache_damaged", `the stored copy of ${store.base} did not load (${e.message}); it was removed and the model is loaded from its URL`);
      try { await removeEntry(store.hit); } catch { /* already gone */ }
      store.hit = null;
      store.source = null;
    }
  }
  return await loadOnce(model, opts, store);
}

/** Errors of a stored copy that mean the copy is damaged (a network load may still work). */
const STORE_DAMAGE = new Set(["config_missing", "config_invalid", "weights_missing", "weights_corrupt", "weights_format", "tokenizer_missing", "tokenizer_invalid"]);

/** A `warning` progress event (`code`: cache_quota, cache_write, cache_damaged, cache_version, cache_unsupported). */
function warn(opts, code, text) {
  try { opts.onProgress?.({ phase: "warning", loaded: 0, total: 0, text, code }); } catch { /* a throwing callback must not break loading */ }
}

/** Why a GGUF model is not kept in the model store (the load's `store` result, and a warning when `cache: true` asked for it). */
export const GGUF_NOT_STORED = "GGUF models are not kept in the model store (it keeps safetensors folders, and a GGUF file's block types such as Q4_K have no place there yet); " +
  "the .gguf file itself is kept in the Cache API instead unless useCache is false";

/** The store's part of a load: null when off; else the key and the stored entry, if any. */
async function storeFor(model, opts) {
  const c = opts.cache;
  if (c !== undefined && c !== null && typeof c !== "boolean") {
    throw qwenError("request_invalid", `cache must be true or false (got ${JSON.stringify(c) ?? typeof c})`);
  }
  const weights = storeWeights(opts.weights);
  const url = typeof model === "string" || model instanceof URL;
  if (url && (c ?? opts.useCache !== false) && ggufUrl(model)) {
    if (c === true) warn(opts, "cache_unsupported", GGUF_NOT_STORED);
    return null;
  }
  if (!(c ?? opts.useCache !== false) || !url || !storeAvailable()
    || !["auto", "f16", "q8", "q4"].includes(weights)) return null;
  const base = normaliseBase(String(model));
  let hit = null;
  try { hit = await findStored(base, weights); } catch { hit = null; }
  return { base, weights, hit, source: null };
}

/** Store what the GPU of `engine` holds (after a load from the URL); the result, or a warning. */
async function keepModel(engine, store, { configText, genConfigText, tokConfigText, tokName, tokBytes, shardNames, opts, report }) {
  const files = { "config.json": configText };
  if (genConfigText !== null) files["generation_config.json"] = genConfigText;
  if (tokConfigText !== null) files["tokenizer_config.json"] = tokConfigText;
  if (tokName && tokBytes) files[tokName] = tokBytes;
  const fetchFn = opts.fetch || globalThis.fetch.bind(globalThis);
  try {
    const revision = await revisionOf(store.base, ["config.json", ...shardNames], fetchFn, opts.signal);
    const r = await writeStore({ engine, base: store.base, weights: store.weights, files, revision, source: shardNames,
      signal: opts.signal, onProgress: (done, total, name) => report("store", done, total, name), test: opts._testStore || {} });
    if (!r.stored) warn(opts, r.code, r.text);
    return r;
  } catch (e) {
    // Only an abort gets here: the load fails, and the model it made is freed.
    try { engine.unload(); } catch { /* gone */ }
    try { engine.free(); } catch { /* gone */ }
    throw e;
  }
}

/** The load itself, from `store.source` (a stored copy) or from `model`. */
async function loadOnce(model, opts, store) {
  checkLoadOptions(opts);
  const stats = { source: store?.source ? "store" : typeof model === "string" || model instanceof URL ? "url" : "files",
    bytesRead: null, weightsS: 0, uploadS: 0, finishS: 0, prequantized: false, store: null };
  const tLoad = now();
  const onProgress = opts.onProgress || (() => {});
  // Each event also carries the whole load's bytes, rate and ETA (sources.js's Meter), also
  // sent between the calls below as bytes arrive (at most every 100 ms).
  let src = null;
  let last = null;
  const report = (phase, loaded, total, text, extra) => {
    last = [phase, loaded, total, text];
    try { onProgress({ phase, loaded, total, text, ...src?.meter?.snapshot(phase === "ready"), ...extra }); } catch { /* a throwing callback must not break loading */ }
  };
  await initWasm(opts.wasmUrl);
  src = store?.source || await openSource(model, {
    useCache: !store && opts.useCache !== false,
    fetch: opts.fetch,
    signal: opts.signal,
    download: opts.download,
  });
  if (src.meter) src.meter.onUpdate = () => { if (last) report(...last); };
  let loader = null;
  try {
    // A GGUF file (src.gguf: its name) is the whole model: config, tensors and tokenizer.
    const gguf = src.gguf || null;
    const caching = !!(src.ensureCached && src.useCache);
    // The options wasm reads (LoadOptions: context, maxBatch, maxBindingBytes, maxGpuBytes,
    // weights, kvCache, encoder, window).
    const { context, maxBatch, maxBindingBytes, maxGpuBytes, weights, kvCache, encoder, window } = opts;
    const loadOpts = { context, maxBatch, maxBindingBytes, maxGpuBytes, weights, kvCache, encoder, window };
    let configText = null;
    let genConfigText = null;
    // tokenizer_config.json: its `chat_template` is how the checkpoint's chat prompts are
    // written (tools, thinking); without it wasm uses ChatML. A GGUF file carries its own.
    let tokConfigText = null;
    let shardNames;
    let tokName = null;
    let stored = "";
    let first;
    if (gguf) {
      // The header (metadata with the vocabulary, then the tensor table: a few MB for Qwen)
      // is read in growing prefixes; then the GPU opens and the fit check runs, before any
      // tensor byte is fetched.
      shardNames = [gguf];
      report("config", 0, 1, `reading the GGUF header of ${src.label}`);
      first = { file: await src.open(gguf) };
      const h = await readGgufHeader(first.file, gguf, opts._testGgufFirstRead);
      // A streamed body is read once, in order: the tensors the header read ran into are
      // served from the bytes already read.
      if (first.file.streamed) first.file = withPrefix(first.file, h.header);
      if (caching) {
        try { await first.file.cancel?.(); } catch { /* best effort */ }
        first = null;
      }
      loader = await wasm.open_gguf_loader(h.header, h.size, gguf, loadOpts);
    } else {
      report("config", 0, 1, `reading ${src.label}config.json`);
      configText = await src.text("config.json");
      genConfigText = (await src.has("generation_config.json")) ? await src.text("generation_config.json") : null;
      tokConfigText = (await src.has("tokenizer_config.json")) ? await src.text("tokenizer_config.json") : null;
      // Shards.
      shardNames = ["model.safetensors"];
      if (await src.has("model.safetensors.index.json")) {
        let index;
        try {
          index = JSON.parse(await src.text("model.safetensors.index.json"));
        } catch (e) {
          throw qwenError("weights_corrupt", `model.safetensors.index.json is not valid JSON: ${e.message}`);
        }
        const map = index && typeof index === "object" ? index.weight_map : undefined;
        if (!map || typeof map !== "object" || Array.isArray(map)) {
          throw qwenError("weights_corrupt", "model.safetensors.index.json: missing `weight_map`");
        }
        for (const [tensor, file] of Object.entries(map)) checkShardName(tensor, file);
        shardNames = [...new Set(Object.values(map))].sort();
        if (!shardNames.length) throw qwenError("weights_corrupt", "model.safetensors.index.json has an empty weight_map");
      }
      tokName = (await src.has("tokenizer.json")) ? "tokenizer.json" : (await src.has("qwen.tiktoken")) ? "qwen.tiktoken" : null;

      // The first shard's header (two small reads) says whether the checkpoint is
      // pre-quantized, which decides the weight format (`weights` omitted: the file's own).
      first = { file: await src.open(shardNames[0]) };
      first.header = await readHeader(shardNames[0], first.file);
      stored = wasm.safetensors_weight_format(first.header, first.file.size || Number.MAX_SAFE_INTEGER, shardNames[0]);
      if (caching) {
        // Read again from the cache after the download; stop a streamed body now.
        try { await first.file.cancel?.(); } catch { /* best effort */ }
        first = null;
      }

      // Fit check: the GPU opens and the run state is allocated before any weight is fetched.
      loader = await wasm.open_loader(configText, loadOpts, stored);
      if (genConfigText !== null) loader.add_generation_config(genConfigText);
      if (tokConfigText !== null) loader.add_tokenizer_config(tokConfigText);
    }
    const adapter = await webgpuAdapter(loader.describe());
    // The fit check's figures, before any weight byte is fetched: what the GPU will hold.
    const [weightBytes, stateBytes] = loader.needs();
    const estimate = { weights: loader.weight_format(), kvCache: loader.kv_format(), weightBytes, stateBytes, totalBytes: weightBytes + stateBytes };
    if (gguf) estimate.weightTypes = loader.weight_types();
    report("config", 1, 1, adapter, { estimate });

    // With the Cache API: download each file once into the cache, then read it by slices.
    if (caching) {
      const names = gguf ? [gguf] : ["config.json", ...(shardNames.length > 1 ? ["model.safetensors.index.json"] : []), ...shardNames];
      if (tokName) names.push(tokName);
      if (genConfigText !== null) names.push("generation_config.json");
      if (tokConfigText !== null) names.push("tokenizer_config.json");
      await src.expectSizes?.(names);
      for (const n of names) {
        await src.ensureCached(n, (loaded, total) => report("download", loaded, total, n));
      }
    }

    const files = [];
    if (gguf) {
      // open_gguf_loader made the file the loader's one shard.
      files.push(first ? first.file : await src.open(gguf));
    } else {
      for (const [i, name] of shardNames.entries()) {
        const f = i === 0 && first ? first.file : await src.open(name);
        const header = i === 0 && first ? first.header : await readHeader(name, f);
        loader.add_shard(name, header, f.size || Number.MAX_SAFE_INTEGER);
        files.push(f);
      }
    }
    const plan = loader.plan();
    const total = plan.reduce((s, t) => s + (t.end - t.start), 0);
    let loaded = 0;
    report("weights", 0, total, adapter);
    const tWeights = now();
    const pieces = plan.map((t) => ({ ...t, file: files[t.shard] }));
    for await (const { name, start, end, bytes } of readPieces(pieces, { ...src.dl, halt: () => src.halt?.() })) {
      if (opts.signal?.aborted) throw qwenError("aborted", "the load was aborted");
      const tPut = now();
      loader.put(name, bytes);
      stats.uploadS += (now() - tPut) / 1000;
      loaded += end - start;
      report("weights", loaded, total, name);
    }
    stats.weightsS = (now() - tWeights) / 1000;
    let tokBytes = undefined;
    if (tokName) {
      report("tokenizer", 0, 1, tokName);
      tokBytes = await src.bytes(tokName);
    }
    // A GGUF file's tokenizer was made from its metadata with the loader.
    const tokLabel = tokName || (gguf && loader.has_tokenizer() ? `${gguf} (GGUF metadata)` : "no tokenizer");
    const tFinish = now();
    const l = loader;
    loader = null; // finish() consumes it
    const engine = await l.finish(tokBytes);
    stats.finishS = (now() - tFinish) / 1000;
    stats.prequantized = stored !== "";
    stats.gguf = !!gguf;
    if (gguf && stats.source === "url" && (opts.cache ?? opts.useCache !== false)) stats.store = { stored: false, code: "cache_unsupported", text: GGUF_NOT_STORED };
    if (store?.source) stats.bytesRead = store.source.bytesRead;
    stats.loadS = (now() - tLoad) / 1000;
    if (store && !store.source) {
      stats.store = await keepModel(engine, store, { configText, genConfigText, tokConfigText, tokName, tokBytes, shardNames, opts, report });
    }
    report("tokenizer", 1, 1, tokLabel);
    report("ready", total, total, adapter);
    return new Engine(engine, {
      modelId: typeof model === "string" ? model : src.label,
      adapter,
      load: stats,
    });
  } catch (e) {
    if (loader) { try { loader.free(); } catch { /* already gone */ } }
    try { await src.discardWritten(); } catch { /* best effort */ }
    throw asQwenError(e, "weights_corrupt");
  }
}

/** A safetensors file's JSON header (two small reads: the 8-byte length, then the JSON). */
async function readHeader(name, f) {
  const prefix = await f.read(0, 8);
  const n = wasm.safetensors_header_len(prefix, f.size || Number.MAX_SAFE_INTEGER, name);
  return await f.read(8, 8 + n);
}

/**
 * The first read of a GGUF file's header: 8 MiB (Qwen's vocabulary makes the header 5-10 MB,
 * so one request usually holds it; the file's first tensors come along, and are read again).
 */
export const GGUF_FIRST_READ = 8 << 20;

/**
 * A GGUF file's first bytes, as many as its header needs (`gguf_header_need` in wasm says how
 * many more), read in growing prefixes, each read starting where the last ended (a streamed
 * body is read once, in order). Returns `{ header, size }` (`size`: the file's size, or
 * 2^53 - 1 while unknown). `first`: the first read's size (a test hook; default 8 MiB).
 */
export async function readGgufHeader(f, name, first = GGUF_FIRST_READ) {
  const known = Number.isFinite(f.size) && f.size >= 0;
  let size = known ? f.size : Number.MAX_SAFE_INTEGER;
  let buf = new Uint8Array(0);
  let want = Math.min(size, Number.isInteger(first) && first > 0 ? first : GGUF_FIRST_READ);
  for (let round = 0; ; round++) {
    if (want > buf.length) {
      // A body of unknown size may end early: then its size is known.
      const more = !known && f.readUpTo ? await f.readUpTo(buf.length, want) : await f.read(buf.length, want);
      if (!known && more.length < want - buf.length) size = buf.length + more.length;
      const next = new Uint8Array(buf.length + more.length);
      next.set(buf);
      next.set(more, buf.length);
      buf = next;
    }
    const need = wasm.gguf_header_need(buf, size, name);
    if (need === 0) return { header: buf, size };
    // The parser asks for more than it has (at most its 64 MiB header cap) or fails.
    if (need <= buf.length || round > 64) throw qwenError("weights_corrupt", `${name}: the GGUF header could not be read (asked for ${need} bytes with ${buf.length})`);
    want = need;
  }
}

/**
 * A streamed file whose first bytes `prefix` were read already: reads below `prefix.length`
 * come from it, the rest from `f` (which has delivered the prefix, so its reads stay in order).
 */
function withPrefix(f, prefix) {
  let head = prefix;
  return {
    ...f,
    read: async (start, end) => {
      const n = head ? head.length : 0;
      if (start >= n) {
        head = null; // reads only go forward: the prefix is done with
        return await f.read(start, end);
      }
      if (end <= n) return head.slice(start, end);
      const out = new Uint8Array(end - start);
      out.set(head.subarray(start, n));
      out.set(await f.read(n, end), n - start);
      head = null;
      return out;
    },
  };
}

/** Tokens `context` and `maxBatch` may be (the wasm side reads them as u32: no wrapping). */
export const MAX_CONTEXT = 1 << 20;

/**
 * Byte counts `maxGpuBytes` and `maxBindingBytes` may be: whole numbers JS holds exactly (wasm
 * reads them as u64; a fraction, a negative or 2^64 would be truncated or wrapped).
 */
export const MAX_BYTES = Number.MAX_SAFE_INTEGER;
/** The smallest storage-binding limit the engine runs with (src/gpu/mod.rs refuses less). */
export const MIN_BINDING_BYTES = 1 << 16;

/** Load options that are numbers: whole, in range, or omitted (RequestError naming the field). */
export function checkLoadOptions(opts) {
  const ranges = [["context", 1, MAX_CONTEXT], ["maxBatch", 1, MAX_CONTEXT], ["maxGpuBytes", 1, MAX_BYTES], ["maxBindingBytes", MIN_BINDING_BYTES, MAX_BYTES]];
  for (const [field, min, max] of ranges) {
    const v = opts[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      throw qwenError("request_invalid", `${field} must be a whole number from ${min} to ${max} (got ${typeof v === "number" ? v : JSON.stringify(v) ?? typeof v})`);
    }
  }
  // window: its values are checked by wasm (model::WindowSpec), against the model's layers.
  const w = opts.window;
  if (w !== undefined && w !== null && typeof w !== "string" && typeof w !== "number" &&
      !(Array.isArray(w) && w.every((x) => typeof x === "number"))) {
    throw qwenError("request_invalid", `window must be a string ("512", "256,512", "pow2:256:0.25", "off"), a number or an array of numbers (got ${JSON.stringify(w) ?? typeof w})`);
  }
}

/**
 * A shard named by model.safetensors.index.json must be a plain file name in the same folder,
 * as natively (src/weights/mod.rs): no `/` or `\`, no leading `.` (so no `..`), and, because
 * it is joined to a URL, no `:`, `%`, `?`, `#` or control characters either.
 */
export function checkShardName(tensor, file) {
  if (typeof file !== "string" || !file || file.length > 255 || /[/\\:%?#\u0000-\u001f\u007f]/.test(file) || file.startsWith(".")) {
    throw qwenError("weights_corrupt", `model.safetensors.index.json: bad shard name ${JSON.stringify(file)} for ${tensor} (a shard is a plain file name in the model's folder)`);
  }
}

let nextId = 1;

/** How often an idle engine asks whether its GPU device was lost. */
const LOST_POLL_MS = 250;

/**
 * What wasm reads of a request (`Request` in src/wasm.rs): the data fields, no callbacks and
 * none of the fields only JS reads (`stream`, `stream_options`), so that wasm can refuse any
 * other field it does not know with a RequestError naming it.
 */
function wireRequest(req, promptIds) {
  if (!req || typeof req !== "object") throw qwenError("request_invalid", "the request must be an object");
  const { signal: _s, onToken: _t, stream: _st, streamIds: _si, stream_options: so, ...data } = req;
  if (so !== undefined && so !== null) {
    if (typeof so !== "object" || Array.isArray(so)) throw qwenError("request_invalid", "stream_options must be an object");
    for (const [k, v] of Object.entries(so)) {
      if (k !== "include_usage") throw qwenError("request_invalid", `unknown field stream_options.${k}`);
      if (typeof v !== "boolean") throw qwenError("request_invalid", "stream_options.include_usage must be true or false");
    }
  }
  if (promptIds === undefined) return data;
  // generateIds: `promptIds` (or `prompt_ids`) becomes wasm's `prompt_ids`.
  const { promptIds: _p, ...rest } = data;
  return { ...rest, prompt_ids: promptIds };
}

/** A loaded model with the OpenAI/WebLLM-shaped API. Calls run one at a time, in order. */
export class Engine {
  constructor(inner, { modelId, adapter, load }) {
    this.inner = inner;
    /** How the model was loaded: source ("store", "url", "files"), bytes read, times, the store's result. */
    this.load = load || null;
    this.modelId = modelId;
    this.adapter = adapter;
    this.queue = Promise.resolve();
    this.unloaded = false;
    /** `{reason, message}` once the GPU device is lost (then every GPU call is `gpu_lost`). */
    this.lostInfo = null;
    /** Resolves with `{reason, message}` when the GPU device is lost (as `GPUDevice.lost`). Not on unload. */
    this.lost = new Promise((resolve) => { this._resolveLost = resolve; });
    const self = this;
    this.chat = { completions: { create: (req) => self._create(req) } };
    this._pollLost();
  }

  /** Whether the device is lost now (asks wasm: cheap); resolves `lost` the first time. */
  _checkLost() {
    if (this.lostInfo) return true;
    if (this.unloaded) return false;
    let info;
    try { info = this.inner.lost_info(); } catch { return false; }
    if (!info) return false;
    this.lostInfo = { reason: String(info.reason), message: String(info.message) };
    this._resolveLost(this.lostInfo);
    return true;
  }

  /** A loss while idle is noticed by polling (the device-lost callback lives in Rust). */
  _pollLost() {
    if (this._checkLost() || this.unloaded) return;
    const t = setTimeout(() => this._pollLost(), LOST_POLL_MS);
    t?.unref?.();
  }

  /** After a failure: whether the device is lost (a GpuError waits up to ~200 ms for the callback). */
  async _lostSoon(e) {
    if (this._checkLost()) return true;
    if (e?.name !== "GpuError") return false;
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 10));
      if (this._checkLost()) return true;
    }
    return false;
  }

  _lostError() {
    const { reason, message } = this.lostInfo;
    return qwenError("gpu_lost", `the GPU device was lost (${reason}: ${message}); load the model again`);
  }

  /** Run `job` after every earlier call has finished. */
  _enqueue(job, { evenIfLost = false } = {}) {
    const run = this.queue.then(async () => {
      if (this.unloaded) throw qwenError("engine_unloaded", "the engine was unloaded");
      if (!evenIfLost && this._checkLost()) throw this._lostError();
      try {
        return await job();
      } catch (e) {
        // A lost device may first show as another GPU failure (a failed readback) before the
        // device-lost callback has run: give it a moment.
        if (!evenIfLost && (await this._lostSoon(e))) throw this._lostError();
        throw e;
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }

  /**
   * TEST ONLY: destroy the GPU device, as a driver reset would lose it. `lost` then resolves
   * and calls reject with `gpu_lost`. Not part of the API.
   */
  _loseDeviceForTest() {
    this.inner.lose_device_for_test();
  }

  /** The model, its formats and the chat rules in use (EngineInfo in index.d.ts). */
  info() {
    return { model: this.modelId, adapter: this.adapter, ...this.inner.info(), load: this.load };
  }

  /**
   * Core loop: prefill the request's prompt (wasm builds it: `prompt_ids`, or for `chat` the
   * prompt the checkpoint's chat template renders from `messages`), then yield per token
   * `{ id, delta, logprobs }`: for a chat, `delta` is wasm's chat delta for the token
   * (`reply_push`: content, reasoning_content, tool_calls; null while text is held back) and
   * `logprobs` its OpenAI logprobs entry when the request asked for them. A chat ends with the
   * held-back tail (`reply_finish`, id undefined). Returns `{ finish_reason, usage }`.
   * Aborting (signal) stops after the token in flight.
   */
  async *_tokens(request, signal, chat) {
    try {
      await this.inner.start(request, chat);
    } catch (e) {
      throw asQwenError(e, "request_invalid");
    }
    const wantLogprobs = chat && request.logprobs === true;
    const onAbort = () => this.inner.abort();
    signal?.addEventListener("abort", onAbort);
    try {
      for (;;) {
        if (signal?.aborted) this.inner.abort();
        let id;
        try {
          id = await this.inner.next();
        } catch (e) {
          throw asQwenError(e, "gpu_failed");
        }
        if (id === undefined) break;
        if (!chat) {
          yield { id, delta: null, logprobs: null };
          continue;
        }
        let delta;
        let logprobs = null;
        try {
          delta = this.inner.reply_push(id) ?? null;
          if (wantLogprobs) logprobs = this.inner.logprobs() ?? null;
        } catch (e) {
          throw asQwenError(e, "tokenizer_invalid");
        }
        yield { id, delta, logprobs };
      }
      if (chat) {
        let tail;
        try { tail = this.inner.reply_finish(); } catch (e) { throw asQwenError(e, "tokenizer_invalid"); }
        if (tail) yield { id: undefined, delta: tail, logprobs: null };
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    return { finish_reason: this.inner.finish_reason() ?? "stop", usage: this.inner.usage() };
  }

  /**
   * Generate from raw token ids (no tokenizer needed). Resolves to
   * `{ ids, finish_reason, usage }`; `onToken(id)` sees each id as it arrives.
   */
  generateIds(req) {
    return this._enqueue(async () => {
      const ids = [];
      const promptIds = Array.from(req.promptIds || req.prompt_ids || []);
      const it = this._tokens(wireRequest(req, promptIds), req.signal, false);
      let r;
      while (!(r = await it.next()).done) {
        ids.push(r.value.id);
        if (req.onToken) req.onToken(r.value.id);
      }
      return { ids, ...r.value };
    });
  }

  /**
   * `chat.completions.create`: OpenAI's chat completion (or, with `stream: true`, its chunks)
   * built from wasm's chat deltas. Logprobs entries of tokens whose text is held back (a
   * possible stop string, a tool call being parsed) go out with the next chunk that has a
   * delta, so the stream carries one entry per generated token.
   */
  _create(req) {
    const id = `chatcmpl-${nextId++}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.modelId;
    let wire;
    try {
      wire = wireRequest(req);
    } catch (e) {
      return req?.stream ? failedStream(e) : Promise.reject(e);
    }
    const wantLogprobs = wire.logprobs === true;
    if (!req.stream) {
      return this._enqueue(async () => {
        const it = this._tokens(wire, req.signal, true);
        const entries = [];
        let r;
        while (!(r = await it.next()).done) if (r.value.logprobs) entries.push(r.value.logprobs);
        let message;
        try { message = this.inner.reply_message(); } catch (e) { throw asQwenError(e, "tokenizer_invalid"); }
        return {
          id,
          object: "chat.completion",
          created,
          model,
          choices: [{ index: 0, message, finish_reason: r.value.finish_reason, logprobs: wantLogprobs ? { content: entries } : null }],
          usage: r.value.usage,
        };
      });
    }
    // Streaming: the job is queued now; chunks flow through the shared push stream. Leaving
    // the loop early (break) aborts this request only.
    const ctl = new AbortController();
    if (req.signal) {
      if (req.signal.aborted) ctl.abort();
      else req.signal.addEventListener("abort", () => ctl.abort(), { once: true });
    }
    const out = pushStream(() => ctl.abort());
    const chunk = (delta, finish_reason, logprobs, usage) => ({
      id, object: "chat.completion.chunk", created, model,
      choices: [{ index: 0, delta, finish_reason, logprobs: wantLogprobs && logprobs ? { content: logprobs } : null }],
      ...(usage ? { usage } : {}),
    });
    this._enqueue(async () => {
      const it = this._tokens(wire, ctl.signal, true);
      out.push(chunk({ role: "assistant", content: "" }, null, null));
      let pending = [];
      let r;
      while (!(r = await it.next()).done) {
        if (r.value.logprobs) pending.push(r.value.logprobs);
        if (hasDelta(r.value.delta)) {
          out.push(chunk(r.value.delta, null, pending));
          pending = [];
        }
      }
      out.push(chunk({}, r.value.finish_reason, pending.length ? pending : null, r.value.usage));
    }).then(() => out.end(), (e) => out.end(e));
    return out.iterator;
  }

  /**
   * The tool loop on this engine (`runTools(this, opts)` of tools.js). The
   * tools run on this thread; each completion is queued as any other call.
   */
  async runTools(opts) {
    return runTools(this, opts);
  }

  /** Token ids of `text` (special-token strings stay plain text). Needs a tokenizer. */
  tokenize(text) {
    try { return Array.from(this.inner.encode(String(text))); } catch (e) { throw asQwenError(e, "tokenizer_invalid"); }
  }

  /**
   * Text of `ids`, and the chunks streaming them would produce (`chunks[i]`: text completed
   * by `ids[i]`, "" while a multi-byte character is incomplete; the last entry is the tail).
   */
  detokenize(ids) {
    try {
      const u = Uint32Array.from(ids);
      return { text: this.inner.decode(u), chunks: Array.from(this.inner.stream_chunks(u)) };
    } catch (e) {
      throw asQwenError(e, "tokenizer_invalid");
    }
  }

  /**
   * Benchmark this model as `qwen-webgpu bench --model` does (options prefill, decodeAt,
   * decodeTokens; lengths beyond the context are skipped; onProgress). Resolves to the
   * report. Forgets the conversation (the KV cache is overwritten).
   */
  benchmark(opts = {}) {
    return this._enqueue(async () => {
      const spec = benchSpec(opts, ["prefill", "decodeAt", "decodeTokens"]);
      const steps = 2 + (opts.prefill?.length ?? 2) + (opts.decodeAt?.length ?? 2);
      let step = 0;
      const cb = (label) => { try { opts.onProgress?.({ phase: "bench", loaded: step++, total: steps, text: label }); } catch { /* ignore */ } };
      let report;
      try {
        report = await this.inner.bench(spec, String(this.modelId), cb);
      } catch (e) {
        throw asQwenError(e, "gpu_failed");
      }
      return { ...report, adapter: this.adapter, ...browserInfo() };
    });
  }

  /** Forget the conversation (the KV cache); waits for running calls. */
  resetChat() {
    return this._enqueue(async () => this.inner.reset());
  }

  /** Free the model's GPU memory; waits for running calls. Later calls reject. */
  unload() {
    return this._enqueue(async () => {
      this.unloaded = true;
      try { this.inner.unload(); } finally { this.inner.free(); }
    }, { evenIfLost: true });
  }
}

/** Whether a chat delta from wasm carries anything (text, reasoning or tool call parts). */
function hasDelta(d) {
  if (!d || typeof d !== "object") return false;
  return !!(d.content || d.reasoning_content || (Array.isArray(d.tool_calls) && d.tool_calls.length));
}

/** A chunk stream that fails at its first read (a request refused before it was queued). */
function failedStream(e) {
  const out = pushStream();
  out.end(e);
  return out.iterator;
}

// ------------------------------------------------------------------ benchmark

/** Options of `benchmark()` (camelCase) → the Rust `SynthBench` (snake_case, as the CLI's flags). */
function benchSpec(opts, keys) {
  const map = {
    layers: "layers", vocab: "vocab", weights: "weights", kvCache: "kv_cache", context: "context",
    prefill: "prefill", decodeAt: "decode_at", decodeTokens: "decode_tokens", maxBatch: "max_batch",
    maxBindingBytes: "max_binding_bytes", window: "window",
  };
  const spec = {};
  for (const k of keys) {
    const v = opts[k];
    if (v === undefined || v === null || v === "") continue;
    // window: the CLI's --window text; a number or an array of numbers is written as one.
    if (k === "window") spec.window = Array.isArray(v) ? v.join(",") : String(v);
    else spec[map[k]] = (k === "prefill" || k === "decodeAt") ? Array.from(v, Number) : v;
  }
  return spec;
}

/** The WebGPU adapter's own name (wgpu cannot name a browser adapter), then wgpu's line. */
async function webgpuAdapter(wgpuLine) {
  try {
    const info = (await navigator.gpu?.requestAdapter())?.info;
    if (info && (info.vendor || info.architecture)) return `${[info.vendor, info.architecture, info.description].filter(Boolean).join(" ")}: ${wgpuLine}`;
  } catch { /* keep wgpu's line */ }
  return wgpuLine;
}

/** Where the figures come from, added to every browser report. */
const browserInfo = () => ({
  runtime: "browser (WebAssembly + WebGPU)",
  user_agent: typeof navigator !== "undefined" ? navigator.userAgent : "",
});

const yieldNow = () => new Promise((r) => setTimeout(r, 0));

/**
 * `qwen-webgpu bench` on this thread, on a synthesised Qwen-1.8B-shaped model (random
 * weights made here one tensor at a time; nothing is downloaded). Options (all optional,
 * the CLI's defaults): layers, vocab, weights, kvCache, context, prefill, decodeAt,
 * decodeTokens, maxBatch, maxBindingBytes, window; onProgress, signal, wasmUrl. Resolves to the
 * report (the fields of `qwen-webgpu bench --json`, plus load_s, runtime, user_agent).
 */
export async function runBenchmark(opts = {}) {
  const onProgress = opts.onProgress || (() => {});
  const report = (phase, loaded, total, text) => {
    try { onProgress({ phase, loaded, total, text }); } catch { /* a throwing callback must not break the run */ }
  };
  const aborted = () => opts.signal?.aborted;
  await initWasm(opts.wasmUrl);
  const spec = benchSpec(opts, ["layers", "vocab", "weights", "kvCache", "context", "prefill", "decodeAt", "decodeTokens", "maxBatch", "maxBindingBytes", "window"]);
  report("gpu", 0, 1, "opening the GPU and allocating the weights");
  let setup;
  try {
    setup = await wasm.open_bench(spec);
  } catch (e) {
    throw asQwenError(e, "gpu_failed");
  }
  const adapter = await webgpuAdapter(setup.describe());
  const model = setup.model();
  report("gpu", 1, 1, adapter);
  const t0 = now();
  try {
    let more = true;
    while (more) {
      if (aborted()) throw qwenError("aborted", "the benchmark was aborted");
      more = setup.step();
      const [done, total] = setup.progress();
      report("weights", done, total, model);
      await yieldNow(); // let progress show and an abort arrive
    }
  } catch (e) {
    try { setup.free(); } catch { /* already gone */ }
    throw asQwenError(e, "weights_corrupt");
  }
  const loadS = (now() - t0) / 1000;
  const steps = 2 + (opts.prefill?.length ?? 2) + (opts.decodeAt?.length ?? 2);
  let step = 0;
  let result;
  try {
    result = await setup.run((label) => report("bench", step++, steps, label));
  } catch (e) {
    throw asQwenError(e, "gpu_failed");
  }
  report("bench", steps, steps, "done");
  return { ...result, adapter, load_s: loadS, ...browserInfo() };
}
