//! The browser boundary: the only Rust that knows JavaScript.
//!
//! Two classes, driven by the hand-written JS layer (`js/`), which owns fetching, caching,
//! the Web Worker and the OpenAI-shaped API:
//! - [`Loader`]: config → GPU + fit check → safetensors headers → the tensor plan → one
//!   tensor's bytes at a time ([`Uploader::put`]) → [`Engine`]. The JS side never hands over
//!   more than one tensor, so wasm memory never holds the model. A GGUF file
//!   ([`open_gguf_loader`]) starts from its header instead (config, tokenizer and tensor table
//!   in one), and is then the loader's one shard.
//! - [`Engine`]: step-wise generation ([`Generator`]) from a request (token ids, or chat
//!   messages made into the prompt by the checkpoint's chat template here), the reply parser
//!   ([`ReplyParser`]: text deltas, reasoning, tool calls, stop strings), plus the tokenizer.
//!
//! Values cross the boundary as the Rust types' own serde shapes (serde-wasm-bindgen): the
//! request ([`Request`]), the load options ([`LoadOptions`]), the plan ([`PlanEntry`]), usage
//! ([`Usage`]), engine info ([`EngineInfo`], with [`CHATML`]) and the bench options and report
//! ([`SynthBench`], [`bench::BenchReport`]). The Qwen rules the CLI follows too live in the
//! crate, not in JS: the default system prompt, the prompt budget ([`prompt_budget`]), the stop
//! ids ([`stop_ids`], [`eos_ids_in`]).
//!
//! Every failure reaches JS as an `Error` with a `name` (`ConfigError`, `WeightsError`,
//! `TokenizerError`, `GpuError`, `RequestError`; the JS layer adds `NetworkError` and
//! `AbortError`) and a machine-readable `code` ([`error_name_code`] gives the default one of
//! each [`Error`]; call sites that know more give a finer one). The codes are listed in
//! `js/README.md` and `js/index.d.ts`. Nothing here panics on input; a panic hook logs anyway.

use crate::bench::{self, RandomSource, Stopwatch, SynthBench};
use crate::config::QwenConfig;
use crate::error::Error;
use crate::generate::{eos_ids_in, stop_ids, FinishReason, GenerateOptions, Generator};
use crate::gpu::{Gpu, GpuOptions};
use crate::model::weights::{Encoder, Uploader};
use crate::model::{self, ModelOptions, Qwen, RunState, WindowSpec};
use crate::ops::KvFormat;
use crate::sampler::SamplingParams;
use crate::tokenizer::{chat_prompt, continue_prompt, ChatRequest, ReplyFormat, ToolCall, ToolChoice};
use crate::tokenizer::{
    prompt_budget, ChatFormat, ChatMessage, ChatTemplate, ReplyOptions, ReplyParser, Role, TextStream, Tokenizer,
    CHATML,
};
use crate::weights::checkpoint::check_checkpoint;
use crate::weights::gguf_model::GgufModel;
use crate::weights::quant::{self, WeightFormat};
use crate::weights::{gguf, safetensors, Dtype, TensorInfo, TensorSource};
use js_sys::Promise;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

// ------------------------------------------------------------------ errors

/// A JS `Error` with a `name` and a machine-readable `code`.
fn coded(name: &str, code: &str, msg: &str) -> JsValue {
    let e = js_sys::Error::new(msg);
    e.set_name(name);
    let _ = js_sys::Reflect::set(&e, &JsValue::from_str("code"), &JsValue::from_str(code));
    e.into()
}

/// The JS error name of a crate [`Error`] and its default code. Call sites that know the
/// situation better give a finer code ([`js_err_code`], [`js_err_gpu`]).
pub fn error_name_code(e: &Error) -> (&'static str, &'static str) {
    match e {
        Error::Config(_) => ("ConfigError", "config_invalid"),
        Error::Io { .. } => ("WeightsError", "weights_missing"),
        Error::Weights(_) => ("WeightsError", "weights_corrupt"),
        Error::Tokenizer(_) => ("TokenizerError", "tokenizer_invalid"),
        Error::Gpu(_) | Error::Shader { .. } => ("GpuError", "gpu_failed"),
        Error::GpuOutOfMemory(_) => ("GpuError", "gpu_out_of_memory"),
        Error::GpuLost(_) => ("GpuError", "gpu_lost"),
        Error::Request(_) => ("RequestError", "request_invalid"),
        Error::ContextFull(_) => ("RequestError", "context_full"),
    }
}

fn js_err(e: Error) -> JsValue {
    let (name, code) = error_name_code(&e);
    coded(name, code, &e.to_string())
}

/// `e` with its own name but `code`.
fn js_err_code(code: &'static str) -> impl Fn(Error) -> JsValue {
    move |e| coded(error_name_code(&e).0, code, &e.to_string())
}

/// A GPU error gets `code` (what a failing GPU step means here); any other keeps its own.
fn js_err_gpu(code: &'static str) -> impl Fn(Error) -> JsValue {
    move |e| match e {
        Error::Gpu(_) => js_err_code(code)(e),
        e => js_err(e),
    }
}

fn request_err(msg: &str) -> JsValue {
    coded("RequestError", "request_invalid", msg)
}

fn tokenizer_missing(what: &str) -> JsValue {
    coded(
        "TokenizerError",
        "tokenizer_missing",
        &format!(
            "{what} needs a tokenizer (tokenizer.json or qwen.tiktoken next to the model); use generateIds for raw ids"
        ),
    )
}

// ------------------------------------------------------------------ serde across the boundary

/// A JS value as `T` (its serde shape); a bad value is a request error naming its field
/// after `what` (`""`, `"load option "`...). Every field of the types read this way is
/// optional, so the field named is the first whose value alone fails too (cheaper in wasm
/// size than tracking the path while deserializing).
fn from_js<T: serde::de::DeserializeOwned>(v: JsValue, what: &str) -> Result<T, Error> {
    serde_wasm_bindgen::from_value::<T>(v.clone()).map_err(|e| {
        let msg = String::from(JsValue::from(e).unchecked_into::<js_sys::Error>().message());
        let field = js_sys::Object::try_from(&v).and_then(|obj| {
            js_sys::Object::keys(obj).iter().filter_map(|k| k.as_string()).find(|k| {
                let key = JsValue::from_str(k);
                let one = js_sys::Object::new();
                let value = js_sys::Reflect::get(obj, &key).unwrap_or(JsValue::UNDEFINED);
                js_sys::Reflect::set(&one, &key, &value).is_ok()
                    && serde_wasm_bindgen::from_value::<T>(one.into()).is_err()
            })
        });
        let at = match field {
            Some(f) => format!("{what}{f}"),
            None => what.trim_end().to_string(),
        };
        Error::Request(if at.is_empty() { msg } else { format!("{at}: {msg}") })
    })
}

/// `v` as a plain JS value (objects, not `Map`s; `None` as `null`), as `JSON.parse` would give.
fn to_js<T: Serialize + ?Sized>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_err(Error::Request(format!("cannot convert a result for JavaScript: {e}"))))
}

// ------------------------------------------------------------------ free functions

/// Length of a safetensors JSON header from the file's first 8 bytes.
#[wasm_bindgen]
pub fn safetensors_header_len(prefix: &[u8], file_len: f64, label: &str) -> Result<f64, JsValue> {
    safetensors::header_len(prefix, file_len as u64, label).map(|n| n as f64).map_err(js_err)
}

/// The format a checkpoint shard's header says it is pre-quantized to (`q4`, `q8`), or `""`
/// for a plain checkpoint; a format this build does not know is a `WeightsError`
/// (`weights_format`).
#[wasm_bindgen]
pub fn safetensors_weight_format(header_json: &[u8], file_len: f64, label: &str) -> Result<String, JsValue> {
    let h = safetensors::parse_header_full(header_json, file_len as u64, label).map_err(js_err)?;
    Ok(quant::stored_format(&h.metadata)
        .map_err(js_err_code("weights_format"))?
        .map(|f| f.name().to_string())
        .unwrap_or_default())
}

/// Qwen's ChatML as data (`start`, `end`, `default_system`, `end_of_text_id`): [`CHATML`].
#[wasm_bindgen]
pub fn chat_format() -> Result<JsValue, JsValue> {
    to_js(&CHATML)
}

/// Tokens a chat prompt may take in a `context`-token cache when the reply may take
/// `max_tokens` ([`prompt_budget`], the CLI's rule too).
#[wasm_bindgen(js_name = prompt_budget)]
pub fn prompt_budget_js(context: u32, max_tokens: u32) -> u32 {
    prompt_budget(context as usize, max_tokens as usize) as u32
}

/// Options of [`open_loader`]: the JS `createEngine` options of the same names (others are
/// ignored). Every one is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadOptions {
    /// KV cache tokens (default: [`ModelOptions::context_for`]: the model's trained context,
    /// at most 4096; Qwen v1, whose dynamic NTK and logN run past it, the longest of 32K, 16K
    /// and 8K that fits `max_gpu_bytes`).
    pub context: Option<u32>,
    /// Most tokens per forward pass.
    pub max_batch: Option<u32>,
    /// A storage-binding limit below the adapter's.
    pub max_binding_bytes: Option<u64>,
    /// A GPU memory budget (browsers do not report GPU memory): a model needing more is
    /// refused, and a Qwen v1 model's default context is the longest that fits it (default
    /// budget for that choice: [`model::DEFAULT_GPU_BUDGET`]).
    pub max_gpu_bytes: Option<u64>,
    /// `f16`, `q8`, `q4` (`auto` or none: the checkpoint's own format if pre-quantized, else f16).
    pub weights: Option<String>,
    /// `f32` (default), `f16`, `q8`.
    pub kv_cache: Option<String>,
    /// Where a plain checkpoint is quantized: `gpu`, `cpu`, or `auto` (default: the GPU unless
    /// the adapter is a CPU implementation). Both give the same bytes.
    pub encoder: Option<String>,
    /// Layer-wise window attention ([`WindowSpec`]): the CLI's `--window` text (`"512"`,
    /// `"256,512,..."`, `"pow2:256:0.25"`, `"off"`), one window for every layer as a number,
    /// or an array of numbers (one for all, or one per layer; 0: a whole-cache layer).
    pub window: Option<WindowOption>,
}

