//! `qwen-webgpu bench`: prefill and decode speed, memory, dispatches and the decode roofline
//! fraction, on any model folder or on a Qwen-1.8B-shaped checkpoint synthesised on the fly
//! (random weights, nothing downloaded). Runs natively (the CLI) and in the browser
//! (`src/wasm.rs`, `www/bench.html`): the only platform-specific part is the clock.
//!
//! Decoding at a long cache does not prefill it first: the cache is taken as holding that many
//! tokens ([`Qwen::assume_cached`]), so a 32K-token decode costs one token's pass to set up
//! instead of a 32K prefill. Its keys are not a real sequence's (zeros, or an earlier
//! measurement's), which changes no kernel's work. Prefill is timed on real prompts.

use crate::config::{Family, QwenConfig};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::model::{ModelOptions, Output, Qwen, Want};
use crate::ops::{self, KvFormat};
use crate::sampler::SamplingParams;
use crate::weights::quant::WeightFormat;
use crate::weights::{Dtype, TensorInfo, TensorSource};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::clock::Stopwatch;

/// Qwen-1.8B's config.json (QWEN.md), optionally with fewer layers.
pub fn qwen_1_8b(layers: Option<usize>) -> QwenConfig {
    QwenConfig {
        family: Family::QwenV1,
        hidden_size: 2048,
        num_hidden_layers: layers.unwrap_or(24),
        num_attention_heads: 16,
        num_key_value_heads: 16,
        head_dim: 128,
        intermediate_size: 5504,
        vocab_size: 151936,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: false,
        attention_bias: true,
        qk_norm: false,
        max_position_embeddings: 8192,
        seq_length: 8192,
        use_dynamic_ntk: true,
        use_logn_attn: true,
    }
}

/// A benchmark of the synthesised Qwen-1.8B shape, with the `qwen-webgpu bench` flags
/// (names as in the CLI, `-` as `_`). The browser passes it as JSON: every field is optional
/// and defaults to the CLI's default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthBench {
    /// Layers (24, as Qwen-1.8B).
    pub layers: Option<usize>,
    /// Vocabulary rows (151936, as Qwen-1.8B).
    pub vocab: Option<usize>,
    /// How matrices are stored on the GPU: f16, q8 or q4.
    pub weights: String,
    /// KV cache format: f32, f16 or q8.
    pub kv_cache: String,
    /// KV cache length (default: just what the measurements need).
    pub context: Option<usize>,
    /// Prompt lengths to time prefill on.
    pub prefill: Vec<usize>,
    /// Cache lengths to time decoding at.
    pub decode_at: Vec<usize>,
    /// Tokens decoded per measurement.
    pub decode_tokens: usize,
    pub max_batch: usize,
    /// A storage-binding limit below the adapter's (testing).
    pub max_binding_bytes: Option<u64>,
    /// Time each kernel of the decode at the first `decode_at` context (native adapters with
    /// timestamp queries inside passes).
    pub profile: bool,
    /// Decode by sampling on the GPU with this temperature (0: greedy, the argmax), top-k
    /// (0: off) and top-p (1: off), as generation does.
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    /// Layer-wise window attention, as the `--window` load option (`""`: off).
    pub window: String,
}

impl Default for SynthBench {
    fn default() -> Self {
        SynthBench {
            layers: None,
            vocab: None,
            weights: "f16".into(),
            kv_cache: "f32".into(),
            context: None,
            prefill: vec![128, 1024],
            decode_at: vec![128, 2048],
            decode_tokens: 16,
            max_batch: 128,
            max_binding_bytes: None,
            profile: false,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            window: String::new(),
        }
    }
}

/// Largest layer count, vocabulary and token count [`SynthBench`] accepts (far above any
/// GPU's memory; it keeps the arithmetic away from overflow on 32-bit wasm).
const SYNTH_MAX: usize = 1 << 20;
/// Most layers of a synthesised model (the largest Qwen has 80).
const SYNTH_MAX_LAYERS: usize = 128;

impl SynthBench {
    /// Parse the JSON options (`{}`: every default).
    pub fn from_json(text: &str) -> Result<Self> {
        let s: SynthBench =
            serde_json::from_str(text).map_err(|e| Error::Request(format!("benchmark options: {e}")))?;
        s.check()?;
        Ok(s)
    }

