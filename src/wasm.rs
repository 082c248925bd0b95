//! The browser boundary: the only Rust that knows JavaScript.
//!
//! Two classes, driven by the hand-written JS layer (`js/`), which owns fetching, caching,
//! the Web Worker and the OpenAI-shaped API:
//! - [`Loader`]: config → GPU + fit check → safetensors headers → the tensor plan → one
//!   tensor's bytes at a time ([`Uploader::put`]) → [`Engine`]. The JS side never hands over
//!   more than one tensor, so wasm memory never holds the model.
//! - [`Engine`]: step-wise generation ([`Generator`]) from token ids, plus the tokenizer,
//!   the ChatML prompt and the UTF-8-safe [`TextStream`].
//!
//! Every failure reaches JS as an `Error` whose `name` is one of `ConfigError`,
//! `WeightsError`, `TokenizerError`, `GpuError`, `RequestError` (the JS layer adds
//! `NetworkError` and `AbortError`). Nothing here panics on input; a panic hook logs anyway.

use crate::bench::{self, RandomSource, SynthBench};
use crate::config::QwenConfig;
use crate::error::Error;
use crate::generate::{FinishReason, GenerateOptions, Generator};
use crate::gpu::{Gpu, GpuOptions};
use crate::model::weights::Uploader;
use crate::model::{self, ModelOptions, Qwen, RunState};
use crate::ops::KvFormat;
use crate::sampler::SamplingParams;
use crate::tokenizer::{chat_prompt_ids, ChatMessage, Role, TextStream, Tokenizer};
use crate::weights::quant::{self, WeightFormat};
use crate::weights::{safetensors, TensorInfo, TensorSource};
use js_sys::{Array, Promise};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// A JS `Error` with a `name`.
fn named(name: &str, msg: &str) -> JsValue {
    let e = js_sys::Error::new(msg);
    e.set_name(name);
    e.into()
}

fn js_err(e: Error) -> JsValue {
    let name = match &e {
        Error::Config(_) => "ConfigError",
        Error::Io { .. } | Error::Weights(_) => "WeightsError",
        Error::Tokenizer(_) => "TokenizerError",
        Error::Gpu(_) | Error::Shader { .. } => "GpuError",
        Error::Request(_) | Error::ContextFull(_) => "RequestError",
    };
    named(name, &e.to_string())
}

fn request_err(msg: &str) -> JsValue {
    named("RequestError", msg)
}

/// Length of a safetensors JSON header from the file's first 8 bytes.
#[wasm_bindgen]
pub fn safetensors_header_len(prefix: &[u8], file_len: f64, label: &str) -> Result<f64, JsValue> {
    safetensors::header_len(prefix, file_len as u64, label).map(|n| n as f64).map_err(js_err)
}

/// The format a checkpoint shard's header says it is pre-quantized to (`q4`, `q8`), or `""`
/// for a plain checkpoint; a format this build does not know is a `WeightsError`.
#[wasm_bindgen]
pub fn safetensors_weight_format(header_json: &[u8], file_len: f64, label: &str) -> Result<String, JsValue> {
    let h = safetensors::parse_header_full(header_json, file_len as u64, label).map_err(js_err)?;
    Ok(quant::stored_format(&h.metadata).map_err(js_err)?.map(|f| f.name().to_string()).unwrap_or_default())
}

