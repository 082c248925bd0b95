// Types of the qwen-webgpu npm package.

/** Names of the errors the engine rejects with (`err.name`): the kind of failure. */
export type QwenErrorName =
  | "ConfigError"
  | "WeightsError"
  | "TokenizerError"
  | "GpuError"
  | "RequestError"
  | "NetworkError"
  | "AbortError";

/**
 * What happened, machine-readably (`err.code`). Each code comes with one name:
 * - ConfigError: `config_missing` (no config.json: HTTP 404, not among the files),
 *   `config_invalid` (unreadable, a model this engine does not run, an eos id above 2^32-1).
 * - WeightsError: `weights_missing` (a checkpoint file is not there), `weights_corrupt`
 *   (truncated, bad header, wrong shapes or dtypes, missing tensors; a file that is not a
 *   GGUF), `weights_format` (a pre-quantized folder asked for in another format, a format
 *   this build does not know, or a GGUF tensor type it does not load: the message names it).
 * - TokenizerError: `tokenizer_missing` (chat, tokenize or detokenize on a model loaded without
 *   tokenizer.json / qwen.tiktoken), `tokenizer_invalid` (corrupt, or does not fit the model).
 * - GpuError: `gpu_unavailable` (no WebGPU here at all, as in Node.js, or no adapter or device), `gpu_out_of_memory` (the model
 *   does not fit: memory budget, binding limit, allocation), `gpu_failed` (the GPU failed while
 *   running), `gpu_lost` (the device was lost: load again), `wasm_failed` (the WebAssembly module did not instantiate), `worker_failed` (the
 *   engine's worker failed to start, or died).
 * - RequestError: `request_invalid` (a bad request value or option; the message names it),
 *   `context_full` (the prompt does not fit the context: a chat's last message alone, older
 *   turns being left out as needed; a `generateIds` prompt), `engine_busy` (overlapping calls on
 *   the raw wasm engine; the JS API queues them), `engine_unloaded`.
 * - NetworkError: `network` (fetch failed, an HTTP error, an incomplete download).
 * - AbortError: `aborted` (your AbortSignal fired).
 */
export type QwenErrorCode =
  | "config_missing" | "config_invalid"
  | "weights_missing" | "weights_corrupt" | "weights_format"
  | "tokenizer_missing" | "tokenizer_invalid"
  | "gpu_unavailable" | "gpu_out_of_memory" | "gpu_failed" | "gpu_lost" | "wasm_failed" | "worker_failed"
  | "request_invalid" | "context_full" | "engine_busy" | "engine_unloaded"
  | "network"
  | "aborted";

/** What every promise of the package rejects with. `code` survives the worker boundary. */
export interface QwenError extends Error {
  name: QwenErrorName;
  code: QwenErrorCode;
}

/** Every error code and the name it comes with. */
export const ERROR_CODES: Readonly<Record<QwenErrorCode, QwenErrorName>>;

/**
 * GPU memory the model will take, known from config.json and the first shard's header (or a
 * GGUF file's header) before any weight byte is fetched (the fit check's figures;
 * `engine.info().gpuBytes` equals `totalBytes` once loaded).
 */
export interface LoadEstimate {
  /**
   * How matrices will be stored on the GPU (`auto` resolved). `gguf`: a GGUF file's matrices
   * keep their own types (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, ...; F32/BF16 as f16), listed in
   * `weightTypes`.
   */
  weights: "f16" | "q8" | "q4" | "gguf";
  /** A GGUF file's tensor types (`F32`, `Q4_0`, `Q6_K`, ...), sorted; only for GGUF files. */
  weightTypes?: string[];
  /** The KV cache format. */
  kvCache: "f32" | "f16" | "q8";
  /** Bytes of the weights on the GPU, in `weights`' format. */
  weightBytes: number;
  /** Bytes of the KV cache (in `kvCache`'s format), activations and readback buffers. */
  stateBytes: number;
  /** `weightBytes + stateBytes`. */
  totalBytes: number;
}

