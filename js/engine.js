// The engine itself: wasm + the loader + the OpenAI-shaped API. Runs in a Web Worker (see
// worker.js / index.js) or, with `useWorker: false`, on the calling thread.

import init, * as wasm from "./qwen_webgpu.js";
import { openSource, namedError } from "./sources.js";

let ready = null;
/** Instantiate the wasm module once. */
export function initWasm(wasmUrl) {
  if (!ready) {
    ready = init({ module_or_path: wasmUrl || new URL("./qwen_webgpu_bg.wasm", import.meta.url) }).catch((e) => {
      ready = null;
      throw namedError("GpuError", `cannot instantiate the WebAssembly module: ${e.message || e}`, e);
    });
  }
  return ready;
}

/** Errors from wasm already carry a name; anything else becomes a named Error. */
function asNamed(e, fallback = "GpuError") {
  if (e instanceof Error) {
    if (!e.name || e.name === "Error") e.name = fallback;
    return e;
  }
  return namedError(fallback, String(e));
}

const now = () => (typeof performance !== "undefined" ? performance.now() : Date.now());

function eosIds(...configs) {
  const ids = [];
  for (const c of configs) {
    const v = c && c.eos_token_id;
    if (typeof v === "number") ids.push(v);
    else if (Array.isArray(v)) ids.push(...v.filter((x) => typeof x === "number"));
  }
  return [...new Set(ids)];
}

/**
 * Load a model. `model`: base URL, Files, directory handle or {name: data}.
 * Options: context, maxBatch, weights (omitted: the checkpoint's own format if it is
 * pre-quantized, else f16), kvCache, useCache (true), maxGpuBytes, maxBindingBytes,
 * onProgress, signal, wasmUrl, fetch.
 */
export async function loadEngine(model, opts = {}) {
  const onProgress = opts.onProgress || (() => {});
  const report = (phase, loaded, total, text) => {
    try { onProgress({ phase, loaded, total, text }); } catch { /* a throwing callback must not break loading */ }
  };
  await initWasm(opts.wasmUrl);
  const src = await openSource(model, {
    useCache: opts.useCache !== false,
    fetch: opts.fetch,
    signal: opts.signal,
  });
  let loader = null;
  try {
    report("config", 0, 1, `reading ${src.label}config.json`);
    const configText = await src.text("config.json");
    let config;
    try {
      config = JSON.parse(configText);
    } catch (e) {
      throw namedError("ConfigError", `config.json is not valid JSON: ${e.message}`);
    }
    let genConfig = null;
    if (await src.has("generation_config.json")) {
      try { genConfig = JSON.parse(await src.text("generation_config.json")); } catch { genConfig = null; }
    }
    // Shards.
    let shardNames = ["model.safetensors"];
    if (await src.has("model.safetensors.index.json")) {
      let index;
      try {
        index = JSON.parse(await src.text("model.safetensors.index.json"));
      } catch (e) {
        throw namedError("WeightsError", `model.safetensors.index.json is not valid JSON: ${e.message}`);
      }
      shardNames = [...new Set(Object.values(index.weight_map || {}))].sort();
      if (!shardNames.length) throw namedError("WeightsError", "model.safetensors.index.json has an empty weight_map");
    }
    const tokName = (await src.has("tokenizer.json")) ? "tokenizer.json" : (await src.has("qwen.tiktoken")) ? "qwen.tiktoken" : null;
    const caching = !!(src.ensureCached && src.useCache);

    // The first shard's header (two small reads) says whether the checkpoint is
    // pre-quantized, which decides the weight format (`weights` omitted: the file's own).
    const readHeader = async (name, f) => {
      const prefix = await f.read(0, 8);
      const n = wasm.safetensors_header_len(prefix, f.size || Number.MAX_SAFE_INTEGER, name);
      return await f.read(8, 8 + n);
    };
    let first = { file: await src.open(shardNames[0]) };
    first.header = await readHeader(shardNames[0], first.file);
    const stored = wasm.safetensors_weight_format(first.header, first.file.size || Number.MAX_SAFE_INTEGER, shardNames[0]);
    if (caching) {
      // Read again from the cache after the download; stop a streamed body now.
      try { await first.file.cancel?.(); } catch { /* best effort */ }
      first = null;
    }

    // Fit check: the GPU opens and the run state is allocated before any weight is fetched.
    loader = await wasm.open_loader(
      configText,
      opts.context || 0,
      opts.maxBatch || 0,
      opts.maxBindingBytes || 0,
      opts.maxGpuBytes || 0,
      opts.weights || "",
      opts.kvCache || "f32",
      stored,
    );
    let adapter = loader.describe();
    try {
      // wgpu cannot name a browser adapter; WebGPU's own info can.
      const info = (await navigator.gpu?.requestAdapter())?.info;
      if (info && (info.vendor || info.architecture)) adapter = `${[info.vendor, info.architecture, info.description].filter(Boolean).join(" ")}: ${adapter}`;
    } catch { /* keep wgpu's description */ }
    report("config", 1, 1, adapter);

    // With the Cache API: download each file once into the cache, then read it by slices.
    if (caching) {
      const names = ["config.json", ...(shardNames.length > 1 ? ["model.safetensors.index.json"] : []), ...shardNames];
      if (tokName) names.push(tokName);
      if (genConfig) names.push("generation_config.json");
      for (const n of names) {
        await src.ensureCached(n, (loaded, total) => report("download", loaded, total, n));
      }
    }

    const files = [];
    for (const [i, name] of shardNames.entries()) {
      const f = i === 0 && first ? first.file : await src.open(name);
      const header = i === 0 && first ? first.header : await readHeader(name, f);
      loader.add_shard(name, header, f.size || Number.MAX_SAFE_INTEGER);
      files.push(f);
    }
    const plan = loader.plan();
    const total = plan.reduce((s, [, , a, b]) => s + (b - a), 0);
    let loaded = 0;
    report("weights", 0, total, adapter);
    for (const [name, shard, start, end] of plan) {
      if (opts.signal?.aborted) throw namedError("AbortError", "the load was aborted");
      const bytes = await files[shard].read(start, end);
      loader.put(name, bytes);
      loaded += end - start;
      report("weights", loaded, total, name);
    }
    let tokBytes = undefined;
    if (tokName) {
      report("tokenizer", 0, 1, tokName);
      tokBytes = await src.bytes(tokName);
    }
    const l = loader;
    const formats = { weights: l.weight_format(), kvCache: l.kv_format() };
    loader = null; // finish() consumes it
    const engine = l.finish(tokBytes);
    report("tokenizer", 1, 1, tokName || "no tokenizer");
    report("ready", total, total, adapter);
    return new Engine(engine, {
      eos: eosIds(config, genConfig),
      modelId: typeof model === "string" ? model : src.label,
      adapter,
      config,
      formats,
    });
  } catch (e) {
    if (loader) { try { loader.free(); } catch { /* already gone */ } }
    try { await src.discardWritten(); } catch { /* best effort */ }
    throw asNamed(e, "WeightsError");
  }
}