/// Open the GPU for a model and check that it fits before anything is downloaded.
/// `context` 0: the model's own (at most 4096); `max_binding_bytes` 0: the adapter's limit;
/// `max_gpu_bytes` 0: no memory budget (browsers do not report GPU memory);
/// `weight_format`: how matrices are stored on the GPU, `f16`, `q8` or `q4` (empty or `auto`:
/// the checkpoint's own format if pre-quantized, else f16); `stored_format`: what
/// [`safetensors_weight_format`] said of the first shard (empty: plain);
/// `kv_format`: how the KV cache stores keys and values, `f32`, `f16` or `q8` (empty: f32).
#[allow(clippy::too_many_arguments)]
#[wasm_bindgen]
pub async fn open_loader(
    config_json: String,
    context: u32,
    max_batch: u32,
    max_binding_bytes: f64,
    max_gpu_bytes: f64,
    weight_format: String,
    kv_format: String,
    stored_format: String,
) -> Result<Loader, JsValue> {
    let cfg = QwenConfig::from_json(&config_json).map_err(js_err)?;
    let requested = WeightFormat::parse_request(&weight_format).map_err(js_err)?;
    let stored =
        if stored_format.is_empty() { None } else { Some(WeightFormat::parse(&stored_format).map_err(js_err)?) };
    let weights = quant::resolve_format(requested, stored).map_err(js_err)?;
    let opts = ModelOptions {
        context: (context > 0).then_some(context as usize),
        max_batch: if max_batch > 0 { max_batch as usize } else { ModelOptions::default().max_batch },
        weights,
        kv: if kv_format.is_empty() { KvFormat::F32 } else { KvFormat::parse(&kv_format).map_err(js_err)? },
    };
    let gpu_opts = GpuOptions {
        max_binding_bytes: (max_binding_bytes > 0.0).then_some(max_binding_bytes as u64),
        ..Default::default()
    };
    let gpu = Gpu::new(&gpu_opts).await.map_err(js_err)?;
    let (weights, state) = model::gpu_bytes(&cfg, &opts);
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    if max_gpu_bytes > 0.0 && (weights + state) as f64 > max_gpu_bytes {
        return Err(js_err(Error::Gpu(format!(
            "the model needs {:.1} MiB of GPU memory (weights {:.1} MiB {}, KV cache and activations {:.1} MiB), \
             more than the budget of {:.1} MiB: pick a smaller model or a shorter context",
            mib(weights + state),
            mib(weights),
            opts.weights.name(),
            mib(state),
            max_gpu_bytes / (1u64 << 20) as f64
        ))));
    }
    // The largest single buffers: one row of the embedding must fit a binding (the matrices
    // split by rows), and the run state is allocated once as a trial.
    let cols = cfg.hidden_size.max(cfg.intermediate_size);
    let row = opts.weights.for_cols(cols).row_bytes(cols);
    if row > gpu.max_binding {
        return Err(js_err(Error::Gpu(format!(
            "a weight row needs {row} bytes, above this GPU's storage binding limit of {} bytes",
            gpu.max_binding
        ))));
    }
    let ctx = opts.context_for(&cfg);
    RunState::new(&gpu, &cfg, opts.max_batch.min(ctx), ctx, opts.kv)
        .map_err(|e| js_err(Error::Gpu(format!("the model does not fit this GPU ({}): {e}", gpu.describe()))))?;
    gpu.check().map_err(js_err)?;
    Ok(Loader {
        cfg,
        opts,
        gpu: Some(gpu),
        tensors: BTreeMap::new(),
        metadata: BTreeMap::new(),
        owner: BTreeMap::new(),
        shards: 0,
        uploader: None,
        needs: (weights, state),
    })
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
}