    /// Refuse out-of-range or contradictory options.
    pub fn check(&self) -> Result<()> {
        let bad = |what: &str, v: usize| {
            Err(Error::Request(format!("benchmark option {what} = {v} is out of range (1..={SYNTH_MAX})")))
        };
        for (what, v) in [("layers", self.layers), ("vocab", self.vocab), ("context", self.context)] {
            if let Some(v) = v.filter(|&v| v == 0 || v > SYNTH_MAX) {
                return bad(what, v);
            }
        }
        // Qwen-1.8B has 24 layers; the largest Qwen 80. More would only exhaust memory.
        if let Some(l) = self.layers.filter(|&l| l > SYNTH_MAX_LAYERS) {
            return Err(Error::Request(format!(
                "benchmark option layers = {l} is out of range (1..={SYNTH_MAX_LAYERS})"
            )));
        }
        for (what, list) in [("prefill", &self.prefill), ("decode_at", &self.decode_at)] {
            if let Some(&v) = list.iter().find(|&&v| v == 0 || v > SYNTH_MAX) {
                return bad(what, v);
            }
        }
        if self.decode_tokens > SYNTH_MAX {
            return bad("decode_tokens", self.decode_tokens);
        }
        if self.max_batch > SYNTH_MAX {
            return bad("max_batch", self.max_batch);
        }
        if let Some(p) = self.sampling() {
            p.validate()?;
        } else if self.top_k != 0 || self.top_p != 1.0 {
            return Err(Error::Request("benchmark options top_k and top_p need a temperature > 0".into()));
        }
        Ok(())
    }

    /// The model: Qwen-1.8B with these layers and vocabulary.
    pub fn config(&self) -> QwenConfig {
        let mut cfg = qwen_1_8b(self.layers);
        cfg.vocab_size = self.vocab.unwrap_or(cfg.vocab_size);
        cfg
    }

    /// The report's model label (as the CLI prints it).
    pub fn model_name(cfg: &QwenConfig) -> String {
        format!("Qwen-1.8B-shaped, random weights, {} layers, vocab {}", cfg.num_hidden_layers, cfg.vocab_size)
    }

    /// Sizes as the CLI chooses them: a KV cache just long enough for every measurement.
    /// `stored`: the format a pre-quantized model folder holds (None for the synthesised
    /// model), which `weights = "auto"` takes.
    pub fn model_options(&self, stored: Option<WeightFormat>) -> Result<ModelOptions> {
        let need = self
            .prefill
            .iter()
            .chain(&self.decode_at)
            .map(|&n| n.saturating_add(self.decode_tokens).saturating_add(1))
            .max()
            .unwrap_or(256);
        Ok(ModelOptions {
            context: Some(need.max(self.context.unwrap_or(0))),
            max_batch: self.max_batch.max(1),
            weights: crate::weights::quant::resolve_format(WeightFormat::parse_request(&self.weights)?, stored)?,
            kv: KvFormat::parse(&self.kv_cache)?,
            window: crate::model::WindowSpec::parse(&self.window)?,
            ..Default::default()
        })
    }

    /// What to measure (the CLI's seed).
    pub fn bench_options(&self) -> BenchOptions {
        BenchOptions {
            prefill_lens: self.prefill.clone(),
            decode_contexts: self.decode_at.clone(),
            decode_tokens: self.decode_tokens.max(1),
            seed: 7,
            profile: self.profile,
            sampling: self.sampling(),
        }
    }

    /// How decoding chooses tokens: `None` for the argmax.
    pub fn sampling(&self) -> Option<SamplingParams> {
        let p = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: 1.0,
            seed: 7,
            ..Default::default()
        };
        (!p.is_greedy()).then_some(p)
    }
}

/// A checkpoint whose tensors are made up when read: bf16, uniform, scaled like an
/// initialised model. One tensor exists in memory at a time. Each tensor's values depend only
/// on the seed and its name, so any reading order (the CLI's, the browser's) gives the same
/// model.
pub struct RandomSource {
    tensors: BTreeMap<String, TensorInfo>,
    seed: u64,
}