/// The `window` load option as JS may give it (numbers arrive as f64 and are checked here).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum WindowOption {
    Text(String),
    One(f64),
    Layers(Vec<f64>),
}

impl WindowOption {
    /// The windows asked for; a value that is not a window is a `RequestError` naming the option.
    fn spec(&self) -> Result<WindowSpec, Error> {
        let whole = |w: f64| {
            if w.is_finite() && w >= 0.0 && w.fract() == 0.0 && w <= u32::MAX as f64 {
                Ok((w as u64).to_string())
            } else {
                Err(Error::Request(format!("window: {w} is not a window (a whole number of tokens, 0 for none)")))
            }
        };
        match self {
            WindowOption::Text(t) => WindowSpec::parse(t),
            WindowOption::One(w) => WindowSpec::parse(&whole(*w)?),
            WindowOption::Layers(v) if v.is_empty() => {
                Err(Error::Request("window: an empty array (give one window for all layers, or one per layer)".into()))
            }
            WindowOption::Layers(v) => {
                WindowSpec::parse(&v.iter().map(|&w| whole(w)).collect::<Result<Vec<_>, _>>()?.join(","))
            }
        }
    }
}

/// Open the GPU for a model and check that it fits before anything is downloaded.
/// `options`: [`LoadOptions`]; `stored_format`: what [`safetensors_weight_format`] said of
/// the first shard (empty: plain). A model that does not fit is a `GpuError` with code
/// `gpu_out_of_memory`; no WebGPU adapter or device, `gpu_unavailable`.
#[wasm_bindgen]
pub async fn open_loader(config_json: String, options: JsValue, stored_format: String) -> Result<Loader, JsValue> {
    let o = load_options(options)?;
    let cfg = QwenConfig::from_json(&config_json).map_err(js_err)?;
    let eos = eos_ids_in(&config_json).map_err(js_err)?;
    let stored = if stored_format.is_empty() {
        None
    } else {
        Some(WeightFormat::parse(&stored_format).map_err(js_err_code("weights_format"))?)
    };
    let opts = model_options(&o, stored)?;
    let (gpu, needs) = open_fitting(&cfg, &opts, &o, &BTreeMap::new()).await?;
    Ok(Loader {
        cfg,
        opts,
        gpu: Some(gpu),
        tensors: BTreeMap::new(),
        metadata: BTreeMap::new(),
        owner: BTreeMap::new(),
        shards: 0,
        uploader: None,
        needs,
        eos,
        gguf: None,
        tokenizer_config: None,
        gen_defaults: GenerationDefaults::default(),
    })
}

/// [`LoadOptions`] from JS (`undefined` or `null`: the defaults).
fn load_options(options: JsValue) -> Result<LoadOptions, JsValue> {
    if options.is_undefined() || options.is_null() {
        Ok(LoadOptions::default())
    } else {
        from_js(options, "load option ").map_err(js_err)
    }
}

/// The model options a load asks for; `stored`: a pre-quantized checkpoint's own format.
fn model_options(o: &LoadOptions, stored: Option<WeightFormat>) -> Result<ModelOptions, JsValue> {
    let requested = WeightFormat::parse_request(o.weights.as_deref().unwrap_or("")).map_err(js_err)?;
    let weights = quant::resolve_format(requested, stored).map_err(js_err_code("weights_format"))?;
    Ok(ModelOptions {
        context: o.context.filter(|&c| c > 0).map(|c| c as usize),
        max_batch: o.max_batch.filter(|&b| b > 0).map(|b| b as usize).unwrap_or(ModelOptions::default().max_batch),
        weights,
        kv: match o.kv_cache.as_deref() {
            None | Some("") => KvFormat::F32,
            Some(k) => KvFormat::parse(k).map_err(js_err)?,
        },
        encoder: Encoder::parse(o.encoder.as_deref().unwrap_or("")).map_err(js_err)?,
        max_gpu_bytes: o.max_gpu_bytes.filter(|&b| b > 0),
        window: o.window.as_ref().map(WindowOption::spec).transpose().map_err(js_err)?.unwrap_or_default(),
    })
}

/// Open the GPU and check that the model fits: the budget, a weight row against the binding
/// limit, and the run state allocated once as a trial. `tensors`: a GGUF file's (whose
/// matrices keep their own types), else empty. Returns the GPU and `(weight bytes, state bytes)`.
async fn open_fitting(
    cfg: &QwenConfig,
    opts: &ModelOptions,
    o: &LoadOptions,
    tensors: &BTreeMap<String, TensorInfo>,
) -> Result<(Gpu, (u64, u64)), JsValue> {
    // Windows that do not suit the model's layers fail before the GPU is opened.
    opts.window.resolve(cfg.num_hidden_layers).map_err(js_err)?;
    let gpu_opts = GpuOptions { max_binding_bytes: o.max_binding_bytes.filter(|&b| b > 0), ..Default::default() };
    let gpu = Gpu::new(&gpu_opts).await.map_err(js_err_gpu("gpu_unavailable"))?;
    let (weights, state) = model::gpu_bytes_of(cfg, tensors, opts);
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let too_big = js_err_code("gpu_out_of_memory");
    if let Some(budget) = o.max_gpu_bytes.filter(|&b| b > 0 && weights + state > b) {
        return Err(too_big(Error::Gpu(format!(
            "the model needs {:.1} MiB of GPU memory (weights {:.1} MiB {}, KV cache and activations {:.1} MiB), \
             more than the budget of {:.1} MiB: pick a smaller model or a shorter context",
            mib(weights + state),
            mib(weights),
            format_label(opts.weights, !tensors.is_empty()),
            mib(state),
            mib(budget)
        ))));
    }
    // The largest single buffers: one row of the embedding must fit a binding (the matrices
    // split by rows; an f16 row is the widest a GGUF type keeps too), and the run state is
    // allocated once as a trial (freed at once: the device's ledger counts it down, so later
    // memory figures do not include it).
    let cols = cfg.hidden_size.max(cfg.intermediate_size);
    let row = opts.weights.for_cols(cols).row_bytes(cols);
    if row > gpu.max_binding {
        return Err(too_big(Error::Gpu(format!(
            "a weight row needs {row} bytes, above this GPU's storage binding limit of {} bytes",
            gpu.max_binding
        ))));
    }
    let ctx = opts.context_for(cfg);
    RunState::new(&gpu, cfg, opts.max_batch.min(ctx), ctx, opts.kv)
        .map_err(|e| too_big(Error::Gpu(format!("the model does not fit this GPU ({}): {e}", gpu.describe()))))?;
    gpu.check().map_err(js_err_gpu("gpu_out_of_memory"))?;
    Ok((gpu, (weights, state)))
}

// ------------------------------------------------------------------ GGUF files

/// What [`Loader::weight_format`] and [`EngineInfo::weights`] say of a GGUF file loaded with
/// `weights` auto or f16: each matrix keeps the file's own type on the GPU (Q4_0, Q8_0, Q6_K,
/// F16...; F32 and BF16 matrices become f16). `weight_types` lists them.
pub const GGUF_FORMAT: &str = "gguf";

/// The name of the weight format a load uses: [`GGUF_FORMAT`] for a GGUF file whose types are
/// kept (`weights` auto or f16), else the format's own.
fn format_label(weights: WeightFormat, gguf: bool) -> &'static str {
    if gguf && weights == WeightFormat::F16 {
        GGUF_FORMAT
    } else {
        weights.name()
    }
}

/// How many bytes of a GGUF file's start its header needs: 0 when `prefix` (the file's first
/// bytes; `file_len`: the whole file's size) holds all of it, else at least that many (read
/// them and ask again). A file that is not a GGUF, is truncated or has a bad header is a
/// `WeightsError` (`weights_corrupt`) naming `label`.
#[wasm_bindgen]
pub fn gguf_header_need(prefix: &[u8], file_len: f64, label: &str) -> Result<f64, JsValue> {
    match gguf::parse_header(prefix, js_len(file_len), label).map_err(js_err)? {
        gguf::Parsed::Header(_) => Ok(0.0),
        gguf::Parsed::NeedMore(n) => Ok(n as f64),
    }
}

/// A file size from JS: a whole number of bytes (anything else, NaN included, is read as
/// "unknown, possibly large": 2^53 - 1).
fn js_len(n: f64) -> u64 {
    if (0.0..=9007199254740991.0).contains(&n) {
        n as u64
    } else {
        9007199254740991
    }
}