#[wasm_bindgen]
impl Loader {
    /// How matrices will be stored on the GPU (`auto` resolved): `f16`, `q8` or `q4`.
    pub fn weight_format(&self) -> String {
        self.opts.weights.name().to_string()
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

    /// Add one shard's header (the JSON after the 8-byte prefix); returns its shard index.
    pub fn add_shard(&mut self, label: &str, header_json: &[u8], file_len: f64) -> Result<u32, JsValue> {
        if self.uploader.is_some() {
            return Err(request_err("add_shard after plan()"));
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
    /// tensors to upload as `[name, shard, start, end]`, in file order.
    pub fn plan(&mut self) -> Result<Array, JsValue> {
        if self.uploader.is_none() {
            let gpu = self.gpu.take().ok_or_else(|| request_err("loader already used"))?;
            let up = Uploader::with_metadata(gpu, &self.cfg, &self.tensors, &self.metadata, self.opts.weights);
            self.uploader = Some(up.map_err(js_err)?);
        }
        let up = self.uploader.as_ref().ok_or_else(|| request_err("no uploader"))?;
        let mut wanted: Vec<(u32, TensorInfo, String)> =
            up.wanted().into_iter().map(|(n, t)| (self.owner.get(&n).copied().unwrap_or(0), t, n)).collect();
        wanted.sort_by_key(|(s, t, _)| (*s, t.start));
        let out = Array::new();
        for (shard, t, name) in wanted {
            let row = Array::new();
            row.push(&JsValue::from_str(&name));
            row.push(&JsValue::from(shard));
            row.push(&JsValue::from(t.start as f64));
            row.push(&JsValue::from(t.end as f64));
            out.push(&row);
        }
        Ok(out)
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
    /// `tokenizer`: the bytes of tokenizer.json or qwen.tiktoken, if any.
    pub fn finish(self, tokenizer: Option<Vec<u8>>) -> Result<Engine, JsValue> {
        let tok = match tokenizer {
            Some(b) => {
                let t = Tokenizer::from_bytes(&b).map_err(js_err)?;
                t.check_fits(self.cfg.vocab_size).map_err(js_err)?;
                Some(t)
            }
            None => None,
        };
        let up = self.uploader.ok_or_else(|| request_err("finish before plan()"))?;
        let (gpu, weights) = up.finish().map_err(js_err)?;
        let model = Qwen::from_weights(gpu, self.cfg, weights, &self.opts).map_err(js_err)?;
        let stream = tok.as_ref().map(TextStream::new);
        Ok(Engine {
            inner: Rc::new(RefCell::new(Inner {
                model: Some(model),
                gen: None,
                tok,
                stream,
                unloaded: false,
                abort_requested: false,
                cached: Vec::new(),
                reused: 0,
            })),
        })
    }
}

struct Inner {
    /// `None` while a call holds it (busy) or after unload.
    model: Option<Qwen>,
    gen: Option<Generator>,
    tok: Option<Tokenizer>,
    stream: Option<TextStream>,
    unloaded: bool,
    abort_requested: bool,
    /// The ids the KV cache holds while no generation does (a generation's own are its
    /// [`Generator::sequence`]).
    cached: Vec<u32>,
    /// Prompt tokens the last `start` found in the cache and did not feed again.
    reused: usize,
}

impl Inner {
    fn take_model(&mut self) -> Result<Qwen, JsValue> {
        match self.model.take() {
            Some(m) => Ok(m),
            None if self.unloaded => Err(request_err("the engine was unloaded")),
            None => Err(request_err("the engine is busy with another call (calls must not overlap)")),
        }
    }
    fn tok(&self) -> Result<&Tokenizer, JsValue> {
        self.tok.as_ref().ok_or_else(|| {
            named("TokenizerError", "this model was loaded without a tokenizer (tokenizer.json or qwen.tiktoken)")
        })
    }
}

/// A loaded model, generating one token per [`Engine::next`].
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<RefCell<Inner>>,
}

#[wasm_bindgen]
impl Engine {
    /// Prefill `prompt` and prepare to generate. The longest prefix `prompt` shares with what
    /// the KV cache holds (the last conversation) is not fed again ([`Engine::reused_tokens`]
    /// says how much); `keep_cache`: append `prompt` to what the cache holds instead. Resolves
    /// when prefill is done.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        prompt: Vec<u32>,
        keep_cache: bool,
        max_tokens: u32,
        temperature: f32,
        top_k: u32,
        top_p: f32,
        repetition_penalty: f32,
        seed: f64,
        stop_ids: Vec<u32>,
    ) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let mut model = inner.borrow_mut().take_model()?;
            let mut cached = {
                let mut i = inner.borrow_mut();
                i.abort_requested = false;
                i.reused = 0;
                if let Some(s) = i.stream.as_mut() {
                    s.reset();
                }
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
            let prompt = if keep_cache { [cached.as_slice(), &prompt].concat() } else { prompt };
            let opts = GenerateOptions {
                max_new_tokens: max_tokens as usize,
                sampling: SamplingParams {
                    temperature,
                    top_k: top_k as usize,
                    top_p,
                    repetition_penalty,
                    seed: seed as u64,
                },
                stop_ids,
            };
            let r = match opts.sampling.validate() {
                Ok(()) => Generator::start_reusing(&mut model, &cached, &prompt, opts).await,
                Err(e) => Err(e),
            };
            let mut i = inner.borrow_mut();
            match r {
                Ok((g, reused)) => {
                    i.gen = Some(g);
                    i.reused = reused;
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
                    Err(js_err(e))
                }
            }
        })
    }