/// The xorshift64 state of tensor `name` under `seed` (FNV-1a of the name, mixed with the
/// seed; never 0).
fn tensor_stream(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

impl RandomSource {
    pub fn new(cfg: &QwenConfig, seed: u64) -> Self {
        let mut tensors = BTreeMap::new();
        let mut at = 0u64;
        for (name, shape) in crate::weights::checkpoint::expected_tensors(cfg) {
            let bytes = shape.iter().product::<usize>() as u64 * 2;
            tensors.insert(name, TensorInfo { dtype: Dtype::BF16, shape, start: at, end: at + bytes });
            at += bytes;
        }
        RandomSource { tensors, seed }
    }
}

impl TensorSource for RandomSource {
    fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }
    fn read(&mut self, name: &str) -> Result<Vec<u8>> {
        let info = self.tensors.get(name).ok_or_else(|| Error::Weights(format!("no tensor {name}")))?;
        let (scale, offset) = match info.shape.as_slice() {
            [_, cols] => (3f32.sqrt() / (*cols as f32).sqrt(), 0.0),
            _ if name.contains("norm") || name.contains("ln_") => (0.0, 1.0),
            _ => (0.02, 0.0),
        };
        // A failed allocation is an error, not an abort (in wasm an abort kills the module).
        let mut out = Vec::new();
        out.try_reserve_exact(info.byte_len())
            .map_err(|_| Error::Weights(format!("cannot allocate {} bytes to synthesise {name}", info.byte_len())))?;
        let mut state = tensor_stream(self.seed, name);
        for _ in 0..info.numel() {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            out.extend_from_slice(&half::bf16::from_f32(offset + u * scale).to_le_bytes());
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PrefillResult {
    pub tokens: usize,
    pub tok_per_s: f64,
    /// Prompt in, first token out (prefill, LM head, GPU argmax, 4-byte readback).
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecodeResult {
    /// Tokens in the KV cache when decoding started. The cache is not prefilled: it is taken
    /// as holding that many tokens ([`Qwen::assume_cached`]), whatever keys it holds, since
    /// attention costs the same whatever the keys are.
    pub context: usize,
    pub tok_per_s: f64,
    pub ms_per_token: f64,
    /// Weights plus the average KV cache read per token (a windowed layer's window only).
    pub bytes_per_token: u64,
    /// (bytes per token / measured bandwidth) / measured time per token.
    pub roofline_fraction: f64,
    /// Kernel dispatches per token at this cache length (a long cache adds split-K's merge).
    pub dispatches: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub adapter: String,
    pub model: String,
    pub parameters: u64,
    pub weight_format: String,
    pub kv_cache_format: String,
    pub context: usize,
    /// Exact bytes of every live long-lived GPU buffer (weights, activations, KV cache,
    /// readback), read from the device's ledger before the bandwidth probe.
    pub gpu_bytes_allocated: u64,
    /// How many such buffers.
    pub gpu_buffers: usize,
    pub weight_bytes_per_token: u64,
    /// At the last decode cache length (see [`DecodeResult::dispatches`] for each).
    pub dispatches_per_decoded_token: usize,
    pub submissions_per_decoded_token: usize,
    pub readback_bytes_per_decoded_token: usize,
    /// How decoded tokens were chosen: `"argmax"`, or the sampling settings.
    pub decode_sampling: String,
    /// Streaming copy bandwidth (read + write bytes / second), measured in this run.
    pub bandwidth_gb_s: f64,
    pub time_to_first_token_s: f64,
    /// Each layer's attention window in keys (0: the whole cache; all 0: windows off).
    pub windows: Vec<usize>,
    pub prefill: Vec<PrefillResult>,
    pub decode: Vec<DecodeResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

/// Where a decoded token's time goes, from GPU timestamps between dispatches.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub context: usize,
    pub tokens: usize,
    /// Wall time per token while profiling (timestamps add a little).
    pub wall_ms_per_token: f64,
    /// CPU time to record and encode a token's pass.
    pub encode_ms_per_token: f64,
    /// Sum of the dispatches' GPU times.
    pub gpu_ms_per_token: f64,
    /// By kernel and workgroup count, slowest first.
    pub kernels: Vec<KernelTime>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub groups: u32,
    pub dispatches_per_token: f64,
    pub us_per_token: f64,
}

/// Decode `tokens` tokens after a `context`-token prompt with every dispatch timed.
async fn profile_decode(
    model: &mut Qwen,
    context: usize,
    tokens: usize,
    sampling: Option<&SamplingParams>,
    rng: &mut u64,
) -> Result<Profile> {
    let mut tok = start_decode_at(model, context, sampling, rng).await?;
    model.set_profiling(true)?;
    let mut by_kernel: BTreeMap<(String, u32), (usize, f64)> = BTreeMap::new();
    let mut encode_s = 0.0;
    let t0 = Stopwatch::start();
    for _ in 0..tokens {
        tok = token(model.feed(&[tok], Want::Token).await?)?;
        let p = model.last_profile().ok_or_else(|| Error::Gpu("no profile was recorded".into()))?;
        encode_s += p.encode_s;
        for d in &p.dispatches {
            let e = by_kernel.entry((d.kernel.clone(), d.groups)).or_default();
            e.0 += 1;
            e.1 += d.ns;
        }
    }
    let wall = t0.seconds();
    model.set_profiling(false)?;
    let n = tokens as f64;
    let mut kernels: Vec<KernelTime> = by_kernel
        .into_iter()
        .map(|((kernel, groups), (count, ns))| KernelTime {
            kernel,
            groups,
            dispatches_per_token: count as f64 / n,
            us_per_token: ns / 1e3 / n,
        })
        .collect();
    kernels.sort_by(|a, b| b.us_per_token.total_cmp(&a.us_per_token));
    Ok(Profile {
        context,
        tokens,
        wall_ms_per_token: wall * 1e3 / n,
        encode_ms_per_token: encode_s * 1e3 / n,
        gpu_ms_per_token: kernels.iter().map(|k| k.us_per_token).sum::<f64>() / 1e3,
        kernels,
    })
}

/// Streaming bandwidth of a plain copy kernel, in GB/s (bytes read + written).
pub async fn bandwidth(gpu: &Gpu) -> Result<f64> {
    let size = gpu.max_binding.min(256 << 20) / 16 * 16;
    let src = gpu.storage("bw_src", size)?;
    let dst = gpu.storage("bw_dst", size)?;
    let n = (size / 16) as usize;
    let run = |reps: usize| -> Result<()> {
        let mut rec = Recorder::new(gpu);
        for i in 0..reps {
            let (a, b) = if i % 2 == 0 { (&src, &dst) } else { (&dst, &src) };
            ops::copy(&mut rec, a, b, n)?;
        }
        rec.submit()
    };
    run(1)?;
    gpu.read(&dst, 0, 16).await?;
    let reps = 8;
    let t = Stopwatch::start();
    run(reps)?;
    gpu.read(&dst, 0, 16).await?;
    let s = t.seconds();
    Ok(2.0 * size as f64 * reps as f64 / s / 1e9)
}

pub struct BenchOptions {
    pub prefill_lens: Vec<usize>,
    pub decode_contexts: Vec<usize>,
    pub decode_tokens: usize,
    pub seed: u64,
    /// Add a [`Profile`] of the decode at the first context.
    pub profile: bool,
    /// Decode by drawing on the GPU with these settings; `None`: the argmax.
    pub sampling: Option<SamplingParams>,
}

fn random_ids(n: usize, vocab: usize, state: &mut u64) -> Vec<u32> {
    (0..n)
        .map(|_| {
            *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((*state >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// Set `model` up to decode at a `context`-token cache without prefilling it: the cache is
/// taken as holding `context - 1` tokens ([`Qwen::assume_cached`]; its keys are not a real
/// sequence's, but attention costs the same whatever they are) and one random token is fed
/// at position `context - 1`, which chooses the first decoded token. A 32K-token prefill of
/// the full shape would take hours on a CPU adapter; this takes one token's pass.
async fn start_decode_at(
    model: &mut Qwen,
    context: usize,
    sampling: Option<&SamplingParams>,
    rng: &mut u64,
) -> Result<u32> {
    let ids = random_ids(context, model.config.vocab_size, rng);
    model.reset();
    model.assume_cached(context - 1)?;
    model.set_sampling(sampling, &ids)?;
    token(model.feed(&ids[context - 1..], Want::Token).await?)
}

/// Key positions read per decoded token, summed over the layers, averaged over decoding
/// `tokens` tokens after a `context`-token cache: the token at step `j` attends to
/// `context + j + 1` positions, or only to its layer's window of them (0: no window).
pub fn kv_positions_per_token(windows: &[usize], context: usize, tokens: usize) -> f64 {
    let tokens = tokens.max(1);
    let total: u64 = windows
        .iter()
        .map(|&w| {
            (0..tokens)
                .map(|j| {
                    let seen = (context + j + 1) as u64;
                    if w == 0 {
                        seen
                    } else {
                        seen.min(w as u64)
                    }
                })
                .sum::<u64>()
        })
        .sum();
    total as f64 / tokens as f64
}

fn token(out: Output) -> Result<u32> {
    match out {
        Output::Token(t) => Ok(t),
        _ => Err(Error::Gpu("expected a token".into())),
    }
}

/// Measure `model` (already loaded). `model_name` labels the report.
pub async fn run(model: &mut Qwen, model_name: &str, opts: &BenchOptions) -> Result<BenchReport> {
    run_with_progress(model, model_name, opts, &mut |_| {}).await
}

/// [`run`], calling `progress` with a short label (`"bandwidth"`, `"warm-up"`,
/// `"prefill 128"`, `"decode @2048"`) before each measurement.
pub async fn run_with_progress(
    model: &mut Qwen,
    model_name: &str,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    let cfg = model.config.clone();
    let ctx = model.context();
    let mut rng = opts.seed | 1;
    // The model's own memory, before the bandwidth probe's scratch buffers.
    let (gpu_bytes, gpu_buffers) = (model.gpu.allocated_bytes(), model.gpu.allocated_buffers());
    progress("bandwidth");
    let bw = bandwidth(&model.gpu).await?;

    // Warm-up: compile every pipeline (prefill and decode shapes).
    progress("warm-up");
    model.reset();
    let warm = random_ids(4.min(ctx - 1), cfg.vocab_size, &mut rng);
    model.set_sampling(opts.sampling.as_ref(), &warm)?;
    let t = token(model.feed(&warm, Want::Token).await?)?;
    token(model.feed(&[t], Want::Token).await?)?;
    model.set_sampling(None, &[])?;

    let mut prefill = Vec::new();
    for &n in opts.prefill_lens.iter().filter(|&&n| n < ctx) {
        progress(&format!("prefill {n}"));
        model.reset();
        let ids = random_ids(n, cfg.vocab_size, &mut rng);
        let t0 = Stopwatch::start();
        token(model.feed(&ids, Want::Token).await?)?;
        let s = t0.seconds();
        prefill.push(PrefillResult { tokens: n, tok_per_s: n as f64 / s, seconds: s });
    }
    let ttft = prefill.first().map(|p| p.seconds).unwrap_or(0.0);

    let weight_bytes = model.weights.bytes_per_token();
    // KV bytes read per cached position of one layer (K and V).
    let kv_row = 2 * model.kv_format().layer_bytes(1, cfg.num_key_value_heads, cfg.head_dim);
    let windows = model.windows().to_vec();
    let mut decode = Vec::new();
    let mut dispatches = 0;
    for &c in opts.decode_contexts.iter().filter(|&&c| c + opts.decode_tokens < ctx && c > 0) {
        progress(&format!("decode @{c}"));
        start_decode_at(model, c, opts.sampling.as_ref(), &mut rng).await?;
        // As generation decodes: one pass queued ahead of the one being read.
        let t0 = Stopwatch::start();
        model.queue_next().await?;
        for i in 0..opts.decode_tokens {
            if i + 1 < opts.decode_tokens {
                model.queue_next().await?;
            }
            model.take_token().await?;
        }
        let per = t0.seconds() / opts.decode_tokens as f64;
        dispatches = model.last_dispatches();
        // Only the keys (and values) each layer's window lets it read.
        let kv = kv_row as f64 * kv_positions_per_token(&windows, c, opts.decode_tokens);
        let bytes = weight_bytes + kv.round() as u64;
        decode.push(DecodeResult {
            context: c,
            tok_per_s: 1.0 / per,
            ms_per_token: per * 1e3,
            bytes_per_token: bytes,
            roofline_fraction: bytes as f64 / (bw * 1e9) / per,
            dispatches,
        });
    }
    let profile = match opts.decode_contexts.iter().find(|&&c| c + opts.decode_tokens < ctx && c > 0) {
        Some(&c) if opts.profile => {
            progress(&format!("profile @{c}"));
            Some(profile_decode(model, c, opts.decode_tokens, opts.sampling.as_ref(), &mut rng).await?)
        }
        _ => None,
    };
    model.set_sampling(None, &[])?;
    let decode_sampling = match &opts.sampling {
        None => "argmax".to_string(),
        Some(p) => format!("temperature {}, top-k {}, top-p {} (drawn on the GPU)", p.temperature, p.top_k, p.top_p),
    };
    Ok(BenchReport {
        adapter: model.gpu.describe(),
        model: model_name.to_string(),
        parameters: cfg.parameter_count(),
        weight_format: model.weights.formats().join("+"),
        kv_cache_format: model.kv_format().name().into(),
        context: ctx,
        gpu_bytes_allocated: gpu_bytes,
        gpu_buffers,
        weight_bytes_per_token: weight_bytes,
        dispatches_per_decoded_token: dispatches,
        submissions_per_decoded_token: 1,
        readback_bytes_per_decoded_token: 4,
        decode_sampling,
        bandwidth_gb_s: bw,
        time_to_first_token_s: ttft,
        windows,
        prefill,
        decode,
        profile,
    })
}

impl BenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        s += &format!("adapter        {}\n", self.adapter);
        s += &format!(
            "model          {} ({:.3} B params, {} weights, {} KV cache, context {})\n",
            self.model,
            self.parameters as f64 / 1e9,
            self.weight_format,
            self.kv_cache_format,
            self.context
        );
        s += &format!("gpu memory     {} bytes ({:.1} MiB)\n", self.gpu_bytes_allocated, mib(self.gpu_bytes_allocated));
        s += &format!("bandwidth      {:.2} GB/s (copy kernel, this run)\n", self.bandwidth_gb_s);
        s += &format!(
            "per token      {} dispatches, {} submission, {} bytes read back, {:.1} MiB of weights\n",
            self.dispatches_per_decoded_token,
            self.submissions_per_decoded_token,
            self.readback_bytes_per_decoded_token,
            mib(self.weight_bytes_per_token)
        );
        s += &format!("decoding       {}\n", self.decode_sampling);
        if self.windows.iter().any(|&w| w > 0) {
            let w: Vec<String> =
                self.windows.iter().map(|&w| if w == 0 { "all".into() } else { w.to_string() }).collect();
            if w.iter().all(|x| *x == w[0]) {
                s += &format!("windows        {} keys in every layer\n", w[0]);
            } else {
                s += &format!("windows        {} (keys per layer)\n", w.join(","));
            }
        }
        s += &format!("first token    {:.3} s\n", self.time_to_first_token_s);
        for p in &self.prefill {
            s += &format!("prefill {:>5}  {:>9.1} tok/s ({:.3} s)\n", p.tokens, p.tok_per_s, p.seconds);
        }
        for d in &self.decode {
            s += &format!(
                "decode @{:>5}  {:>9.2} tok/s ({:.1} ms/token, {:.1} MiB/token, roofline {:.2}, {} dispatches)\n",
                d.context,
                d.tok_per_s,
                d.ms_per_token,
                mib(d.bytes_per_token),
                d.roofline_fraction,
                d.dispatches
            );
        }
        if let Some(p) = &self.profile {
            s += &format!(
                "profile @{}    {:.2} ms/token wall, {:.2} ms encoding (CPU), {:.2} ms in kernels (GPU), {} tokens\n",
                p.context, p.wall_ms_per_token, p.encode_ms_per_token, p.gpu_ms_per_token, p.tokens
            );
            for k in &p.kernels {
                s += &format!(
                    "  {:>9.1} us {:>5.1}x {:>7} groups  {}\n",
                    k.us_per_token, k.dispatches_per_token, k.groups, k.kernel
                );
            }
        }
        s
    }
}