export interface LoadProgress {
  /**
   * `store`: writing the loaded model to the browser's model store (`loaded`/`total` in bytes
   * of its weights file). `warning`: something did not work but the load goes on; `code`
   * says what (the model store: `cache_quota`, `cache_write`, `cache_damaged`, `cache_version`).
   */
  phase: "config" | "download" | "weights" | "tokenizer" | "ready" | "store" | "warning";
  loaded: number;
  total: number;
  text?: string;
  /** On `warning` events: what happened (see `phase`). */
  code?: "cache_quota" | "cache_write" | "cache_damaged" | "cache_version" | "cache_unsupported";
  /** On the `config` event that ends the fit check (loaded 1 of 1), before any download. */
  estimate?: LoadEstimate;
  /**
   * The whole load, over all its files (config, index, shards, tokenizer): bytes received so
   * far (a file counts at most its size; files already in the Cache API count as received).
   * On every event; `loaded`/`total` above stay the current phase's own counts.
   */
  bytesLoaded?: number;
  /** Bytes of all the load's files, as far as known (every file's size is asked before the download starts). */
  bytesTotal?: number;
  /** Download rate over the last 5 seconds (0 until it can be measured). */
  bytesPerSecond?: number;
  /** Seconds left at that rate; null while unknown, 0 when everything is in. */
  etaSeconds?: number | null;
}

/** How URL downloads go (`download` option); every field is optional. */
export interface DownloadOptions {
  /** Range requests in flight at once, 1..16 (default 4). */
  concurrency?: number;
  /** The most bytes one request asks for, 4096..2^30 (default 8 MiB): memory beyond the tensor being uploaded is about concurrency × chunkBytes. */
  chunkBytes?: number;
  /** Failures in a row (no byte received between them) before giving up, 0..20 (default 5). */
  retries?: number;
  /** First wait before a retry in ms, 1..60000 (default 500), doubled each time up to 30 s; a Retry-After header wins. */
  retryDelayMs?: number;
}

/** Files of a model by name ("config.json", "model.safetensors", "tokenizer.json", ...). */
export type ModelFiles = Record<string, Blob | ArrayBuffer | ArrayBufferView | string> | Map<string, Blob | ArrayBuffer | ArrayBufferView | string>;

/**
 * Where the model comes from: a base URL in the Hugging Face `resolve/main/` layout, a GGUF
 * file's URL (its path ends in `.gguf`; a query string is fine), the files themselves (an
 * `<input type=file multiple>` / `webkitdirectory` FileList, or one `File` named `*.gguf`), a
 * picked directory (`showDirectoryPicker()`), or in-memory data by file name. Files, a
 * directory or data without config.json but with one `*.gguf` are that GGUF model.
 */
export type ModelSource = string | URL | File | File[] | FileList | FileSystemDirectoryHandle | ModelFiles;