let nextId = 1;

/** `v` if it is a whole number in 0..=max, else a RequestError naming `name`. */
function wholeNumber(name, v, max) {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw namedError("RequestError", `${name} must be a whole number from 0 to ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A loaded model with the OpenAI/WebLLM-shaped API. Calls run one at a time, in order. */
export class Engine {
  constructor(inner, { eos, modelId, adapter, config, formats }) {
    this.inner = inner;
    this.formats = formats;
    this.eos = eos;
    this.modelId = modelId;
    this.adapter = adapter;
    this.config = config;
    this.queue = Promise.resolve();
    this.unloaded = false;
    const self = this;
    this.chat = { completions: { create: (req) => self._create(req) } };
  }

  /** Run `job` after every earlier call has finished. */
  _enqueue(job) {
    const run = this.queue.then(() => {
      if (this.unloaded) throw namedError("RequestError", "the engine was unloaded");
      return job();
    });
    this.queue = run.catch(() => {});
    return run;
  }

  info() {
    return {
      model: this.modelId,
      adapter: this.adapter,
      context: this.inner.context(),
      vocabSize: this.inner.vocab_size(),
      hasTokenizer: this.inner.has_tokenizer(),
      eos: this.eos,
      weights: this.formats.weights,
      kvCache: this.formats.kvCache,
    };
  }

  _stopIds(req, fromTokenizer) {
    if (req.ignore_eos) return req.stop_token_ids || [];
    const ids = [...(req.stop_token_ids || []), ...this.eos];
    if (fromTokenizer) ids.push(...this.inner.stop_ids());
    if (!ids.length) ids.push(151643); // <|endoftext|>, as the CLI does
    return [...new Set(ids)];
  }

  /**
   * Core loop: prefill `promptIds`, then yield `{ id, text }` per token; returns usage.
   * Aborting (signal) stops after the token in flight.
   */
  async *_tokens(promptIds, req, withText) {
    const signal = req.signal;
    const t0 = now();
    try {
      // Whole numbers are checked here: wasm would silently wrap or truncate them.
      const maxTokens = wholeNumber("max_tokens", req.max_tokens ?? req.max_new_tokens ?? 256, 2 ** 32 - 1);
      const topK = wholeNumber("top_k", req.top_k ?? 0, 2 ** 32 - 1);
      const seed = wholeNumber("seed", req.seed ?? Math.floor(Math.random() * 2 ** 32), Number.MAX_SAFE_INTEGER);
      const ids = Uint32Array.from(promptIds, (id) => wholeNumber("token id", id, 2 ** 32 - 1));
      const stops = Uint32Array.from(this._stopIds(req, withText), (id) => wholeNumber("stop token id", id, 2 ** 32 - 1));
      const real = (name, v) => {
        if (typeof v !== "number") throw namedError("RequestError", `${name} must be a number, got ${JSON.stringify(v)}`);
        return v;
      };
      await this.inner.start(
        ids,
        false,
        maxTokens,
        real("temperature", req.temperature ?? (withText ? 0.7 : 0)),
        topK,
        real("top_p", req.top_p ?? 1),
        real("repetition_penalty", req.repetition_penalty ?? 1),
        seed,
        stops,
      );
    } catch (e) {
      throw asNamed(e, "RequestError");
    }
    const cached = this.inner.reused_tokens();
    let first = null;
    let n = 0;
    const onAbort = () => this.inner.abort();
    signal?.addEventListener("abort", onAbort);
    try {
      for (;;) {
        if (signal?.aborted) this.inner.abort();
        let id;
        try {
          id = await this.inner.next();
        } catch (e) {
          throw asNamed(e, "GpuError");
        }
        if (id === undefined) break;
        if (first === null) first = now();
        n++;
        let text = "";
        if (withText && !this.inner.is_special(id)) text = this.inner.stream_push(id) ?? "";
        yield { id, text };
      }
      if (withText) {
        const tail = this.inner.stream_finish();
        if (tail) yield { id: undefined, text: tail };
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    const t1 = now();
    const ttft = ((first ?? t1) - t0) / 1000;
    const decodeS = (t1 - (first ?? t1)) / 1000;
    const extra = {
      time_to_first_token_s: ttft,
      prefill_tokens_per_s: ttft > 0 ? (promptIds.length - cached) / ttft : 0,
      decode_tokens_per_s: decodeS > 0 && n > 1 ? (n - 1) / decodeS : 0,
      e2e_latency_s: (t1 - t0) / 1000,
    };
    return {
      finish_reason: this.inner.finish_reason() ?? "stop",
      usage: {
        prompt_tokens: promptIds.length,
        prompt_tokens_details: { cached_tokens: cached },
        completion_tokens: n,
        total_tokens: promptIds.length + n,
        ...extra,
        extra,
      },
    };
  }

  /**
   * Generate from raw token ids (no tokenizer needed). Resolves to
   * `{ ids, finish_reason, usage }`; `onToken(id)` sees each id as it arrives.
   */
  generateIds(req) {
    return this._enqueue(async () => {
      const ids = [];
      const it = this._tokens(Array.from(req.promptIds || req.prompt_ids || []), req, false);
      let r;
      while (!(r = await it.next()).done) {
        ids.push(r.value.id);
        if (req.onToken) req.onToken(r.value.id);
      }
      return { ids, ...r.value };
    });
  }

  _prompt(req) {
    if (!this.inner.has_tokenizer()) {
      throw namedError("TokenizerError", "chat needs a tokenizer (tokenizer.json or qwen.tiktoken next to the model); use generateIds for raw ids");
    }
    const msgs = req.messages;
    if (!Array.isArray(msgs) || !msgs.length) throw namedError("RequestError", "messages must be a non-empty array");
    const roles = [];
    const contents = [];
    for (const m of msgs) {
      let c = m.content;
      if (Array.isArray(c)) c = c.filter((p) => p.type === "text").map((p) => p.text).join("");
      if (typeof c !== "string") throw namedError("RequestError", "message content must be a string");
      roles.push(String(m.role));
      contents.push(c);
    }
    if (roles[0] !== "system") {
      roles.unshift("system");
      contents.unshift("You are a helpful assistant.");
    }
    const maxTokens = req.max_tokens ?? 256;
    const budget = Math.max(1, this.inner.context() - Math.min(maxTokens, this.inner.context() - 1));
    try {
      return Array.from(this.inner.chat_prompt(roles, contents, budget));
    } catch (e) {
      throw asNamed(e, "RequestError");
    }
  }

  _create(req) {
    const id = `chatcmpl-${nextId++}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.modelId;
    if (!req.stream) {
      return this._enqueue(async () => {
        const it = this._tokens(this._prompt(req), req, true);
        let content = "";
        let r;
        while (!(r = await it.next()).done) content += r.value.text;
        return {
          id,
          object: "chat.completion",
          created,
          model,
          choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: r.value.finish_reason, logprobs: null }],
          usage: r.value.usage,
        };
      });
    }
    // Streaming: the job is queued now; chunks flow through a small async queue. Leaving the
    // loop early (break) aborts this request only.
    const ctl = new AbortController();
    if (req.signal) {
      if (req.signal.aborted) ctl.abort();
      else req.signal.addEventListener("abort", () => ctl.abort(), { once: true });
    }
    req = { ...req, signal: ctl.signal };
    const chunks = [];
    let wake = null;
    let finished = false;
    let failure = null;
    const push = (c) => { chunks.push(c); if (wake) { wake(); wake = null; } };
    const chunk = (delta, finish_reason, usage) => ({
      id, object: "chat.completion.chunk", created, model,
      choices: [{ index: 0, delta, finish_reason, logprobs: null }],
      ...(usage ? { usage } : {}),
    });
    this._enqueue(async () => {
      const it = this._tokens(this._prompt(req), req, true);
      push(chunk({ role: "assistant", content: "" }, null));
      let r;
      while (!(r = await it.next()).done) {
        if (r.value.text) push(chunk({ content: r.value.text }, null));
      }
      push(chunk({}, r.value.finish_reason, r.value.usage));
    }).then(
      () => { finished = true; push(null); },
      (e) => { failure = e; finished = true; push(null); },
    );
    return {
      [Symbol.asyncIterator]() { return this; },
      async next() {
        for (;;) {
          if (chunks.length) {
            const c = chunks.shift();
            if (c !== null) return { value: c, done: false };
            continue;
          }
          if (finished) {
            if (failure) { const f = failure; failure = null; throw f; }
            return { value: undefined, done: true };
          }
          await new Promise((res) => { wake = res; });
        }
      },
      async return() {
        ctl.abort();
        return { value: undefined, done: true };
      },
    };
  }

  /** Token ids of `text` (special-token strings stay plain text). Needs a tokenizer. */
  tokenize(text) {
    try { return Array.from(this.inner.encode(String(text))); } catch (e) { throw asNamed(e, "TokenizerError"); }
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
      throw asNamed(e, "TokenizerError");
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
      let json;
      try {
        json = await this.inner.bench(spec, String(this.modelId), cb);
      } catch (e) {
        throw asNamed(e, "GpuError");
      }
      return { ...JSON.parse(json), adapter: this.adapter, ...browserInfo() };
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
    });
  }
}

