// Types of the qwen-webgpu npm package.

/** Names of the errors the engine rejects with (`err.name`). */
export type QwenErrorName =
  | "ConfigError"
  | "WeightsError"
  | "TokenizerError"
  | "GpuError"
  | "RequestError"
  | "NetworkError"
  | "AbortError";

export interface LoadProgress {
  phase: "config" | "download" | "weights" | "tokenizer" | "ready";
  loaded: number;
  total: number;
  text?: string;
}

/** Files of a model by name ("config.json", "model.safetensors", "tokenizer.json", ...). */
export type ModelFiles = Record<string, Blob | ArrayBuffer | ArrayBufferView | string> | Map<string, Blob | ArrayBuffer | ArrayBufferView | string>;

/**
 * Where the model comes from: a base URL in the Hugging Face `resolve/main/` layout, the
 * files themselves (an `<input type=file multiple>` / `webkitdirectory` FileList), a picked
 * directory (`showDirectoryPicker()`), or in-memory data by file name.
 */
export type ModelSource = string | URL | File[] | FileList | FileSystemDirectoryHandle | ModelFiles;

export interface EngineOptions {
  model: ModelSource;
  onProgress?: (p: LoadProgress) => void;
  /** KV cache length in tokens (default: the model's context, at most 4096). */
  context?: number;
  /** Most tokens per forward pass (default 128). */
  maxBatch?: number;
  /**
   * How weight matrices are stored on the GPU: f16, or 8-/4-bit groups (smaller, faster),
   * quantized while loading. Omitted (or "auto"): a pre-quantized folder's own format
   * (`qwen-webgpu quantize`), f16 for a plain checkpoint. A pre-quantized folder loads only in
   * its own format: asking for another rejects with a WeightsError.
   */
  weights?: "auto" | "f16" | "q8" | "q4";
  /** How the KV cache stores keys and values: f32 (default, exact), f16, or q8 (4x smaller). */
  kvCache?: "f32" | "f16" | "q8";
  /** Keep downloads in the Cache API (default true; URL sources only). */
  useCache?: boolean;
  /** Refuse models needing more GPU memory than this many bytes (browsers do not report it). */
  maxGpuBytes?: number;
  /** Use a storage-binding limit below the adapter's (testing). */
  maxBindingBytes?: number;
  /** Run the engine in a Web Worker (default: true in a window). */
  useWorker?: boolean;
  /** A Worker running this package's worker.js, if your bundler needs to create it. */
  worker?: Worker;
  /** Where qwen_webgpu_bg.wasm is (default: next to engine.js). */
  wasmUrl?: string | URL;
  /** Abort loading. */
  signal?: AbortSignal;
}

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string | Array<{ type: "text"; text: string }>;
}

export interface SamplingOptions {
  /** 0 = greedy. Default 0.7 for chat, 0 for generateIds. */
  temperature?: number;
  top_p?: number;
  /** 0 = off. */
  top_k?: number;
  repetition_penalty?: number;
  /** The same seed draws the same tokens from the same logits (the draw is a function of the
   *  seed, the step and the logits alone); default random. Sampling runs on the GPU. */
  seed?: number;
  /** Default 256. */
  max_tokens?: number;
  /** Extra stop token ids (the model's eos / ChatML markers are always used unless ignore_eos). */
  stop_token_ids?: number[];
  ignore_eos?: boolean;
  /** Stops generation promptly (after the token in flight); finish_reason is then "abort". */
  signal?: AbortSignal;
}

export interface ChatCompletionRequest extends SamplingOptions {
  messages: ChatMessage[];
  stream?: boolean;
}

export type FinishReason = "stop" | "length" | "context_full" | "abort";

export interface Usage {
  prompt_tokens: number;
  /** `cached_tokens`: prompt tokens the engine still had in its KV cache from the last call
   *  (the conversation so far, up to the first token that differs) and did not prefill again. */
  prompt_tokens_details: { cached_tokens: number };
  completion_tokens: number;
  total_tokens: number;
  time_to_first_token_s: number;
  /** Prompt tokens actually prefilled (cached ones excluded) per second. */
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  e2e_latency_s: number;
  extra: {
    time_to_first_token_s: number;
    prefill_tokens_per_s: number;
    decode_tokens_per_s: number;
    e2e_latency_s: number;
  };
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: Array<{ index: number; message: { role: "assistant"; content: string }; finish_reason: FinishReason; logprobs: null }>;
  usage: Usage;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: Array<{ index: number; delta: { role?: "assistant"; content?: string }; finish_reason: FinishReason | null; logprobs: null }>;
  /** On the last chunk. */
  usage?: Usage;
}

export interface GenerateIdsRequest extends SamplingOptions {
  promptIds: ArrayLike<number>;
  /** Sees each id as it is generated. */
  onToken?: (id: number) => void;
}

export interface GenerateIdsResult {
  ids: number[];
  finish_reason: FinishReason;
  usage: Usage;
}

export interface EngineInfo {
  model: string;
  adapter: string;
  context: number;
  vocabSize: number;
  hasTokenizer: boolean;
  eos: number[];
  /** How matrices are stored on the GPU (`auto` resolved). */
  weights: "f16" | "q8" | "q4";
  kvCache: "f32" | "f16" | "q8";
}