    /// The next token id, or `undefined` once generation has finished.
    pub fn next(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let (mut model, mut g) = {
                let mut i = inner.borrow_mut();
                let Some(g) = i.gen.take() else {
                    return Ok(JsValue::UNDEFINED);
                };
                match i.take_model() {
                    Ok(m) => (m, g),
                    Err(e) => {
                        i.gen = Some(g);
                        return Err(e);
                    }
                }
            };
            let r = g.next(&mut model).await;
            let mut i = inner.borrow_mut();
            if i.abort_requested {
                g.abort();
            }
            match r {
                Ok(t) => {
                    i.gen = Some(g);
                    i.model = Some(model);
                    Ok(t.map(JsValue::from).unwrap_or(JsValue::UNDEFINED))
                }
                Err(e) => {
                    // What the cache holds is no longer known for sure.
                    model.reset();
                    i.model = Some(model);
                    Err(js_err(e))
                }
            }
        })
    }

    /// Stop generating: the next [`Engine::next`] resolves to `undefined`.
    pub fn abort(&self) {
        let mut i = self.inner.borrow_mut();
        i.abort_requested = true;
        if let Some(g) = i.gen.as_mut() {
            g.abort();
        }
    }

    /// `"stop"`, `"length"`, `"context_full"`, `"abort"`, or `undefined` while generating.
    pub fn finish_reason(&self) -> Option<String> {
        let i = self.inner.borrow();
        i.gen.as_ref().and_then(|g| g.finish_reason()).map(|f| {
            match f {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
                FinishReason::ContextFull => "context_full",
                FinishReason::Aborted => "abort",
            }
            .to_string()
        })
    }

    /// Forget the conversation (the next `start` begins at position 0 either way unless
    /// `keep_cache`).
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

    /// KV cache length.
    pub fn context(&self) -> u32 {
        self.inner.borrow().model.as_ref().map(|m| m.context() as u32).unwrap_or(0)
    }

    pub fn vocab_size(&self) -> u32 {
        self.inner.borrow().model.as_ref().map(|m| m.config.vocab_size as u32).unwrap_or(0)
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

    /// The ChatML prompt for `roles[i]`/`contents[i]` (`system`, `user`, `assistant`).
    pub fn chat_prompt(
        &self,
        roles: Vec<String>,
        contents: Vec<String>,
        max_prompt_tokens: u32,
    ) -> Result<Vec<u32>, JsValue> {
        if roles.len() != contents.len() {
            return Err(request_err("roles and contents differ in length"));
        }
        let mut msgs = Vec::with_capacity(roles.len());
        for (r, c) in roles.into_iter().zip(contents) {
            let role = match r.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(request_err(&format!(
                        "message role {other:?} is not supported (use system, user or assistant)"
                    )))
                }
            };
            msgs.push(ChatMessage::new(role, c));
        }
        let i = self.inner.borrow();
        chat_prompt_ids(i.tok()?, &msgs, max_prompt_tokens as usize).map_err(js_err)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, JsValue> {
        let i = self.inner.borrow();
        i.tok()?.encode(text).map_err(js_err)
    }

    pub fn decode(&self, ids: Vec<u32>) -> Result<String, JsValue> {
        let i = self.inner.borrow();
        i.tok()?.decode(&ids).map_err(js_err)
    }

    /// Ids of `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (empty without a tokenizer).
    pub fn stop_ids(&self) -> Vec<u32> {
        self.inner.borrow().tok.as_ref().map(|t| t.stop_ids()).unwrap_or_default()
    }

    /// Whether `id` is a special token (not shown as text).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner.borrow().tok.as_ref().map(|t| t.is_special(id)).unwrap_or(false)
    }

    /// Feed one generated id to the text stream; returns the text now complete, if any.
    pub fn stream_push(&self, id: u32) -> Result<Option<String>, JsValue> {
        let mut i = self.inner.borrow_mut();
        let s =
            i.stream.as_mut().ok_or_else(|| named("TokenizerError", "this model was loaded without a tokenizer"))?;
        s.push(id).map_err(js_err)
    }

    /// What streaming `ids` would show: the text completed after each id ("" while a
    /// character is still incomplete), then the flushed tail.
    pub fn stream_chunks(&self, ids: Vec<u32>) -> Result<Vec<String>, JsValue> {
        let i = self.inner.borrow();
        let mut s = TextStream::new(i.tok()?);
        let mut out = Vec::with_capacity(ids.len() + 1);
        for id in ids {
            out.push(s.push(id).map_err(js_err)?.unwrap_or_default());
        }
        out.push(s.finish().unwrap_or_default());
        Ok(out)
    }

    /// Flush the text stream (an unfinished character becomes U+FFFD).
    pub fn stream_finish(&self) -> Option<String> {
        self.inner.borrow_mut().stream.as_mut().and_then(|s| s.finish())
    }
}