/// [`open_loader`] for a GGUF file: `prefix` holds its whole header ([`gguf_header_need`]
/// said 0), `file_len` is the file's size, `label` its name. The config comes from the GGUF
/// metadata, the eos id from `tokenizer.ggml.eos_token_id`, and the tokenizer (when the file
/// has one) is made from the metadata here, before any weight is fetched (so a vocabulary we
/// cannot read fails the load before the download); [`Loader::finish`] then needs no
/// tokenizer file. The file is the loader's one shard (shard 0): [`Loader::plan`] gives its
/// tensors' byte ranges as for safetensors shards. `weights` auto (or f16) keeps each
/// matrix's GGUF type on the GPU; q8 or q4 re-encodes them. A tensor type this engine does
/// not load is a `WeightsError` with code `weights_format` naming the type and the tensor;
/// a GGUF architecture other than qwen, qwen2, qwen3 a `ConfigError`.
#[wasm_bindgen]
pub async fn open_gguf_loader(
    prefix: Vec<u8>,
    file_len: f64,
    label: String,
    options: JsValue,
) -> Result<Loader, JsValue> {
    let o = load_options(options)?;
    let header = match gguf::parse_header(&prefix, js_len(file_len), &label).map_err(js_err)? {
        gguf::Parsed::Header(h) => h,
        gguf::Parsed::NeedMore(n) => {
            return Err(js_err(Error::Weights(format!(
                "{label}: the GGUF header needs {n} bytes, {} were given",
                prefix.len()
            ))))
        }
    };
    drop(prefix);
    let GgufModel { config: cfg, tensors, file_names, metadata } =
        GgufModel::from_header(header, &label).map_err(js_err)?;
    // Types we cannot load, named before the GPU is opened or a byte is fetched.
    for (name, t) in &tensors {
        if let Dtype::Ggml(g) = t.dtype {
            if !g.decodable() {
                let file_name = file_names.get(name).map(String::as_str).unwrap_or(name);
                return Err(js_err_code("weights_format")(g.unsupported(&format!("{file_name} ({name})"))));
            }
        }
    }
    check_checkpoint(&cfg, &tensors, &BTreeMap::new()).map_err(js_err)?;
    let eos = match metadata.get("tokenizer.ggml.eos_token_id") {
        None => Vec::new(),
        Some(v) => vec![v.as_u64().and_then(|id| u32::try_from(id).ok()).ok_or_else(|| {
            js_err(Error::Config(format!("{label}: tokenizer.ggml.eos_token_id {v:?} is not a token id")))
        })?],
    };
    let tok = if metadata.contains_key("tokenizer.ggml.model") {
        let t = Tokenizer::from_gguf(&metadata).map_err(js_err)?;
        t.check_fits(cfg.vocab_size).map_err(js_err)?;
        Some(t)
    } else {
        None
    };
    let template = Tokenizer::gguf_chat_template(&metadata);
    drop(metadata);
    let opts = model_options(&o, None)?;
    let (gpu, needs) = open_fitting(&cfg, &opts, &o, &tensors).await?;
    let mut types: Vec<String> = tensors.values().map(|t| t.dtype.name().to_string()).collect();
    types.sort_unstable();
    types.dedup();
    let owner = tensors.keys().map(|n| (n.clone(), 0)).collect();
    Ok(Loader {
        cfg,
        opts,
        gpu: Some(gpu),
        tensors,
        metadata: BTreeMap::new(),
        owner,
        shards: 1,
        uploader: None,
        needs,
        eos,
        gguf: Some(GgufLoad { tokenizer: tok, types, template }),
        tokenizer_config: None,
        gen_defaults: GenerationDefaults::default(),
    })
}

/// What a loader keeps of a GGUF file besides its tensors.
struct GgufLoad {
    /// Made from the file's metadata (None: the file has no tokenizer).
    tokenizer: Option<Tokenizer>,
    /// The file's tensor types (`Q4_0`, `F32`...), sorted.
    types: Vec<String>,
    /// `tokenizer.chat_template`, when the file has one.
    template: Option<String>,
}

/// One tensor to upload: its bytes are `start..end` of shard `shard` ([`Loader::plan`]).
#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub name: String,
    pub shard: u32,
    pub start: u64,
    pub end: u64,
}

/// Puts one checkpoint on the GPU, one tensor at a time.
#[wasm_bindgen]
pub struct Loader {
    cfg: QwenConfig,
    opts: ModelOptions,
    gpu: Option<Gpu>,
    tensors: BTreeMap<String, TensorInfo>,
    /// Every shard's `__metadata__`, merged (a pre-quantized checkpoint's format).
    metadata: BTreeMap<String, String>,
    /// Which shard each tensor is stored in (offsets are per file).
    owner: BTreeMap<String, u32>,
    shards: u32,
    uploader: Option<Uploader>,
    needs: (u64, u64),
    /// The model's eos ids (config.json, then generation_config.json; a GGUF file's
    /// `tokenizer.ggml.eos_token_id`).
    eos: Vec<u32>,
    /// Set when the checkpoint is a GGUF file ([`open_gguf_loader`]).
    gguf: Option<GgufLoad>,
    /// The text of tokenizer_config.json ([`Loader::add_tokenizer_config`]).
    tokenizer_config: Option<String>,
    /// Sampling defaults of generation_config.json.
    gen_defaults: GenerationDefaults,
}

#[wasm_bindgen]
impl Loader {
    /// How matrices will be stored on the GPU (`auto` resolved): `f16`, `q8` or `q4`, or
    /// [`GGUF_FORMAT`] (`gguf`) for a GGUF file whose own types are kept.
    pub fn weight_format(&self) -> String {
        format_label(self.opts.weights, self.gguf.is_some()).to_string()
    }

    /// A GGUF file's tensor types (`F32`, `Q4_0`, `Q6_K`...), sorted; empty for safetensors.
    pub fn weight_types(&self) -> Vec<String> {
        self.gguf.as_ref().map(|g| g.types.clone()).unwrap_or_default()
    }

    /// Whether the loader has a tokenizer already (one a GGUF file's metadata made).
    pub fn has_tokenizer(&self) -> bool {
        self.gguf.as_ref().is_some_and(|g| g.tokenizer.is_some())
    }

    /// The KV cache format: `f32`, `f16` or `q8`.
    pub fn kv_format(&self) -> String {
        self.opts.kv.name().to_string()
    }

    /// The adapter, in one line.
    pub fn describe(&self) -> String {
        match (&self.gpu, &self.uploader) {
            (Some(g), _) => g.describe(),
            _ => String::from("(gpu in use by the uploader)"),
        }
    }

    /// GPU bytes the model needs: `[weights, kv cache + activations]`.
    pub fn needs(&self) -> Vec<f64> {
        vec![self.needs.0 as f64, self.needs.1 as f64]
    }

    /// The text of `generation_config.json`: its `eos_token_id`s join the config's (a file
    /// that is not JSON adds none; an id above u32 is a `ConfigError`).
    pub fn add_generation_config(&mut self, json: &str) -> Result<(), JsValue> {
        for id in eos_ids_in(json).map_err(js_err)? {
            if !self.eos.contains(&id) {
                self.eos.push(id);
            }
        }
        self.gen_defaults = GenerationDefaults::from_json(json);
        Ok(())
    }

    /// The text of `tokenizer_config.json`: its `chat_template` makes chat prompts (read at
    /// [`Loader::finish`]; a template that does not compile is a `TokenizerError`).
    pub fn add_tokenizer_config(&mut self, json: &str) {
        self.tokenizer_config = Some(json.to_string());
    }

    /// Add one shard's header (the JSON after the 8-byte prefix); returns its shard index.
    pub fn add_shard(&mut self, label: &str, header_json: &[u8], file_len: f64) -> Result<u32, JsValue> {
        if self.uploader.is_some() {
            return Err(request_err("add_shard after plan()"));
        }
        if self.gguf.is_some() {
            return Err(request_err("a GGUF file is the loader's one file: add_shard does not apply"));
        }
        let h = safetensors::parse_header_full(header_json, file_len as u64, label).map_err(js_err)?;
        crate::weights::merge_metadata(&mut self.metadata, h.metadata, label).map_err(js_err)?;
        let shard = self.shards;
        for (name, info) in h.tensors {
            if self.tensors.contains_key(&name) {
                return Err(js_err(Error::Weights(format!("tensor {name} is stored twice (again in {label})"))));
            }
            self.owner.insert(name.clone(), shard);
            self.tensors.insert(name, info);
        }
        self.shards += 1;
        Ok(shard)
    }

    /// Check the tensor list against the config, allocate every GPU buffer, and return the
    /// tensors to upload ([`PlanEntry`] objects), in file order.
    pub fn plan(&mut self) -> Result<JsValue, JsValue> {
        if self.uploader.is_none() {
            let gpu = self.gpu.take().ok_or_else(|| request_err("loader already used"))?;
            let up = Uploader::with_metadata(gpu, &self.cfg, &self.tensors, &self.metadata, self.opts.weights);
            let mut up = up.map_err(js_err_gpu("gpu_out_of_memory"))?;
            up.set_encoder(self.opts.encoder);
            self.uploader = Some(up);
        }
        let up = self.uploader.as_ref().ok_or_else(|| request_err("no uploader"))?;
        let mut wanted: Vec<(u32, TensorInfo, String)> =
            up.wanted().into_iter().map(|(n, t)| (self.owner.get(&n).copied().unwrap_or(0), t, n)).collect();
        wanted.sort_by_key(|(s, t, _)| (*s, t.start));
        let plan: Vec<PlanEntry> =
            wanted.into_iter().map(|(shard, t, name)| PlanEntry { name, shard, start: t.start, end: t.end }).collect();
        to_js(&plan)
    }

    /// Upload one tensor's stored bytes.
    pub fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), JsValue> {
        let up = self.uploader.as_mut().ok_or_else(|| request_err("put before plan()"))?;
        up.put(name, bytes).map_err(js_err)
    }

    /// `[bytes uploaded, bytes total]`.
    pub fn progress(&self) -> Vec<f64> {
        self.uploader.as_ref().map(|u| u.progress()).map(|(a, b)| vec![a as f64, b as f64]).unwrap_or(vec![0.0, 0.0])
    }

    /// Every tensor is on the GPU: allocate the run state and build the engine.
    /// `tokenizer`: the bytes of tokenizer.json or qwen.tiktoken, if any (none: a GGUF
    /// file's own tokenizer, made by [`open_gguf_loader`], if it has one).
    pub async fn finish(self, tokenizer: Option<Vec<u8>>) -> Result<Engine, JsValue> {
        let (gguf_tok, weight_types, gguf_template) = match self.gguf {
            Some(g) => (g.tokenizer, Some(g.types), g.template),
            None => (None, None, None),
        };
        let tok = match tokenizer {
            Some(b) => {
                let t = Tokenizer::from_bytes(&b).map_err(js_err)?;
                t.check_fits(self.cfg.vocab_size).map_err(js_err)?;
                Some(t)
            }
            None => gguf_tok,
        };
        let template =
            chat_template(self.tokenizer_config.as_deref(), gguf_template.as_deref(), tok.as_ref(), &self.eos)
                .map_err(js_err_code("tokenizer_invalid"))?;
        let up = self.uploader.ok_or_else(|| request_err("finish before plan()"))?;
        let (gpu, weights) = up.finish_async().await.map_err(js_err)?;
        let scope = gpu.begin_scope();
        let model = Qwen::from_weights(gpu, self.cfg, weights, &self.opts).map_err(js_err_gpu("gpu_out_of_memory"))?;
        model.gpu.end_scope(scope, "allocating the run state (KV cache, activations)".into());
        model.gpu.settle().await.map_err(js_err)?;
        let (context, vocab_size) = (model.context(), model.config.vocab_size);
        let windows = model.windows().to_vec();
        let device = model.gpu.device.clone();
        Ok(Engine {
            inner: Rc::new(RefCell::new(Inner {
                device,
                lost: None,
                model: Some(model),
                gen: None,
                tok,
                unloaded: false,
                abort_requested: false,
                cached: Vec::new(),
                reused: 0,
                eos: self.eos,
                formats: (format_label(self.opts.weights, weight_types.is_some()), self.opts.kv.name()),
                weight_types,
                run: Run::default(),
                context,
                vocab_size,
                template,
                gen_defaults: self.gen_defaults,
                reply: None,
                stop_hit: false,
                logprobs_on: false,
                replies: 0,
                chat: None,
                out_of_room: false,
                windows,
            })),
        })
    }
}