// ------------------------------------------------------------------ benchmark

/** Options of `benchmark()` (camelCase) → the Rust `SynthBench` JSON (snake_case). */
function benchSpec(opts, keys) {
  const map = {
    layers: "layers", vocab: "vocab", weights: "weights", kvCache: "kv_cache", context: "context",
    prefill: "prefill", decodeAt: "decode_at", decodeTokens: "decode_tokens", maxBatch: "max_batch",
    maxBindingBytes: "max_binding_bytes",
  };
  const spec = {};
  for (const k of keys) {
    const v = opts[k];
    if (v === undefined || v === null || v === "") continue;
    spec[map[k]] = (k === "prefill" || k === "decodeAt") ? Array.from(v, Number) : v;
  }
  return JSON.stringify(spec);
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
 * decodeTokens, maxBatch, maxBindingBytes; onProgress, signal, wasmUrl. Resolves to the
 * report (the fields of `qwen-webgpu bench --json`, plus load_s, runtime, user_agent).
 */
export async function runBenchmark(opts = {}) {
  const onProgress = opts.onProgress || (() => {});
  const report = (phase, loaded, total, text) => {
    try { onProgress({ phase, loaded, total, text }); } catch { /* a throwing callback must not break the run */ }
  };
  const aborted = () => opts.signal?.aborted;
  await initWasm(opts.wasmUrl);
  const spec = benchSpec(opts, ["layers", "vocab", "weights", "kvCache", "context", "prefill", "decodeAt", "decodeTokens", "maxBatch", "maxBindingBytes"]);
  report("gpu", 0, 1, "opening the GPU and allocating the weights");
  let setup;
  try {
    setup = await wasm.open_bench(spec);
  } catch (e) {
    throw asNamed(e, "GpuError");
  }
  const adapter = await webgpuAdapter(setup.describe());
  const model = setup.model();
  report("gpu", 1, 1, adapter);
  const t0 = now();
  try {
    let more = true;
    while (more) {
      if (aborted()) throw namedError("AbortError", "the benchmark was aborted");
      more = setup.step();
      const [done, total] = setup.progress();
      report("weights", done, total, model);
      await yieldNow(); // let progress show and an abort arrive
    }
  } catch (e) {
    try { setup.free(); } catch { /* already gone */ }
    throw asNamed(e, "WeightsError");
  }
  const loadS = (now() - t0) / 1000;
  const steps = 2 + (opts.prefill?.length ?? 2) + (opts.decodeAt?.length ?? 2);
  let step = 0;
  let json;
  try {
    json = await setup.run((label) => report("bench", step++, steps, label));
  } catch (e) {
    throw asNamed(e, "GpuError");
  }
  report("bench", steps, steps, "done");
  return { ...JSON.parse(json), adapter, load_s: loadS, ...browserInfo() };
}