export interface EngineOptions {
  model: ModelSource;
  onProgress?: (p: LoadProgress) => void;
  /**
   * KV cache length in tokens. A whole number from 1 to 1048576; anything else is a
   * RequestError (`request_invalid`) naming the field. Default: the model's trained context,
   * at most 4096; for a Qwen v1 model (`use_dynamic_ntk`: its dynamic NTK RoPE and logN
   * attention carry it past its trained `seq_length`), the longest of 32768, 16384 and 8192
   * whose weights, KV cache and activations fit `maxGpuBytes` (4 GiB when not given) with each
   * layer's KV cache within 128 MiB (WebGPU's default storage-binding limit), if any is longer.
   * `engine.info().context` says which.
   */
  context?: number;
  /** Most tokens per forward pass (default 128). A whole number from 1 to 1048576, as `context`. */
  maxBatch?: number;
  /**
   * How weight matrices are stored on the GPU: f16, or 8-/4-bit groups (smaller, faster),
   * quantized while loading. Omitted (or "auto"): a pre-quantized folder's own format
   * (`qwen-webgpu quantize`), f16 for a plain checkpoint. A pre-quantized folder loads only in
   * its own format: asking for another rejects with a WeightsError. A GGUF file: "auto" (or
   * "f16") keeps each matrix's own type (Q4_0, Q8_0, Q4_K...; F32/BF16 as f16); "q8" / "q4"
   * re-encode them (Q8_0 → q8 and Q4_0 → q4 losslessly, others decoded and quantized again).
   */
  weights?: "auto" | "f16" | "q8" | "q4";
  /**
   * Where a plain checkpoint's matrices are quantized into `weights`: "gpu" (WGSL kernels; no
   * CPU time), "cpu" (the reference encoder in wasm), or "auto" (default: the GPU, unless the
   * adapter is a CPU implementation such as SwiftShader). Both write the same bytes.
   */
  encoder?: "auto" | "gpu" | "cpu";
  /** How the KV cache stores keys and values: f32 (default, exact), f16, or q8 (4x smaller). */
  kvCache?: "f32" | "f16" | "q8";
  /**
   * Keep the loaded model in the browser (the model store: the origin private file system),
   * as the GPU holds it (quantized words and scales, f16 matrices), with its config and
   * tokenizer: a later load of the same URL and `weights` reads about the quantized bytes, makes
   * no network request (it works offline) and quantizes nothing. Default: as `useCache`.
   * URL sources only. A model that does not fit the storage quota, or a failed write, is a
   * `warning` progress event (nothing is left behind), never a failed load.
   */
  cache?: boolean;
  /**
   * Keep raw downloads in the Cache API (default true; URL sources only). With the model store
   * on (`cache`), raw downloads are not kept: the store holds the model instead. `false` also
   * turns the store off unless `cache` says otherwise.
   */
  useCache?: boolean;
  /**
   * Parallel Range requests, retries and resume for URL sources (see DownloadOptions); a bad
   * value is a RequestError (`request_invalid`) naming the field.
   */
  download?: DownloadOptions;
  /**
   * Refuse models needing more GPU memory than this many bytes (browsers do not report it);
   * a Qwen v1 model's default `context` is the longest that fits it (see `context`). A whole
   * number from 1 to 2^53 - 1 (Number.MAX_SAFE_INTEGER); anything else is a RequestError
   * (`request_invalid`) naming the field.
   */
  maxGpuBytes?: number;
  /**
   * Layer-wise window attention (the Qwen report's long-context technique; off by default, as
   * the released checkpoints do not use it): each layer's queries see only its last `w` keys,
   * and older keys are skipped, so a long cache costs a windowed layer only its window. The
   * CLI's `--window` syntax: `"512"` (every layer), `"256,512,1024,0"` (one per layer; 0: the
   * whole cache), `"pow2:256:0.25"` (layer i gets 256·2^(i·0.25), short windows low, long
   * ones high), `"off"`; or a number (every layer), or an array of numbers (one for all, or
   * one per layer). A value that is not a window, or a list whose length is neither 1 nor the
   * model's layer count, is a RequestError (`request_invalid`) naming `window`, before any
   * weight is downloaded. `engine.info().windows` lists each layer's.
   */
  window?: string | number | number[];
  /** Use a storage-binding limit below the adapter's (testing). A whole number from 65536 to 2^53 - 1, else a RequestError. */
  maxBindingBytes?: number;
  /** Run the engine in a Web Worker (default: true in a window). */
  useWorker?: boolean;
  /**
   * A Worker running this package's worker.js, if you make it yourself: a module worker whose
   * file does `import "qwen-webgpu/worker.js";` (it may have been made long before).
   */
  worker?: Worker;
  /**
   * How long the worker may take to start, in milliseconds (default 30000). A worker that fails
   * to load (404, wrong MIME type, a throwing script or import) or does not answer in time
   * rejects with GpuError `worker_failed`, whose message says what to check.
   */
  workerStartTimeoutMs?: number;
  /** Where qwen_webgpu_bg.wasm is (default: next to engine.js). */
  wasmUrl?: string | URL;
  /** Abort loading. */
  signal?: AbortSignal;
}

/** A text part of a message's content (the array form of `content`). */
export interface TextPart { type: "text"; text: string }

/**
 * A message of a chat. The prompt is what the checkpoint's own chat template
 * (tokenizer_config.json's `chat_template`, or a GGUF file's `tokenizer.chat_template`) renders
 * from them, as transformers' `apply_chat_template` does; a checkpoint without a template
 * (Qwen v1) gets ChatML (see EngineInfo.chatTemplate). No system prompt is added by the
 * package: the template decides (Qwen2.5's adds its default one, Qwen3's none).
 */
export type ChatMessage = SystemMessage | UserMessage | AssistantMessage | ToolMessage;

export interface SystemMessage {
  role: "system";
  content: string | TextPart[];
}

export interface UserMessage {
  role: "user";
  content: string | TextPart[];
}

/** A reply of the model, given back in a later request (or returned by `reply_message`). */
export interface AssistantMessage {
  role: "assistant";
  /** The answer's text; null (or omitted) when the reply only calls tools. */
  content?: string | TextPart[] | null;
  /**
   * Qwen3's thinking (the text between `<think>` and `</think>`). Given back, the template
   * decides whether it is rendered (Qwen3's keeps it only for the turns after the last user
   * message, that is within a tool loop).
   */
  reasoning_content?: string;
  /** The tools this reply called. */
  tool_calls?: ToolCall[];
}