struct Inner {
    /// The model's device (a handle; kept for the test-only [`Engine::lose_device_for_test`],
    /// which must reach it while a call holds the model).
    device: wgpu::Device,
    /// `(reason, message)` once the device is known to be lost (sticky: a lost device never
    /// comes back; every later GPU call fails with `gpu_lost`).
    lost: Option<(String, String)>,
    /// `None` while a call holds it (busy) or after unload.
    model: Option<Qwen>,
    gen: Option<Generator>,
    tok: Option<Tokenizer>,
    unloaded: bool,
    abort_requested: bool,
    /// The ids the KV cache holds while no generation does (a generation's own are its
    /// [`Generator::sequence`]).
    cached: Vec<u32>,
    /// Prompt tokens the last `start` found in the cache and did not feed again.
    reused: usize,
    /// The model's eos ids (config.json and generation_config.json).
    eos: Vec<u32>,
    /// How weights and the KV cache are stored (`auto` resolved; [`GGUF_FORMAT`] for a GGUF
    /// file's own types).
    formats: (&'static str, &'static str),
    /// A GGUF file's tensor types (None: a safetensors checkpoint).
    weight_types: Option<Vec<String>>,
    /// Timings of the current (or last) generation.
    run: Run,
    /// KV cache length and vocabulary (known while a call holds the model, too).
    context: usize,
    vocab_size: usize,
    /// Makes chat prompts: the checkpoint's own template, or ChatML (Qwen v1).
    template: ChatTemplate,
    /// generation_config.json's sampling values, used where a chat request gives none.
    gen_defaults: GenerationDefaults,
    /// The current chat reply's parser (stop strings, reasoning, tool calls).
    reply: Option<ReplyParser>,
    /// A stop string ended the current reply.
    stop_hit: bool,
    /// The current request asked for logprobs.
    logprobs_on: bool,
    /// Replies started, for unique tool call ids.
    replies: u64,
    /// The current chat request, kept so that its reply can go on past the end of the context.
    chat: Option<ChatState>,
    /// The current chat reply filled the context and could not go on (even its own last user
    /// message with the reply so far leaves no room): it ended as at `max_tokens` (`length`).
    out_of_room: bool,
    /// Each layer's attention window (0: the whole cache).
    windows: Vec<usize>,
}

/// What [`Usage`] is computed from.
#[derive(Default)]
struct Run {
    prompt_tokens: usize,
    /// Tokens of old turns left out of the prompt to fit the context (the most over the
    /// reply's prompts: the first, and those it went on with).
    dropped_tokens: usize,
    /// Tokens fed through prefill passes: the first prompt's uncached tokens, then what each
    /// continuation fed again.
    prefilled_tokens: usize,
    /// Times the reply filled the context and went on with older turns left out.
    continuations: usize,
    completion_tokens: usize,
    /// Started with the request; seconds from then to the first generated token and to the end.
    clock: Option<Stopwatch>,
    first_s: Option<f64>,
    end_s: Option<f64>,
}

impl Inner {
    fn take_model(&mut self) -> Result<Qwen, JsValue> {
        self.model.take().ok_or_else(|| self.take_model_err())
    }

    /// The model for a call that runs the GPU: a `gpu_lost` error once the device is lost.
    fn take_live_model(&mut self) -> Result<Qwen, JsValue> {
        if let Some(e) = self.lost_error() {
            return Err(e);
        }
        self.take_model()
    }

    /// Record a loss the model's device reported (the device-lost callback has run).
    fn note_lost(&mut self) {
        if self.lost.is_some() {
            return;
        }
        let Some(m) = self.model.as_ref() else { return };
        if !m.gpu.is_lost() {
            return;
        }
        // The callback's message is "{reason:?}: {message}" (reason Destroyed or Unknown).
        let text = match m.gpu.check() {
            Err(e) => e.to_string(),
            Ok(()) => String::new(),
        };
        let detail = text.split_once(": ").map(|(_, d)| d).unwrap_or(&text);
        let (reason, message) = match detail.split_once(": ") {
            Some((r, msg)) if r.eq_ignore_ascii_case("destroyed") => ("destroyed", msg),
            _ => ("unknown", detail),
        };
        self.lost = Some((reason.to_string(), message.to_string()));
    }

    /// The `gpu_lost` error, if the device is lost.
    fn lost_error(&mut self) -> Option<JsValue> {
        self.note_lost();
        self.lost.as_ref().map(|(reason, message)| {
            let msg = format!("the GPU device was lost ({reason}: {message}); load the model again");
            coded("GpuError", "gpu_lost", &msg)
        })
    }

    /// `e`, or the `gpu_lost` error when the device turns out to be lost (a failure of a lost
    /// device can surface as a cancelled readback or a validation error first).
    fn or_lost(&mut self, e: JsValue) -> JsValue {
        self.lost_error().unwrap_or(e)
    }

    fn tok(&self, what: &str) -> Result<&Tokenizer, JsValue> {
        self.tok.as_ref().ok_or_else(|| tokenizer_missing(what))
    }

    /// The ids a generation stops at ([`stop_ids`], the CLI's rule): the request's own, then
    /// unless `ignore_eos` the model's eos ids and, for chat, the tokenizer's stop tokens.
    fn stop_ids(&self, extra: &[u32], chat: bool, ignore_eos: bool) -> Vec<u32> {
        let chat_stops = if chat { self.tok.as_ref().map(|t| t.stop_ids()).unwrap_or_default() } else { Vec::new() };
        stop_ids(extra, &self.eos, &chat_stops, ignore_eos)
    }

    /// The prompt ids, generation options and (for chat) the reply parser's options of `req`
    /// for a `context`-token cache.
    fn prepare(&self, req: Request, chat: bool, context: usize) -> Result<Prepared, JsValue> {
        let max_new_tokens = req.max_tokens.or(req.max_new_tokens).unwrap_or(DEFAULT_MAX_TOKENS) as usize;
        let stop = match req.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        let mut logit_bias = Vec::new();
        for (k, v) in req.logit_bias.unwrap_or_default() {
            let id = k
                .trim()
                .parse::<u32>()
                .map_err(|_| request_err(&format!("logit_bias: key {k:?} is not a token id")))?;
            logit_bias.push((id, v));
        }
        let enable_thinking = match (req.enable_thinking, req.chat_template_kwargs) {
            (Some(e), _) => Some(e),
            (None, Some(k)) => k.enable_thinking,
            (None, None) => None,
        };
        let mut dropped_tokens = 0;
        let mut chat_state = None;
        let (prompt, reply) = if chat {
            let tok = self.tok("chat")?;
            let messages = req.messages.unwrap_or_default();
            if messages.is_empty() {
                return Err(request_err("messages must be a non-empty array"));
            }
            let msgs: Vec<ChatMessage> = messages.into_iter().map(WireMessage::into_message).collect();
            let tools = req.tools.unwrap_or_default();
            let tool_choice = req.tool_choice.unwrap_or_default();
            if tools.is_empty() && matches!(tool_choice, ToolChoice::Required | ToolChoice::Function(_)) {
                return Err(request_err("tool_choice asks for a tool call but the request has no tools"));
            }
            let creq =
                ChatRequest { messages: &msgs, tools: &tools, enable_thinking, tool_choice: tool_choice.clone() };
            // Too long for the context: context_full; a bad template or message: as it says.
            let p = chat_prompt(tok, &self.template, &creq, prompt_budget(context, max_new_tokens)).map_err(
                |e| match e {
                    Error::ContextFull(_) => js_err_code("context_full")(e),
                    e => js_err(e),
                },
            )?;
            dropped_tokens = p.dropped_tokens;
            chat_state = Some(ChatState {
                messages: msgs,
                tools: tools.clone(),
                tool_choice: tool_choice.clone(),
                enable_thinking,
                max_new_tokens,
            });
            // tool_choice "none": the prompt lists the tools, the reply may not call one.
            if tool_choice == ToolChoice::None && p.reply_format == ReplyFormat::Hermes {
                if let Some(id) = tok.token_to_id("<tool_call>") {
                    logit_bias.retain(|(t, _)| *t != id);
                    logit_bias.push((id, -100.0));
                }
            }
            let format = if tools.is_empty() { ReplyFormat::Plain } else { p.reply_format };
            let mut stop = stop;
            if format == ReplyFormat::ReAct && stop.len() < crate::tokenizer::reply::MAX_STOP_STRINGS {
                // Qwen's openai_api.py stops ReAct replies at the observation the tool gives.
                stop.push("Observation:".into());
            }
            let reply = ReplyOptions {
                stop,
                format,
                prefill: p.prefill,
                reasoning: !self.template.is_fallback(),
                id_prefix: format!("call_{:x}_{}_", self.replies, (js_sys::Math::random() * 4294967296.0) as u64),
            };
            (p.ids, Some(reply))
        } else {
            if !stop.is_empty() || req.tools.is_some() {
                return Err(request_err("stop and tools need a chat request (chat.completions.create)"));
            }
            (req.prompt_ids.unwrap_or_default(), None)
        };
        if prompt.len() > context {
            return Err(js_err(Error::ContextFull(format!(
                "the prompt has {} tokens, more than the context of {context}",
                prompt.len()
            ))));
        }
        if let Some(k) = req.top_logprobs.filter(|&k| k as usize > crate::sampler::MAX_TOP_LOGPROBS) {
            return Err(request_err(&format!(
                "top_logprobs must be at most {}, got {k}",
                crate::sampler::MAX_TOP_LOGPROBS
            )));
        }
        let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
            (true, k) => Some(k.unwrap_or(0) as usize),
            (false, None) => None,
            (false, Some(_)) => return Err(request_err("top_logprobs needs logprobs: true")),
        };
        let seed = req.seed.unwrap_or_else(|| (js_sys::Math::random() * 4294967296.0) as u64);
        // A chat request's unset fields take generation_config.json's values.
        let d = if chat { self.gen_defaults.clone() } else { GenerationDefaults::default() };
        let opts = GenerateOptions {
            max_new_tokens,
            sampling: SamplingParams {
                temperature: req.temperature.or(d.temperature).unwrap_or(if chat {
                    DEFAULT_CHAT_TEMPERATURE
                } else {
                    0.0
                }),
                top_k: req.top_k.or(d.top_k).unwrap_or(0) as usize,
                top_p: req.top_p.or(d.top_p).unwrap_or(1.0),
                repetition_penalty: req.repetition_penalty.or(d.repetition_penalty).unwrap_or(1.0),
                frequency_penalty: req.frequency_penalty.unwrap_or(0.0),
                presence_penalty: req.presence_penalty.unwrap_or(0.0),
                logit_bias,
                seed,
            },
            stop_ids: self.stop_ids(&req.stop_token_ids.unwrap_or_default(), chat, req.ignore_eos.unwrap_or(false)),
            logprobs,
        };
        Ok(Prepared { prompt, opts, reply, dropped_tokens, chat: chat_state })
    }
}