// ------------------------------------------------------------------ benchmark

/// Start `qwen-webgpu bench` in the browser on a synthesised Qwen-1.8B-shaped model.
/// `options_json`: [`SynthBench`] as JSON (`"{}"`: the CLI's defaults). Opens the GPU and
/// allocates every weight buffer; [`BenchSetup::step`] then makes and uploads the random
/// weights one tensor at a time (the same weights as the CLI's), and [`BenchSetup::run`]
/// measures.
#[wasm_bindgen]
pub async fn open_bench(options_json: String) -> Result<BenchSetup, JsValue> {
    let spec = SynthBench::from_json(&options_json).map_err(js_err)?;
    let cfg = spec.config();
    let opts = spec.model_options(None).map_err(js_err)?;
    let gpu = Gpu::new(&GpuOptions { max_binding_bytes: spec.max_binding_bytes, ..Default::default() })
        .await
        .map_err(js_err)?;
    let adapter = gpu.describe();
    let src = RandomSource::new(&cfg, 1);
    let uploader = Uploader::new(gpu, &cfg, src.tensors(), opts.weights).map_err(js_err)?;
    // Upload order, as the CLI's loader (`weights::load`): what makes the weights the same.
    let mut todo: Vec<String> = uploader.wanted().into_iter().map(|(n, _)| n).collect();
    todo.reverse();
    Ok(BenchSetup { spec, cfg, opts, src, uploader: Some(uploader), todo, adapter })
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

    /// Measure (after every [`BenchSetup::step`]); resolves to the report as JSON, the same
    /// fields as `qwen-webgpu bench --json`. `on_progress(label)` is called before each
    /// measurement. The GPU device is destroyed afterwards.
    pub fn run(self, on_progress: Option<js_sys::Function>) -> Promise {
        future_to_promise(async move {
            let up = self.uploader.ok_or_else(|| request_err("the benchmark already ran"))?;
            if !self.todo.is_empty() {
                return Err(request_err(&format!("{} tensor(s) still to make: call step() first", self.todo.len())));
            }
            let (gpu, weights) = up.finish().map_err(js_err)?;
            let name = SynthBench::model_name(&self.cfg);
            let mut model = Qwen::from_weights(gpu, self.cfg, weights, &self.opts).map_err(js_err)?;
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
    let json = serde_json::to_string(&report).map_err(|e| js_err(Error::Request(e.to_string())))?;
    Ok(JsValue::from_str(&json))
}

#[wasm_bindgen]
impl Engine {
    /// Benchmark this model as `qwen-webgpu bench --model` does; resolves to the report as
    /// JSON. `options_json` may set `prefill`, `decode_at` and `decode_tokens` (the model is
    /// already loaded, so nothing else); lengths that do not fit its context are skipped.
    /// Forgets the conversation (the KV cache is overwritten).
    pub fn bench(&self, options_json: String, label: String, on_progress: Option<js_sys::Function>) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let spec = SynthBench::from_json(&options_json).map_err(js_err)?;
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
