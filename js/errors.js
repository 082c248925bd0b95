// Errors of the package: an `Error` whose `name` says the kind (ConfigError, WeightsError, ...)
// and whose `code` says, machine-readably, what happened. Each code belongs to one name; the
// table below is the whole set (js/README.md and index.d.ts document it). Errors made in wasm
// (src/wasm.rs) carry the same codes. Loaded on the main thread and in the worker: keep small.

/** Every error code and the error name it comes with. */
export const ERROR_CODES = Object.freeze({
  config_missing: "ConfigError", // no config.json (HTTP 404, not in the files given)
  config_invalid: "ConfigError", // config.json unreadable, or a model this engine does not run
  weights_missing: "WeightsError", // a checkpoint file is missing (HTTP 404, not in the files given)
  weights_corrupt: "WeightsError", // truncated file, bad header, wrong shapes or dtypes, missing tensors
  weights_format: "WeightsError", // a pre-quantized folder asked for in another format, an unknown one, or a GGUF type we do not load
  tokenizer_missing: "TokenizerError", // the call needs a tokenizer and the model has none
  tokenizer_invalid: "TokenizerError", // the tokenizer file is corrupt or does not fit the model
  gpu_unavailable: "GpuError", // no WebGPU here (no navigator.gpu: Node.js, a server), or no adapter or device
  gpu_out_of_memory: "GpuError", // the model does not fit this GPU (memory budget, binding limit, allocation)
  gpu_failed: "GpuError", // the GPU failed while running (a kernel, a readback)
  gpu_lost: "GpuError", // the GPU device was lost (driver reset, the browser reclaimed it): load the model again
  wasm_failed: "GpuError", // the WebAssembly module could not be instantiated
  worker_failed: "GpuError", // the engine's Web Worker did not start (404, script error, no answer) or died
  request_invalid: "RequestError", // a bad request value (the message names the field) or option
  context_full: "RequestError", // the prompt does not fit the context (a chat's last message alone, or a generateIds prompt)
  engine_busy: "RequestError", // calls overlapped on the raw wasm engine (the JS API queues them)
  engine_unloaded: "RequestError", // the engine was unloaded (or never loaded)
  network: "NetworkError", // fetch failed, HTTP error, incomplete download
  aborted: "AbortError", // the caller's AbortSignal fired
});

/** The code an error of each name gets when nothing finer is known. */
const DEFAULT_CODE = Object.freeze({
  ConfigError: "config_invalid",
  WeightsError: "weights_corrupt",
  TokenizerError: "tokenizer_invalid",
  GpuError: "gpu_failed",
  RequestError: "request_invalid",
  NetworkError: "network",
  AbortError: "aborted",
});

/** A package error: `code` (a key of ERROR_CODES) decides the name. */
export function qwenError(code, message, cause) {
  const e = new Error(message, cause ? { cause } : undefined);
  e.name = ERROR_CODES[code] || "Error";
  e.code = code;
  return e;
}

/**
 * Any thrown value as a package error: one that already has a known code is returned as is;
 * one of our names without a code gets that name's default code; anything else (a plain
 * Error, a DOMException, a string) becomes `fallbackCode`'s kind, keeping the message.
 */
export function asQwenError(e, fallbackCode) {
  if (e && typeof e.code === "string" && e.code in ERROR_CODES) return e;
  const name = e && e.name;
  const code = name === "AbortError" ? "aborted" : DEFAULT_CODE[name] || fallbackCode;
  return qwenError(code, (e && e.message) || String(e), e instanceof Error ? e : undefined);
}

/** What crosses postMessage (an Error's own fields do not survive structured cloning). */
export const toWire = (e) => {
  const q = asQwenError(e, "gpu_failed");
  return { name: q.name, code: q.code, message: q.message };
};

/** The error a worker sent. */
export const fromWire = (w) => qwenError(w && w.code in ERROR_CODES ? w.code : "gpu_failed", (w && w.message) || "unknown error");