/// What [`Inner::prepare`] makes of a request.
struct Prepared {
    prompt: Vec<u32>,
    opts: GenerateOptions,
    reply: Option<ReplyOptions>,
    dropped_tokens: usize,
    chat: Option<ChatState>,
}

/// A chat request as the engine keeps it while its reply is generated: when the reply fills
/// the context, [`Engine::next`] makes a shorter prompt of it (older turns left out) and goes
/// on ([`continue_reply`]).
struct ChatState {
    messages: Vec<ChatMessage>,
    tools: Vec<serde_json::Value>,
    tool_choice: ToolChoice,
    enable_thinking: Option<bool>,
    max_new_tokens: usize,
}

/// generation_config.json's sampling values (`engine.info().generationDefaults`): what a chat
/// request that leaves a field out gets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenerationDefaults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
}

impl GenerationDefaults {
    /// The values of a generation_config.json text. `do_sample: false` means greedy
    /// (temperature 0); values of the wrong type or range are ignored (the request's own
    /// check still applies to what is used).
    fn from_json(json: &str) -> GenerationDefaults {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else { return GenerationDefaults::default() };
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).map(|x| x as f32).filter(|x| x.is_finite());
        let mut d = GenerationDefaults {
            temperature: f("temperature"),
            top_p: f("top_p"),
            top_k: v.get("top_k").and_then(|x| x.as_u64()).and_then(|x| u32::try_from(x).ok()),
            repetition_penalty: f("repetition_penalty"),
        };
        if v.get("do_sample").and_then(|x| x.as_bool()) == Some(false) {
            d.temperature = Some(0.0);
        }
        d
    }
}

/// The chat template: tokenizer_config.json's, else a GGUF file's, else ChatML (Qwen v1).
fn chat_template(
    config: Option<&str>,
    gguf: Option<&str>,
    tok: Option<&Tokenizer>,
    eos: &[u32],
) -> crate::error::Result<ChatTemplate> {
    if let Some(t) = config.map(ChatTemplate::from_tokenizer_config).transpose()?.flatten() {
        return Ok(t);
    }
    match gguf {
        Some(src) => {
            let eos_text = match (tok, eos.first()) {
                (Some(t), Some(&id)) => t.decode(&[id]).ok(),
                _ => None,
            };
            ChatTemplate::jinja(src, None, eos_text.as_deref())
        }
        None => Ok(ChatTemplate::chatml()),
    }
}

/// `max_tokens` when a request gives none.
const DEFAULT_MAX_TOKENS: u32 = 256;
/// `temperature` of a chat request that gives none (`generateIds`: 0, greedy).
const DEFAULT_CHAT_TEMPERATURE: f32 = 0.7;

/// One generation request, as `chat.completions.create` and `generateIds` take it (the
/// OpenAI names; other fields, such as `stream` or `signal`, are the JS layer's). Every
/// field is optional; a value of the wrong type or range is a `RequestError` naming it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `generateIds`: the prompt's token ids.
    pub prompt_ids: Option<Vec<u32>>,
    /// Chat: the conversation, made into the prompt by the checkpoint's chat template.
    pub messages: Option<Vec<WireMessage>>,
    /// Default 256.
    pub max_tokens: Option<u32>,
    /// An older name of `max_tokens`.
    pub max_new_tokens: Option<u32>,
    /// Default (chat): generation_config.json's, else 0.7; 0 (greedy) for ids.
    pub temperature: Option<f32>,
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// OpenAI's, on the tokens generated so far; -2..2, default 0.
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    /// `{"<token id>": bias}`, bias in -100..100, added to the logits.
    pub logit_bias: Option<BTreeMap<String, f32>>,
    /// Report each token's log-probability (and `top_logprobs` alternatives, 0..20).
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    /// Strings that end the reply (not included in it), matched across tokens.
    pub stop: Option<Stop>,
    /// OpenAI tool objects; the template lists them in the prompt.
    pub tools: Option<Vec<serde_json::Value>>,
    /// "auto" (default), "none", "required" or `{type: "function", function: {name}}`.
    pub tool_choice: Option<ToolChoice>,
    /// Qwen3's thinking switch (the template's `enable_thinking`).
    pub enable_thinking: Option<bool>,
    /// vLLM's way to pass it: `{enable_thinking}`.
    pub chat_template_kwargs: Option<TemplateKwargs>,
    /// OpenAI's model name: ignored (the engine runs one model).
    pub model: Option<serde_json::Value>,
    /// Default: random.
    pub seed: Option<u64>,
    /// Stop ids besides the model's.
    pub stop_token_ids: Option<Vec<u32>>,
    /// Stop only at `stop_token_ids`.
    pub ignore_eos: Option<bool>,
}

/// Every field [`Request`] reads; another is a RequestError naming it (serde-wasm-bindgen
/// reads a struct by its field names, so `deny_unknown_fields` never sees the others).
const REQUEST_FIELDS: &[&str] = &[
    "prompt_ids",
    "messages",
    "max_tokens",
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "stop",
    "tools",
    "tool_choice",
    "enable_thinking",
    "chat_template_kwargs",
    "model",
    "seed",
    "stop_token_ids",
    "ignore_eos",
];

/// A request naming a field we do not support is refused, not silently ignored.
fn check_request_keys(request: &JsValue) -> Result<(), JsValue> {
    let Some(obj) = request.dyn_ref::<js_sys::Object>() else { return Ok(()) };
    for k in js_sys::Object::keys(obj).iter().filter_map(|k| k.as_string()) {
        let value = js_sys::Reflect::get(obj, &JsValue::from_str(&k)).unwrap_or(JsValue::UNDEFINED);
        if !REQUEST_FIELDS.contains(&k.as_str()) && !value.is_undefined() {
            return Err(request_err(&format!(
                "{k}: this engine does not support the request field {k:?} (supported: {})",
                REQUEST_FIELDS.join(", ")
            )));
        }
    }
    Ok(())
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `chat_template_kwargs`: the template variables a request may set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateKwargs {
    pub enable_thinking: Option<bool>,
}

/// A chat message as the OpenAI API sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireMessage {
    pub role: Role,
    /// Text, parts, or null (an assistant message with only tool calls).
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl WireMessage {
    fn into_message(self) -> ChatMessage {
        ChatMessage {
            role: self.role,
            content: self.content.map(Content::text).unwrap_or_default(),
            reasoning_content: self.reasoning_content,
            tool_calls: self.tool_calls.unwrap_or_default(),
            tool_call_id: self.tool_call_id,
            name: self.name,
        }
    }
}

/// A message's content: text, or parts of which the `text` ones count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl Content {
    fn text(self) -> String {
        match self {
            Content::Text(t) => t,
            Content::Parts(p) => p.into_iter().filter(|p| p.kind == "text").filter_map(|p| p.text).collect(),
        }
    }
}

/// Token counts and timings of a generation (OpenAI's `usage`, with the timings WebLLM adds
/// both at the top and under `extra`).
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    #[serde(flatten)]
    pub timings: Timings,
    pub extra: Timings,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens found in the KV cache (not prefilled again).
    pub cached_tokens: usize,
    /// Tokens of the oldest turns left out of the prompt so that it fits the context (the
    /// most over the reply's prompts, when it went on past the end of the context).
    pub dropped_tokens: usize,
    /// Tokens the request prefilled: `prompt_tokens - cached_tokens`, plus what each
    /// continuation past the end of the context fed again (its shorter prompt and the reply
    /// so far, less what the cache still held). The cost of the request beyond decoding.
    pub prefilled_tokens: usize,
    /// How often the reply filled the context and went on with older turns left out.
    pub continuations: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    pub time_to_first_token_s: f64,
    /// Prompt tokens actually prefilled (cached ones excluded) per second.
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub e2e_latency_s: f64,
}

impl Run {
    fn seconds(&self) -> f64 {
        self.clock.as_ref().map(|c| c.seconds()).unwrap_or(0.0)
    }

    fn usage(&self, cached: usize) -> Usage {
        let t1 = self.end_s.unwrap_or_else(|| self.seconds());
        let first = self.first_s.unwrap_or(t1);
        let ttft = first;
        let decode_s = t1 - first;
        let n = self.completion_tokens;
        let timings = Timings {
            time_to_first_token_s: ttft,
            prefill_tokens_per_s: if ttft > 0.0 {
                self.prompt_tokens.saturating_sub(cached) as f64 / ttft
            } else {
                0.0
            },
            decode_tokens_per_s: if decode_s > 0.0 && n > 1 { (n - 1) as f64 / decode_s } else { 0.0 },
            e2e_latency_s: t1,
        };
        Usage {
            prompt_tokens: self.prompt_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: cached,
                dropped_tokens: self.dropped_tokens,
                prefilled_tokens: self.prefilled_tokens,
                continuations: self.continuations,
            },
            completion_tokens: n,
            total_tokens: self.prompt_tokens + n,
            extra: timings.clone(),
            timings,
        }
    }
}