/** The result of one tool call, for the model's next turn. */
export interface ToolMessage {
  role: "tool";
  /** The `id` of the ToolCall this answers. */
  tool_call_id: string;
  content: string | TextPart[];
}

/** A function the model may call (OpenAI's tool object). */
export interface Tool {
  type: "function";
  function: {
    /** 1-64 letters, digits, `_` or `-`. */
    name: string;
    description?: string;
    /** A JSON schema of the arguments object. */
    parameters?: Record<string, unknown>;
  };
}

/**
 * Whether and which tool the model calls: `auto` (default with tools: the model decides),
 * `none` (it may not), `required` (it must call one), or that one function.
 */
export type ToolChoice = "auto" | "none" | "required" | { type: "function"; function: { name: string } };

/** A tool call of a reply (Qwen2.5/Qwen3: a `<tool_call>{json}</tool_call>` block; Qwen v1: ReAct's `Action:` / `Action Input:`). */
export interface ToolCall {
  /** Made by the engine (`call_...`); a ToolMessage's `tool_call_id` names it. */
  id: string;
  type: "function";
  function: {
    name: string;
    /** The arguments as a JSON text (parse it yourself: the model may have written anything). */
    arguments: string;
  };
}

/**
 * A piece of a tool call in a streamed chunk, as OpenAI streams them: the first piece of
 * call `index` has its `id`, `type` and `function.name`; later pieces append to
 * `function.arguments`.
 */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: "function";
  function: { name?: string; arguments?: string };
}

/** One token's log-probabilities (OpenAI's `logprobs.content[i]`), computed on the GPU. */
export interface LogprobEntry {
  /** The token's text (its bytes as UTF-8, lossy where a character spans tokens). */
  token: string;
  /** Natural log of its probability (≤ 0), from the model's logits before any sampling setting (temperature, top-k, penalties). */
  logprob: number;
  /** The token's bytes. */
  bytes: number[];
  /** The `top_logprobs` most likely tokens at that step, most likely first. */
  top_logprobs: Array<{ token: string; logprob: number; bytes: number[] }>;
}

export interface SamplingOptions {
  /**
   * 0 = greedy. Omitted: generation_config.json's `temperature` when the checkpoint has one,
   * else 0.7 for chat and 0 for generateIds (EngineInfo.generationDefaults says what is in use).
   */
  temperature?: number;
  /** Omitted: generation_config.json's, else 1 (off). */
  top_p?: number;
  /** 0 = off. Omitted: generation_config.json's, else 0. */
  top_k?: number;
  /** > 1 makes tokens already in the prompt or reply less likely. Omitted: generation_config.json's, else 1. */
  repetition_penalty?: number;
  /**
   * -2..2: subtracted from a token's logit once per time it already occurs in the reply
   * (OpenAI's frequency penalty). Default 0.
   */
  frequency_penalty?: number;
  /** -2..2: subtracted from the logit of every token already in the reply, once. Default 0. */
  presence_penalty?: number;
  /**
   * Added to the logits of the given token ids before sampling: `{"151657": -100}` forbids
   * `<tool_call>`, +100 all but forces a token. Keys are token ids as strings; values -100..100.
   */
  logit_bias?: Record<string, number>;
  /** The same seed draws the same tokens from the same logits (the draw is a function of the
   *  seed, the step and the logits alone); default random. Sampling runs on the GPU. */
  seed?: number;
  /** Default 256. A chat's prompt keeps `min(max_tokens, context / 2)` tokens of the context
   *  free for the reply (older turns are dropped to fit; see EngineInfo.chatPromptBudget and
   *  `usage.prompt_tokens_details.dropped_tokens`). */
  max_tokens?: number;
  /** Extra stop token ids (the model's eos / chat end markers are always used unless ignore_eos). */
  stop_token_ids?: number[];
  ignore_eos?: boolean;
  /** Stops generation promptly (after the token in flight); finish_reason is then "abort". */
  signal?: AbortSignal;
}

/**
 * A chat request. Field names are OpenAI's; a field the engine does not know (a typo, `n`,
 * `response_format`, ...) is a RequestError (`request_invalid`) naming it, never ignored.
 */