export interface QwenEngine {
  chat: {
    completions: {
      create(req: ChatCompletionRequest & { stream: true }): AsyncIterable<ChatCompletionChunk>;
      create(req: ChatCompletionRequest & { stream?: false }): Promise<ChatCompletion>;
    };
  };
  /** Generate from raw token ids (no tokenizer needed). */
  generateIds(req: GenerateIdsRequest): Promise<GenerateIdsResult>;
  /** Forget the conversation state (KV cache). */
  resetChat(): Promise<void>;
  /** Free the GPU memory; later calls reject. */
  unload(): Promise<void>;
  info(): EngineInfo | Promise<EngineInfo>;
  /** Token ids of `text` (needs a tokenizer). Synchronous without a worker. */
  tokenize(text: string): number[] | Promise<number[]>;
  /**
   * Benchmark this model as `qwen-webgpu bench --model` does. Forgets the conversation (the
   * KV cache is overwritten). Lengths that do not fit the model's context are skipped.
   */
  benchmark(opts?: Pick<BenchmarkOptions, "prefill" | "decodeAt" | "decodeTokens" | "onProgress">): Promise<BenchmarkReport>;
  /**
   * Text of `ids`, plus the chunks streaming them produces: `chunks[i]` is the text completed
   * by `ids[i]` ("" while a multi-byte character is incomplete); the last entry is the tail.
   */
  detokenize(ids: ArrayLike<number>): { text: string; chunks: string[] } | Promise<{ text: string; chunks: string[] }>;
}

/**
 * Load a model and return an engine. Calls on one engine run one at a time, in the order
 * they were made. Rejects with a named Error (see QwenErrorName).
 */
export function createEngine(opts: EngineOptions): Promise<QwenEngine>;

/** Whether every file of the model at this base URL is in the Cache API. */
export function hasModelInCache(url: string | URL): Promise<boolean>;

/** Remove the model's files from the Cache API; resolves to how many entries were removed. */
export function deleteModelCache(url: string | URL): Promise<number>;

/** The Cache API cache the package uses. */
export const CACHE_NAME: string;

/** Instantiate the wasm module ahead of time (optional). */
export function initWasm(wasmUrl?: string | URL): Promise<unknown>;

export interface BenchmarkProgress {
  /** "gpu": opening the GPU; "weights": making the random weights (bytes of bf16);
   *  "bench": measuring (`text` names the measurement). */
  phase: "gpu" | "weights" | "bench";
  loaded: number;
  total: number;
  text?: string;
}

/** `qwen-webgpu bench` options; every one is optional and defaults to the CLI's default. */
export interface BenchmarkOptions {
  /** Layers of the synthesised Qwen-1.8B shape (default 24). */
  layers?: number;
  /** Vocabulary rows (default 151936). */
  vocab?: number;
  /** How weight matrices are stored on the GPU (default "f16"). */
  weights?: "f16" | "q8" | "q4";
  /** KV cache format (default "f32"). */
  kvCache?: "f32" | "f16" | "q8";
  /** KV cache length (default: just what the measurements need). */
  context?: number;
  /** Prompt lengths to time prefill on (default [128, 1024]). */
  prefill?: number[];
  /** Cache lengths to time decoding at (default [128, 2048]). */
  decodeAt?: number[];
  /** Tokens decoded per measurement (default 16). */
  decodeTokens?: number;
  /** Most tokens per forward pass (default 128). */
  maxBatch?: number;
  /** Use a storage-binding limit below the adapter's (testing). */
  maxBindingBytes?: number;
  onProgress?: (p: BenchmarkProgress) => void;
  /** Stops the run (with a worker, at once: the worker is ended). */
  signal?: AbortSignal;
  /** Run in a Web Worker (default: true in a window). */
  useWorker?: boolean;
  /** A Worker running this package's worker.js (it is ended afterwards). */
  worker?: Worker;
  wasmUrl?: string | URL;
}

/** The figures of `qwen-webgpu bench --json`, measured in this browser. */
export interface BenchmarkReport {
  adapter: string;
  model: string;
  parameters: number;
  weight_format: string;
  kv_cache_format: string;
  context: number;
  /** Exact bytes of every long-lived GPU buffer (weights, activations, KV cache, readback). */
  gpu_bytes_allocated: number;
  weight_bytes_per_token: number;
  dispatches_per_decoded_token: number;
  submissions_per_decoded_token: number;
  readback_bytes_per_decoded_token: number;
  /** Streaming copy bandwidth (read + write), measured in this run. */
  bandwidth_gb_s: number;
  time_to_first_token_s: number;
  prefill: Array<{ tokens: number; tok_per_s: number; seconds: number }>;
  decode: Array<{ context: number; tok_per_s: number; ms_per_token: number; bytes_per_token: number; roofline_fraction: number }>;
  /** Seconds spent making and uploading the random weights (synthesised runs only). */
  load_s?: number;
  /** Where these figures were measured: "browser (WebAssembly + WebGPU)". */
  runtime: string;
  user_agent: string;
}

/**
 * `qwen-webgpu bench` in the browser on a synthesised Qwen-1.8B-shaped model (random weights
 * made in wasm one tensor at a time; nothing is downloaded). Rejects with a named Error.
 */
export function benchmark(opts?: BenchmarkOptions): Promise<BenchmarkReport>;