/// What [`Engine::info`] says of a loaded model (the JS `engine.info()` adds `model` and
/// `adapter`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineInfo {
    /// KV cache length (the `context` load option, else [`ModelOptions::context_for`]).
    pub context: usize,
    /// Each layer's attention window in tokens (0: the layer sees its whole cache; all 0
    /// unless the `window` load option asked for windows).
    pub windows: Vec<usize>,
    pub vocab_size: usize,
    pub has_tokenizer: bool,
    /// The model's eos ids (config.json and generation_config.json).
    pub eos: Vec<u32>,
    /// The ids a chat request without `stop_token_ids` stops at.
    pub chat_stop_ids: Vec<u32>,
    /// The ids a `generateIds` request without `stop_token_ids` stops at.
    pub stop_ids: Vec<u32>,
    /// How matrices are stored on the GPU (`auto` resolved): `f16`, `q8`, `q4`, or `gguf`
    /// (a GGUF file's own types, listed in `weight_types`).
    pub weights: &'static str,
    /// A GGUF file's tensor types (`F32`, `Q4_0`, `Q6_K`...), sorted; empty for safetensors.
    pub weight_types: Vec<String>,
    pub kv_cache: &'static str,
    /// The chat template: [`CHATML`] (`default_system` is the system prompt added when a
    /// chat has none; `end_of_text_id` the stop id when nothing else names one).
    pub chat_format: ChatFormat,
    /// `jinja`: prompts are the checkpoint's own chat template; `chatml`: Qwen v1's ChatML
    /// (with its default system prompt, and ReAct for tools).
    pub chat_template: &'static str,
    /// generation_config.json's sampling values, used where a chat request gives none.
    pub generation_defaults: GenerationDefaults,
    /// Prompt tokens a chat with the default `max_tokens` may take ([`prompt_budget`]).
    pub chat_prompt_budget: usize,
    /// Bytes of the model's live GPU buffers (weights, activations, KV cache, readback),
    /// read from the device's ledger: exactly what the pre-download fit check estimated.
    pub gpu_bytes: u64,
    /// How many such buffers.
    pub gpu_buffers: usize,
}

/// [`Engine::reply_message`]'s shape.
#[derive(Serialize)]
struct AssistantMessage {
    role: &'static str,
    #[serde(flatten)]
    message: crate::tokenizer::ReplyMessage,
}

/// One entry of OpenAI's `logprobs.content` (and of its `top_logprobs`).
#[derive(Serialize)]
struct LogprobEntry {
    /// The token's text (lossy where it is part of a UTF-8 character; `bytes` are exact).
    token: String,
    logprob: f32,
    bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<Vec<LogprobEntry>>,
}

/// A loaded model, generating one token per [`Engine::next`].
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<RefCell<Inner>>,
}

#[wasm_bindgen]
impl Engine {
    /// Prefill the prompt of `request` ([`Request`]: `prompt_ids`, or with `chat` the
    /// `messages`, made into the ChatML prompt within [`prompt_budget`]) and prepare to
    /// generate. The longest prefix the prompt shares with what the KV cache holds (the last
    /// conversation) is not fed again ([`Engine::reused_tokens`] says how much). Resolves when
    /// prefill is done.
    pub fn start(&self, request: JsValue, chat: bool) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let clock = Stopwatch::start();
            check_request_keys(&request)?;
            let req: Request = from_js(request, "").map_err(js_err)?;
            let mut model = inner.borrow_mut().take_live_model()?;
            let prepared = inner.borrow().prepare(req, chat, model.context());
            // The reply parser checks `stop` before anything is prefilled.
            let prepared = prepared.and_then(|p| {
                let parser = match (&p.reply, inner.borrow().tok.as_ref()) {
                    (Some(o), Some(t)) => Some(ReplyParser::new(t, o.clone()).map_err(js_err)?),
                    _ => None,
                };
                Ok((p, parser))
            });
            let (Prepared { prompt, opts, dropped_tokens, chat: chat_state, .. }, parser) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    inner.borrow_mut().model = Some(model);
                    return Err(e);
                }
            };
            let mut cached = {
                let mut i = inner.borrow_mut();
                i.abort_requested = false;
                i.reused = 0;
                i.run = Run { prompt_tokens: prompt.len(), dropped_tokens, clock: Some(clock), ..Run::default() };
                i.reply = parser;
                i.chat = chat_state;
                i.out_of_room = false;
                i.stop_hit = false;
                i.logprobs_on = opts.logprobs.is_some();
                i.replies += 1;
                match i.gen.take() {
                    Some(g) => g.sequence().to_vec(),
                    None => std::mem::take(&mut i.cached),
                }
            };
            if cached.len() < model.pos() {
                // Never expected: forget the cache rather than trust it.
                model.reset();
                cached.clear();
            }
            cached.truncate(model.pos());
            // Text (chat) never picks an id the tokenizer cannot decode (a padding row of the
            // embedding); generateIds keeps the whole vocabulary, as the CLI's --print-ids does.
            let limit = if chat { inner.borrow().tok.as_ref().map(|t| t.vocab_size()) } else { None };
            let r = match (opts.sampling.validate(), model.set_token_limit(limit)) {
                (Ok(()), Ok(())) => Generator::start_reusing(&mut model, &cached, &prompt, opts).await,
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            let mut i = inner.borrow_mut();
            match r {
                Ok((g, reused)) => {
                    i.gen = Some(g);
                    i.reused = reused;
                    i.run.prefilled_tokens = prompt.len() - reused;
                    i.model = Some(model);
                    Ok(JsValue::UNDEFINED)
                }
                Err(e) => {
                    // A refused request leaves the cache as it was; a failed prefill may have
                    // written part of it: start over next time.
                    if matches!(e, crate::Error::Request(_)) && model.pos() == cached.len() {
                        i.cached = cached;
                    } else {
                        model.reset();
                    }
                    i.model = Some(model);
                    Err(i.or_lost(js_err(e)))
                }
            }
        })
    }

    /// The next token id, or `undefined` once generation has finished. A chat reply that
    /// fills the context before `max_tokens` goes on: the conversation's prompt is made again
    /// with more of the older turns left out ([`continue_prompt`]), the reply so far follows
    /// it, the cache keeps what it shares with that ([`Generator::resume`]), and decoding
    /// continues; the reply parser goes on as if nothing happened. Usage counts it
    /// (`continuations`, `prefilled_tokens`, `dropped_tokens`).
    pub fn next(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let (mut model, mut g) = {
                let mut i = inner.borrow_mut();
                let Some(g) = i.gen.take() else {
                    return Ok(JsValue::UNDEFINED);
                };
                match i.take_live_model() {
                    Ok(m) => (m, g),
                    Err(e) => {
                        i.gen = Some(g);
                        return Err(e);
                    }
                }
            };
            // A chat reply that filled the context goes on with older turns left out.
            let r = match continue_reply(&inner, &mut model, &mut g).await {
                Ok(()) => g.next(&mut model).await,
                Err(e) => Err(e),
            };
            let mut i = inner.borrow_mut();
            if i.abort_requested {
                g.abort();
            }
            let now = i.run.seconds();
            match r {
                Ok(t) => {
                    i.gen = Some(g);
                    i.model = Some(model);
                    match t {
                        Some(_) => {
                            i.run.first_s.get_or_insert(now);
                            i.run.completion_tokens += 1;
                        }
                        None => {
                            i.run.end_s.get_or_insert(now);
                        }
                    }
                    Ok(t.map(JsValue::from).unwrap_or(JsValue::UNDEFINED))
                }
                Err(e) => {
                    // What the cache holds is no longer known for sure.
                    model.reset();
                    i.model = Some(model);
                    Err(i.or_lost(js_err(e)))
                }
            }
        })
    }

    /// `{reason, message}` once the GPU device is lost (`reason`: `"destroyed"` or
    /// `"unknown"`, as `GPUDevice.lost`), else `undefined`. Cheap (the JS engine polls it).
    /// Known only while no call holds the model; a failed call returns it first.
    pub fn lost_info(&self) -> Result<JsValue, JsValue> {
        let mut i = self.inner.borrow_mut();
        if i.unloaded {
            return Ok(JsValue::UNDEFINED);
        }
        i.note_lost();
        match &i.lost {
            Some((reason, message)) => {
                let o = js_sys::Object::new();
                js_sys::Reflect::set(&o, &"reason".into(), &reason.as_str().into())?;
                js_sys::Reflect::set(&o, &"message".into(), &message.as_str().into())?;
                Ok(o.into())
            }
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// TEST ONLY: destroy the GPU device as a driver reset would lose it (the device-lost
    /// callback then fires with reason `Destroyed`). Works while a call is running.
    pub fn lose_device_for_test(&self) {
        self.inner.borrow().device.destroy();
    }

    /// Stop generating: the next [`Engine::next`] resolves to `undefined`.
    pub fn abort(&self) {
        let mut i = self.inner.borrow_mut();
        i.abort_requested = true;
        if let Some(g) = i.gen.as_mut() {
            g.abort();
        }
    }

    /// `"stop"`, `"length"`, `"context_full"`, `"abort"`, or `undefined` while generating. A
    /// chat reply that fills the context goes on (see [`Engine::next`]); one that cannot, as
    /// its own last message leaves no room, ends with `"length"`: only `generateIds` ends
    /// with `"context_full"`.
    pub fn finish_reason(&self) -> Option<String> {
        let i = self.inner.borrow();
        let base = i.gen.as_ref().and_then(|g| g.finish_reason()).map(|f| match f {
            _ if i.stop_hit => "stop",
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContextFull if i.out_of_room => "length",
            // Aborted as the context filled: the reply would have gone on.
            FinishReason::ContextFull if i.abort_requested && i.chat.is_some() => "abort",
            FinishReason::ContextFull => "context_full",
            FinishReason::Aborted => "abort",
        })?;
        Some(match &i.reply {
            Some(r) => r.finish_reason(base),
            None => base.to_string(),
        })
    }

    /// A chat reply's delta for generated token `id` (OpenAI's `choices[].delta`: `content`,
    /// `reasoning_content`, `tool_calls`), or `undefined` when nothing can be shown yet (text
    /// that may become a stop string, a tool call not yet complete). When a `stop` string
    /// completes, generation ends here: the next [`Engine::next`] resolves `undefined`.
    pub fn reply_push(&self, id: u32) -> Result<JsValue, JsValue> {
        let mut i = self.inner.borrow_mut();
        let Some(r) = i.reply.as_mut() else { return Ok(JsValue::UNDEFINED) };
        let d = r.push(id).map_err(js_err)?;
        if r.stopped() && !i.stop_hit {
            i.stop_hit = true;
            if let Some(g) = i.gen.as_mut() {
                g.abort();
            }
        }
        if d.is_empty() {
            Ok(JsValue::UNDEFINED)
        } else {
            to_js(&d)
        }
    }

    /// The reply's last delta once generation has ended (held-back text; a malformed or
    /// unfinished tool call as content), or `undefined`.
    pub fn reply_finish(&self) -> Result<JsValue, JsValue> {
        let mut i = self.inner.borrow_mut();
        let Some(r) = i.reply.as_mut() else { return Ok(JsValue::UNDEFINED) };
        let d = r.finish();
        if d.is_empty() {
            Ok(JsValue::UNDEFINED)
        } else {
            to_js(&d)
        }
    }

    /// The whole reply as an assistant message: `{role, content (null when empty),
    /// reasoning_content?, tool_calls?}`.
    pub fn reply_message(&self) -> Result<JsValue, JsValue> {
        let i = self.inner.borrow();
        let m = i.reply.as_ref().map(|r| r.message()).unwrap_or_default();
        to_js(&AssistantMessage { role: "assistant", message: m })
    }

    /// The log-probabilities of the token the last [`Engine::next`] returned, when the request
    /// asked for them: OpenAI's `logprobs.content[i]` entry `{token, logprob, bytes,
    /// top_logprobs: [{token, logprob, bytes}]}`; else `undefined`.
    pub fn logprobs(&self) -> Result<JsValue, JsValue> {
        let i = self.inner.borrow();
        let Some(lp) = i.gen.as_ref().and_then(|g| g.logprobs()).filter(|_| i.logprobs_on) else {
            return Ok(JsValue::UNDEFINED);
        };
        let entry = |id: u32, logprob: f32| {
            let bytes = i.tok.as_ref().and_then(|t| t.decode_bytes(&[id]).ok()).unwrap_or_default();
            LogprobEntry { token: String::from_utf8_lossy(&bytes).into_owned(), logprob, bytes, top_logprobs: None }
        };
        let mut e = entry(lp.token, lp.logprob);
        e.top_logprobs = Some(lp.top.iter().map(|&(id, l)| entry(id, l)).collect());
        to_js(&e)
    }

    /// Token counts and timings of the last generation ([`Usage`]).
    pub fn usage(&self) -> Result<JsValue, JsValue> {
        let i = self.inner.borrow();
        to_js(&i.run.usage(i.reused))
    }

    /// Forget the conversation (the next `start` begins at position 0).
    pub fn reset(&self) -> Result<(), JsValue> {
        let mut i = self.inner.borrow_mut();
        let mut m = i.take_model()?;
        m.reset();
        i.model = Some(m);
        i.gen = None;
        i.cached.clear();
        Ok(())
    }

    /// Prompt tokens the last `start` found in the KV cache and did not prefill again.
    pub fn reused_tokens(&self) -> u32 {
        self.inner.borrow().reused as u32
    }

    /// Tokens in the KV cache.
    pub fn pos(&self) -> u32 {
        self.inner.borrow().model.as_ref().map(|m| m.pos() as u32).unwrap_or(0)
    }

    /// The model, its formats and the chat rules in use ([`EngineInfo`]).
    pub fn info(&self) -> Result<JsValue, JsValue> {
        let i = self.inner.borrow();
        let context = i.context;
        to_js(&EngineInfo {
            context,
            windows: i.windows.clone(),
            vocab_size: i.vocab_size,
            has_tokenizer: i.tok.is_some(),
            eos: i.eos.clone(),
            chat_stop_ids: i.stop_ids(&[], true, false),
            stop_ids: i.stop_ids(&[], false, false),
            weights: i.formats.0,
            weight_types: i.weight_types.clone().unwrap_or_default(),
            kv_cache: i.formats.1,
            chat_format: CHATML,
            chat_template: if i.template.is_fallback() { "chatml" } else { "jinja" },
            generation_defaults: i.gen_defaults.clone(),
            chat_prompt_budget: prompt_budget(context, DEFAULT_MAX_TOKENS as usize),
            gpu_bytes: i.model.as_ref().map_or(0, |m| m.gpu.allocated_bytes()),
            gpu_buffers: i.model.as_ref().map_or(0, |m| m.gpu.allocated_buffers()),
        })
    }

    /// The adapter, in one line.
    pub fn describe(&self) -> String {
        self.inner.borrow().model.as_ref().map(|m| m.gpu.describe()).unwrap_or_default()
    }

    /// Drop the model and its GPU buffers now (the JS object stays, every later call fails).
    pub fn unload(&self) -> Result<(), JsValue> {
        let mut i = self.inner.borrow_mut();
        let m = i.take_model()?;
        i.unloaded = true;
        i.gen = None;
        m.gpu.device.destroy();
        drop(m);
        Ok(())
    }

    pub fn has_tokenizer(&self) -> bool {
        self.inner.borrow().tok.is_some()
    }

    /// Token ids of `text` (special-token strings stay plain text).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, JsValue> {
        let i = self.inner.borrow();
        i.tok("tokenize")?.encode(text).map_err(js_err)
    }

    pub fn decode(&self, ids: Vec<u32>) -> Result<String, JsValue> {
        let i = self.inner.borrow();
        i.tok("detokenize")?.decode(&ids).map_err(js_err)
    }

    /// What streaming `ids` would show: the text completed after each id ("" while a
    /// character is still incomplete), then the flushed tail.
    pub fn stream_chunks(&self, ids: Vec<u32>) -> Result<Vec<String>, JsValue> {
        let i = self.inner.borrow();
        let mut s = TextStream::new(i.tok("detokenize")?);
        let mut out = Vec::with_capacity(ids.len() + 1);
        for id in ids {
            out.push(s.push(id).map_err(js_err)?.unwrap_or_default());
        }
        out.push(s.finish().unwrap_or_default());
        Ok(out)
    }
}