export interface ChatCompletionRequest extends SamplingOptions {
  messages: ChatMessage[];
  stream?: boolean;
  /** With `stream`: `include_usage` is accepted; the last chunk always carries `usage`. */
  stream_options?: { include_usage?: boolean };
  /** Functions the model may call; the chat template writes them into the prompt. */
  tools?: Tool[];
  tool_choice?: ToolChoice;
  /**
   * Strings that end the reply (a short list; too many, or an empty one, is a RequestError).
   * Matched on the generated text across token boundaries and inside a token or a multi-byte
   * character: the reply ends just before the stop string, which is not returned. The stream
   * holds back only text that could still become one. finish_reason "stop".
   */
  stop?: string | string[];
  /** Return each generated token's log-probability (`logprobs.content`). */
  logprobs?: boolean;
  /** With `logprobs`: how many most likely alternatives per token, 0..20. */
  top_logprobs?: number;
  /**
   * Qwen3's thinking switch, as its chat template defines it (false: the prompt closes an empty
   * `<think></think>` so the model answers at once). Omitted: the template's default (on).
   */
  enable_thinking?: boolean;
  /** Variables for the chat template (Hugging Face's name); `enable_thinking` is the one read. */
  chat_template_kwargs?: { enable_thinking?: boolean };
  /** Accepted and ignored (the engine runs one model), so OpenAI client code works unchanged. */
  model?: string;
}

/**
 * Why generation ended: `stop` (an end token or a `stop` string), `length` (max_tokens; or
 * a chat reply that filled the context and cannot go on, as the last user message and the
 * reply leave no room), `context_full` (`generateIds` only: the KV cache is full; a chat
 * reply goes on with older turns left out), `abort` (your signal, or leaving a stream early),
 * `tool_calls` (the reply called tools: see `message.tool_calls`), `invalid_tool_call` (the
 * reply began a tool call the engine could not parse: its text is returned as content).
 */
export type FinishReason = "stop" | "length" | "context_full" | "abort" | "tool_calls" | "invalid_tool_call";