/// Go on with a chat reply that filled the context ([`Engine::next`]): nothing unless the
/// current generation is a chat reply that ended with `ContextFull` before `max_tokens`, not
/// stopped by a stop string or an abort. When the conversation leaves no room even with every
/// older turn left out, the reply ends (`out_of_room`: finish reason `length`).
async fn continue_reply(inner: &Rc<RefCell<Inner>>, model: &mut Qwen, g: &mut Generator) -> crate::error::Result<()> {
    let p = {
        let i = inner.borrow();
        let (Some(c), Some(tok)) = (i.chat.as_ref(), i.tok.as_ref()) else { return Ok(()) };
        let n = g.tokens().len();
        if g.finish_reason() != Some(FinishReason::ContextFull)
            || i.stop_hit
            || i.abort_requested
            || i.out_of_room
            || n >= c.max_new_tokens
        {
            return Ok(());
        }
        let req = ChatRequest {
            messages: &c.messages,
            tools: &c.tools,
            enable_thinking: c.enable_thinking,
            tool_choice: c.tool_choice.clone(),
        };
        continue_prompt(tok, &i.template, &req, n, model.context(), c.max_new_tokens - n)?
    };
    let Some(p) = p else {
        inner.borrow_mut().out_of_room = true;
        return Ok(());
    };
    let keep = g.resume(model, &p.ids).await?;
    let mut i = inner.borrow_mut();
    i.run.continuations += 1;
    i.run.prefilled_tokens += (p.ids.len() + g.tokens().len()).saturating_sub(keep);
    i.run.dropped_tokens = i.run.dropped_tokens.max(p.dropped_tokens);
    Ok(())
}

impl Inner {
    /// The error [`Inner::take_model`] would give now.
    fn take_model_err(&self) -> JsValue {
        if self.unloaded {
            coded("RequestError", "engine_unloaded", "the engine was unloaded")
        } else {
            coded("RequestError", "engine_busy", "the engine is busy with another call (calls must not overlap)")
        }
    }
}

// ------------------------------------------------------------------ benchmark

/// Start `qwen-webgpu bench` in the browser on a synthesised Qwen-1.8B-shaped model.
/// `options`: [`SynthBench`] (`{}`: the CLI's defaults; snake_case, as the CLI's flags). Opens the GPU and
/// allocates every weight buffer; [`BenchSetup::step`] then makes and uploads the random
/// weights one tensor at a time (the same weights as the CLI's), and [`BenchSetup::run`]
/// measures.
#[wasm_bindgen]
pub async fn open_bench(options: JsValue) -> Result<BenchSetup, JsValue> {
    let spec = bench_options(options)?;
    let cfg = spec.config();
    let opts = spec.model_options(None).map_err(js_err)?;
    let gpu = Gpu::new(&GpuOptions { max_binding_bytes: spec.max_binding_bytes, ..Default::default() })
        .await
        .map_err(js_err_gpu("gpu_unavailable"))?;
    let adapter = gpu.describe();
    let src = RandomSource::new(&cfg, 1);
    let uploader = Uploader::new(gpu, &cfg, src.tensors(), opts.weights).map_err(js_err_gpu("gpu_out_of_memory"))?;
    // Any order makes the same weights (each tensor's values depend on the seed and its name
    // alone); this is the CLI loader's order.
    let mut todo: Vec<String> = uploader.wanted().into_iter().map(|(n, _)| n).collect();
    todo.reverse();
    Ok(BenchSetup { spec, cfg, opts, src, uploader: Some(uploader), todo, adapter })
}

/// [`SynthBench`] from a JS object, checked as the CLI checks its flags.
fn bench_options(options: JsValue) -> Result<SynthBench, JsValue> {
    let spec: SynthBench = if options.is_undefined() || options.is_null() {
        SynthBench::default()
    } else {
        from_js(options, "benchmark option ").map_err(js_err)?
    };
    spec.check().map_err(js_err)?;
    Ok(spec)
}

/// A synthesised model on its way to the GPU, then benchmarked (see [`open_bench`]).
#[wasm_bindgen]
pub struct BenchSetup {
    spec: SynthBench,
    cfg: QwenConfig,
    opts: ModelOptions,
    src: RandomSource,
    uploader: Option<Uploader>,
    /// Tensors still to make, last first.
    todo: Vec<String>,
    adapter: String,
}

#[wasm_bindgen]
impl BenchSetup {
    /// The adapter, in one line (wgpu's view of it).
    pub fn describe(&self) -> String {
        self.adapter.clone()
    }

    /// The model's label in the report.
    pub fn model(&self) -> String {
        SynthBench::model_name(&self.cfg)
    }

    /// The KV cache length the measurements use.
    pub fn context(&self) -> u32 {
        self.opts.context_for(&self.cfg) as u32
    }

    /// Make the next tensor's random bf16 bytes and upload them; `false` once every tensor is
    /// on the GPU. Call it in a loop, yielding to the event loop in between.
    pub fn step(&mut self) -> Result<bool, JsValue> {
        let up = self.uploader.as_mut().ok_or_else(|| request_err("the benchmark already ran"))?;
        let Some(name) = self.todo.pop() else {
            return Ok(false);
        };
        let bytes = self.src.read(&name).map_err(js_err)?;
        up.put(&name, &bytes).map_err(js_err)?;
        Ok(!self.todo.is_empty())
    }

    /// `[checkpoint bytes made, bytes total]` (bf16, before the GPU format).
    pub fn progress(&self) -> Vec<f64> {
        self.uploader.as_ref().map(|u| u.progress()).map(|(a, b)| vec![a as f64, b as f64]).unwrap_or(vec![0.0, 0.0])
    }

    /// Measure (after every [`BenchSetup::step`]); resolves to the report
    /// ([`bench::BenchReport`], the fields of `qwen-webgpu bench --json`). `on_progress(label)` is called before each
    /// measurement. The GPU device is destroyed afterwards.
    pub fn run(self, on_progress: Option<js_sys::Function>) -> Promise {
        future_to_promise(async move {
            let up = self.uploader.ok_or_else(|| request_err("the benchmark already ran"))?;
            if !self.todo.is_empty() {
                return Err(request_err(&format!("{} tensor(s) still to make: call step() first", self.todo.len())));
            }
            let (gpu, weights) = up.finish_async().await.map_err(js_err)?;
            let name = SynthBench::model_name(&self.cfg);
            let mut model =
                Qwen::from_weights(gpu, self.cfg, weights, &self.opts).map_err(js_err_gpu("gpu_out_of_memory"))?;
            let r = bench_report(&mut model, &name, &self.spec.bench_options(), on_progress).await;
            model.gpu.device.destroy();
            r
        })
    }
}

async fn bench_report(
    model: &mut Qwen,
    name: &str,
    opts: &bench::BenchOptions,
    on_progress: Option<js_sys::Function>,
) -> Result<JsValue, JsValue> {
    let mut progress = |label: &str| {
        if let Some(f) = &on_progress {
            // A throwing callback must not stop the benchmark.
            let _ = f.call1(&JsValue::NULL, &JsValue::from_str(label));
        }
    };
    let report = bench::run_with_progress(model, name, opts, &mut progress).await.map_err(js_err)?;
    to_js(&report)
}

#[wasm_bindgen]
impl Engine {
    /// Benchmark this model as `qwen-webgpu bench --model` does; resolves to the report
    /// ([`bench::BenchReport`]). `options` ([`SynthBench`]) may set `prefill`, `decode_at` and
    /// `decode_tokens` (the model is already loaded, so nothing else); lengths that do not fit
    /// its context are skipped. Forgets the conversation (the KV cache is overwritten).
    pub fn bench(&self, options: JsValue, label: String, on_progress: Option<js_sys::Function>) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let spec = bench_options(options)?;
            let d = SynthBench::default();
            if spec.layers.is_some()
                || spec.vocab.is_some()
                || spec.context.is_some()
                || spec.max_binding_bytes.is_some()
                || spec.weights != d.weights
                || spec.kv_cache != d.kv_cache
                || spec.max_batch != d.max_batch
            {
                return Err(request_err(
                    "a loaded model is benchmarked as loaded: only prefill, decode_at and decode_tokens apply",
                ));
            }
            let mut model = inner.borrow_mut().take_model()?;
            inner.borrow_mut().gen = None;
            inner.borrow_mut().cached.clear();
            let r = bench_report(&mut model, &label, &spec.bench_options(), on_progress).await;
            model.reset();
            inner.borrow_mut().model = Some(model);
            r
        })
    }
}

// ------------------------------------------------------------------ the model store (export)

/// The store's version (`"layout.encoder"`, [`model::export::store_version`]): part of every
/// stored model's key in js/store.js, so models made by another encoder are never reused.
#[wasm_bindgen]
pub fn store_version() -> String {
    model::export::store_version()
}

/// One tensor of [`Engine::export_plan`], and the pieces it is read in.
#[derive(Debug, Clone, Serialize)]
pub struct ExportEntry {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file (header included).
    pub start: u64,
    pub end: u64,
}

/// A block of rows of one tensor: [`Engine::export_read`]`(name, row0, rows)` gives its bytes,
/// which go at `start` in the file.
#[derive(Debug, Clone, Serialize)]
pub struct ExportPiece {
    pub name: String,
    pub row0: usize,
    pub rows: usize,
    pub start: u64,
    pub bytes: u64,
}

/// [`Engine::export_plan`]'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct ExportPlan {
    /// How matrices are stored: `q4`, `q8` (a pre-quantized folder) or `f16` (a plain one).
    pub format: &'static str,
    /// [`store_version`].
    pub version: String,
    /// Bytes of the header (the file's first bytes, [`Engine::export_header`]).
    pub header_bytes: u64,
    /// Bytes of the whole file.
    pub file_bytes: u64,
    pub tensors: Vec<ExportEntry>,
    /// Every tensor's rows in blocks of at most `max_piece_bytes` (one row at least), in file order.
    pub pieces: Vec<ExportPiece>,
}

/// The error of an export of a model loaded from a GGUF file (the model store keeps
/// safetensors folders only; its matrices may hold GGUF block types the folder format lacks).
fn gguf_not_exported() -> JsValue {
    coded(
        "WeightsError",
        "weights_format",
        "a model loaded from a GGUF file is not exported: the model store keeps safetensors checkpoints only",
    )
}

impl Inner {
    /// The loaded model's checkpoint layout ([`model::export::Export`]).
    fn export(&self) -> Result<(model::export::Export, WeightFormat), JsValue> {
        let model = self.model.as_ref().ok_or_else(|| self.take_model_err())?;
        if self.weight_types.is_some() {
            return Err(gguf_not_exported());
        }
        let format = WeightFormat::parse(self.formats.0).map_err(js_err)?;
        Ok((model::export::Export::plan(&model.config, format).map_err(js_err)?, format))
    }
}

#[wasm_bindgen]
impl Engine {
    /// What the GPU holds, as a checkpoint file: a pre-quantized safetensors file (`qwen-webgpu
    /// quantize`'s format) for q4/q8, a plain f16 one for f16. Returns [`ExportPlan`]: the
    /// tensors and the pieces (blocks of rows of at most `max_piece_bytes`) to read with
    /// [`Engine::export_read`] and write at their offsets after [`Engine::export_header`].
    pub fn export_plan(&self, max_piece_bytes: f64) -> Result<JsValue, JsValue> {
        let i = self.inner.borrow();
        let (e, format) = i.export()?;
        let max_piece =
            if max_piece_bytes.is_finite() && max_piece_bytes >= 1.0 { max_piece_bytes as u64 } else { 1 << 23 };
        let head = e.header.len() as u64;
        let mut pieces = Vec::new();
        for t in &e.tensors {
            let (rows, row_bytes) = (t.rows(), t.row_bytes());
            let per = (max_piece / row_bytes.max(1)).max(1) as usize;
            let mut r = 0;
            while r < rows {
                let n = per.min(rows - r);
                pieces.push(ExportPiece {
                    name: t.name.clone(),
                    row0: r,
                    rows: n,
                    start: head + t.offset + r as u64 * row_bytes,
                    bytes: n as u64 * row_bytes,
                });
                r += n;
            }
        }
        to_js(&ExportPlan {
            format: format.name(),
            version: model::export::store_version(),
            header_bytes: head,
            file_bytes: e.file_bytes(),
            tensors: e
                .tensors
                .iter()
                .map(|t| ExportEntry {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    start: head + t.offset,
                    end: head + t.offset + t.bytes,
                })
                .collect(),
            pieces,
        })
    }

    /// The exported file's header: the 8-byte length and the JSON (see [`Engine::export_plan`]).
    pub fn export_header(&self) -> Result<Vec<u8>, JsValue> {
        Ok(self.inner.borrow().export()?.0.header)
    }

    /// Rows `row0..row0 + rows` of the exported tensor `name`, read back from the GPU
    /// (resolves to a `Uint8Array`). A vector is one row. Like every GPU call, not while
    /// another runs (`engine_busy`), and `gpu_lost` once the device is lost.
    pub fn export_read(&self, name: String, row0: u32, rows: u32) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            if inner.borrow().weight_types.is_some() {
                return Err(gguf_not_exported());
            }
            let format = WeightFormat::parse(inner.borrow().formats.0).map_err(js_err)?;
            let model = inner.borrow_mut().take_live_model()?;
            let r = model::export::read_rows(&model, format, &name, row0 as usize, rows as usize).await;
            let mut i = inner.borrow_mut();
            i.model = Some(model);
            match r {
                Ok(bytes) => Ok(js_sys::Uint8Array::from(&bytes[..]).into()),
                Err(e) => Err(i.or_lost(js_err(e))),
            }
        })
    }
}