export interface Usage {
  /** Tokens of the prompt the reply started from. */
  prompt_tokens: number;
  prompt_tokens_details: {
    /** Prompt tokens the engine still had in its KV cache from the last call (the
     *  conversation so far, up to the first token that differs) and did not prefill again
     *  (OpenAI's meaning). */
    cached_tokens: number;
    /**
     * Tokens of older turns left out of the prompt to fit the context (0 when the whole
     * conversation fits; the most over the reply's prompts when it went on past the end of the
     * context). Chat requests. A long conversation never fails for its length: older turns are
     * left out in blocks of about a quarter of the prompt budget, so the prompt's start stays
     * the same for several turns and the cache keeps serving it.
     */
    dropped_tokens?: number;
    /**
     * Tokens this request ran through prefill: `prompt_tokens - cached_tokens`, plus, for each
     * continuation, the shorter prompt and the reply so far less what the cache still held.
     * What the request cost beyond decoding its `completion_tokens`.
     */
    prefilled_tokens?: number;
    /**
     * How often the reply filled the context before `max_tokens` and went on: the prompt is
     * made again with more of the older turns left out (the system prompt and the last user
     * message stay), the reply so far follows it, and decoding continues (the stream shows
     * nothing of it). 0 for `generateIds`, which ends with `context_full` instead.
     */
    continuations?: number;
  };
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

/** The reply of a non-streamed completion. */
export interface ChatCompletionMessage {
  role: "assistant";
  /** The answer (text outside `<think>` and tool calls); null when the reply only calls tools. */
  content: string | null;
  /** Qwen3's thinking, when the reply had any. */
  reasoning_content?: string;
  tool_calls?: ToolCall[];
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: Array<{
    index: number;
    message: ChatCompletionMessage;
    finish_reason: FinishReason;
    /** With `logprobs: true`: one entry per generated token; else null. */
    logprobs: { content: LogprobEntry[] } | null;
  }>;
  usage: Usage;
}

/** What a chunk adds to the reply. */
export interface ChatCompletionDelta {
  /** On the first chunk. */
  role?: "assistant";
  content?: string;
  reasoning_content?: string;
  tool_calls?: ToolCallDelta[];
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta: ChatCompletionDelta;
    finish_reason: FinishReason | null;
    /**
     * With `logprobs: true`: the entries of the tokens this chunk completes (a token whose text
     * was held back, such as part of a possible stop string or of a tool call, comes with the
     * next chunk; the last chunk has the rest); else null. Joined: one per generated token.
     */
    logprobs: { content: LogprobEntry[] } | null;
  }>;
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

/** Qwen's ChatML, as the engine (and the CLI) uses it without a chat template: the crate's `tokenizer::CHATML`. */
export interface ChatFormat {
  /** `<|im_start|>`: opens a message (the role and a newline follow). */
  start: string;
  /** `<|im_end|>`: closes a message. */
  end: string;
  /**
   * Qwen's default system prompt. With a chat template (EngineInfo.chatTemplate `jinja`) the
   * template alone decides the system prompt; this is for the ChatML fallback.
   */
  default_system: string;
  /** `<|endoftext|>`'s id: the stop id when neither the model nor the tokenizer names one. */
  end_of_text_id: number;
}

export interface EngineInfo {
  model: string;
  adapter: string;
  /** KV cache length in tokens (the `context` option, else its default: see EngineOptions.context). */
  context: number;
  /** Each layer's attention window in tokens (0: the layer sees its whole cache; all 0
   *  without the `window` option). */
  windows: number[];
  vocabSize: number;
  hasTokenizer: boolean;
  /** `eos_token_id`s of config.json and generation_config.json (a GGUF file: `tokenizer.ggml.eos_token_id`). */
  eos: number[];
  /** The ids a chat request stops at (without `stop_token_ids` / `ignore_eos`). */
  chatStopIds: number[];
  /** The ids a `generateIds` request stops at (without `stop_token_ids` / `ignore_eos`). */
  stopIds: number[];
  /** How matrices are stored on the GPU (`auto` resolved; `gguf`: a GGUF file's own types, see `weightTypes`). */
  weights: "f16" | "q8" | "q4" | "gguf";
  /** A GGUF file's tensor types (`F32`, `Q4_0`, `Q6_K`, ...), sorted; empty for safetensors checkpoints. */
  weightTypes: string[];
  kvCache: "f32" | "f16" | "q8";
  chatFormat: ChatFormat;
  /**
   * How chat prompts are written: `jinja` (the checkpoint's own chat template, from
   * tokenizer_config.json or a GGUF file's metadata: tools and thinking as the model was
   * trained) or `chatml` (no template, as Qwen v1: plain ChatML).
   */
  chatTemplate: "jinja" | "chatml";
  /**
   * The defaults a request that leaves these fields out gets, from generation_config.json
   * (only the fields it has).
   */
  generationDefaults: { temperature?: number; top_p?: number; top_k?: number; repetition_penalty?: number };
  /**
   * Tokens a chat prompt may take with the default `max_tokens` (256). The rule, the CLI's
   * too: `context - min(max_tokens, context / 2)` (at least 1); older turns are dropped to fit.
   */
  chatPromptBudget: number;
  /** Bytes of the model's live GPU buffers (weights, activations, KV cache, readback), read
   *  from the allocations: exactly the fit check's estimate. */
  gpuBytes: number;
  /** How many such buffers. */
  gpuBuffers: number;
  /** How this engine was loaded. */
  load: LoadStats | null;
}

/** `engine.info().load`: where the model came from and where the load's time went. */
export interface LoadStats {
  /** `store`: the browser's model store; `url`: downloaded; `files`: Files or buffers. */
  source: "store" | "url" | "files";
  /** Bytes read from the model store (files and headers included); null for other sources. */
  bytesRead: number | null;
  /** The checkpoint read was pre-quantized: its words and scales went to the GPU as stored (nothing quantized). */
  prequantized: boolean;
  /** The model was a GGUF file. */
  gguf: boolean;
  /** Seconds reading and uploading the weights (uploadS of it in `put`: converting, quantizing, writing to the GPU). */
  weightsS: number;
  uploadS: number;
  /** Seconds finishing (the GPU's work queued by the uploads, the run state, the tokenizer). */
  finishS: number;
  /** Seconds of the whole load, before storing. */
  loadS: number;
  /**
   * After a load from a URL with the store on: what storing did. A GGUF file is not stored:
   * `{ stored: false, code: "cache_unsupported", text }` (its raw file goes to the Cache API).
   */
  store: { stored: boolean; code?: string; text?: string; bytes?: number; fileBytes?: number; seconds?: number; gpuReadS?: number; persisted?: boolean | null } | null;
}

/** What `engine.lost` resolves with. */
export interface DeviceLostInfo {
  /** `"destroyed"` or `"unknown"` (GPUDeviceLostReason). */
  reason: string;
  /** The browser's message. */
  message: string;
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
  /** The tool loop on this engine: the same as `runTools(engine, opts)`. */
  runTools(opts: RunToolsOptions): Promise<RunToolsResult>;
  /** Forget the conversation state (KV cache). */
  resetChat(): Promise<void>;
  /** Free the GPU memory; later calls reject. */
  unload(): Promise<void>;
  /**
   * Resolves when the GPU device is lost (driver reset, the browser reclaimed it), as
   * `GPUDevice.lost` does; never on `unload()`. From then on every call that runs the GPU
   * rejects with a `GpuError` `gpu_lost` (the call in flight too); `unload()` still works.
   * Load the model again with `createEngine`.
   */
  readonly lost: Promise<DeviceLostInfo>;
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
 * they were made. Rejects with a QwenError (`name` and `code`).
 */
export function createEngine(opts: EngineOptions): Promise<QwenEngine>;

/**
 * Whether the model at this base URL loads without a download: a complete copy in the model
 * store (for `weights` when given; any format otherwise), or every raw file in the Cache API
 * (for a `.gguf` URL: that file in the Cache API).
 */
export function hasModelInCache(url: string | URL, opts?: { weights?: "auto" | "f16" | "q8" | "q4" }): Promise<boolean>;

/**
 * Remove everything kept of the model at this base URL: its model-store copies (every format
 * and version, complete or not) and its raw files in the Cache API (a `.gguf` URL: that file).
 * Resolves to how many files were removed.
 */
export function deleteModelCache(url: string | URL): Promise<number>;

/** The Cache API cache the package uses. */
export const CACHE_NAME: string;

/** Instantiate the wasm module on this thread ahead of time (only useful with `useWorker: false`:
 *  the worker instantiates its own). Loads engine.js on demand. */
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
  /** Layer-wise window attention, as EngineOptions.window (default off): decoding at a long
   *  cache then reads only each layer's window of keys, and `bytes_per_token` counts only those. */
  window?: string | number | number[];
  onProgress?: (p: BenchmarkProgress) => void;
  /** Stops the run (with a worker, at once: the worker is ended). */
  signal?: AbortSignal;
  /** Run in a Web Worker (default: true in a window). */
  useWorker?: boolean;
  /** A Worker running this package's worker.js (it is ended afterwards). */
  worker?: Worker;
  /** How long the worker may take to start, in milliseconds (default 30000), as for createEngine. */
  workerStartTimeoutMs?: number;
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
  /** Each layer's attention window in keys (0: the whole cache; all 0: windows off). */
  windows: number[];
  /** Exact bytes of every long-lived GPU buffer (weights, activations, KV cache, readback). */
  gpu_bytes_allocated: number;
  weight_bytes_per_token: number;
  dispatches_per_decoded_token: number;
  submissions_per_decoded_token: number;
  readback_bytes_per_decoded_token: number;
  /** How decoded tokens were chosen: "argmax", or the sampling settings. */
  decode_sampling: string;
  /** Streaming copy bandwidth (read + write), measured in this run. */
  bandwidth_gb_s: number;
  time_to_first_token_s: number;
  prefill: Array<{ tokens: number; tok_per_s: number; seconds: number }>;
  /** Decoding at each `decodeAt` cache (taken as holding that many tokens: their keys are not
   *  real, the work is the same); `bytes_per_token`: weights plus the KV bytes the decoded
   *  tokens read (each layer's window of keys when windows are on). */
  decode: Array<{ context: number; tok_per_s: number; ms_per_token: number; bytes_per_token: number; roofline_fraction: number }>;
  /** Seconds spent making and uploading the random weights (synthesised runs only). */
  load_s?: number;
  /** Where these figures were measured: "browser (WebAssembly + WebGPU)". */
  runtime: string;
  user_agent: string;
}

/**
 * `qwen-webgpu bench` in the browser on a synthesised Qwen-1.8B-shaped model (random weights
 * made in wasm one tensor at a time; nothing is downloaded). Rejects with a QwenError.
 */
export function benchmark(opts?: BenchmarkOptions): Promise<BenchmarkReport>;

// ------------------------------------------------------------------ tools

/** What a tool function gets besides its arguments. */
export interface ToolContext {
  /** runTools' `signal` (stop the work when it fires). */
  signal?: AbortSignal;
  /** The call being run. */
  call: ToolCall;
}

/**
 * A tool's code: the parsed arguments object in, the result out (a string as is, anything
 * else as JSON). What it throws becomes an error result the model reads, never a rejection.
 */
export type ToolFunction = (args: any, ctx: ToolContext) => unknown | Promise<unknown>;

/** A tool in runTools' map form (the map's key is its name). */
export interface ToolDefinition {
  description?: string;
  /** A JSON schema of the arguments (default: an object with no properties). */
  parameters?: Record<string, unknown>;
  run: ToolFunction;
}

/** What one tool call gave back (its `tool` message's content). */
export interface ToolResult {
  tool_call_id: string;
  name: string;
  /** The text the model reads; `Error: ...` when it failed. */
  content: string;
  /** An unknown tool, arguments that are not a JSON object, or a tool that threw. */
  error: boolean;
}

/** One round of tool calls. */
export interface RunToolsStep {
  /** Which completion (0, 1, ...). */
  step: number;
  /** The reply that called the tools. */
  message: ChatCompletionMessage;
  toolCalls: ToolCall[];
  results: ToolResult[];
  /** That completion's usage. */
  usage: Usage;
}

export interface RunToolsOptions extends Omit<ChatCompletionRequest, "messages" | "tools" | "stream"> {
  messages: ChatMessage[];
  /**
   * The tools: a map `{ name: { description, parameters, run } }` (the built-in `tools.*` fit
   * it), or OpenAI tool objects with their code in `functions`. A bad definition (no `run`, a
   * bad or duplicate name) is a RequestError before anything runs.
   */
  tools: Record<string, ToolDefinition> | Tool[];
  /** With `tools` as OpenAI tool objects: each one's code, by name. */
  functions?: Record<string, ToolFunction>;
  /**
   * The most rounds of tool calls (default 5, at most 100). A reply that still calls tools
   * after that many rounds ends the loop with finish_reason `max_steps`, its calls not run;
   * call runTools again with `result.messages` to go on.
   */
  maxSteps?: number;
  /** Aborts the completion in flight (finish_reason `abort`) and is passed to the tools. */
  signal?: AbortSignal;
  /** Given: every completion streams, and this sees each chunk's delta (`step`: which completion). */
  onDelta?: (delta: ChatCompletionDelta, ctx: { step: number }) => void;
  /** A call the model made, just before its tool runs. */
  onToolCall?: (call: ToolCall, ctx: { step: number }) => void;
  /** A call's result, as soon as its tool has run. */
  onToolResult?: (result: ToolResult, ctx: { step: number }) => void;
  /** After each round of tool calls. */
  onStep?: (step: RunToolsStep) => void;
  /**
   * Request fields for one completion only (merged over the others), from the conversation so
   * far: e.g. `{ tool_choice: "none" }` for a last step. What it throws rejects runTools.
   */
  prepareStep?: (ctx: { step: number; messages: ChatMessage[] }) => Partial<ChatCompletionRequest> | void | Promise<Partial<ChatCompletionRequest> | void>;
}

export interface RunToolsResult {
  /** The last reply. */
  message: ChatCompletionMessage;
  /**
   * The whole conversation: the messages given, each reply that called tools (with its
   * `tool_calls` and `reasoning_content`), one `tool` message per call, and the last reply.
   */
  messages: ChatMessage[];
  steps: RunToolsStep[];
  /** Tokens over all completions, and each completion's own usage in order. */
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number; completions: Usage[] };
  /** The last completion's finish_reason, or `max_steps` (see maxSteps). */
  finish_reason: FinishReason | "max_steps";
}

/**
 * The tool loop: ask `engine` (from createEngine, with or without a worker); when the reply
 * calls tools, run them here (in order), append the reply and one `tool` message per call,
 * and ask again, until a reply calls no tool or `maxSteps` rounds have run. A tool that
 * throws, an unknown tool or arguments that are not JSON become an error result the model
 * reads: only engine errors (RequestError, GpuError, ...) reject.
 */
export function runTools(engine: QwenEngine, opts: RunToolsOptions): Promise<RunToolsResult>;

/** Built-in tools for runTools' map form. */
export const tools: {
  /**
   * Arithmetic only, by the package's own parser (no eval): numbers, `+ - * / %`, `^` / `**`
   * (power), brackets, `pi`, `e`, and sqrt, abs, sin, cos, tan, asin, acos, atan, exp, ln, log
   * (base 10), log2, floor, ceil, round, min, max, pow, hypot. `{expression}` →
   * `{expression, result}`; an error (a bad expression, a result that is not finite) throws.
   */
  readonly calculator: ToolDefinition;
  /** `{timeZone?}` (an IANA name) → `{iso, local, timeZone, unixMs}`. */
  readonly currentTime: ToolDefinition;
};
