//! The Qwen forward pass: embed → per layer (norm, fused qkv + bias, q/k norm + RoPE + KV
//! write, attention, o_proj + residual, norm, fused gate/up, SiLU·mul, down + residual) → final
//! norm → LM head, recorded top to bottom into one submission per forward.

pub mod export;
mod forward;
pub mod queue;
pub mod rope;
pub mod state;
pub mod weights;
pub mod window;

use crate::config::QwenConfig;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuBuffer, PassEncoding, Recorder};
use crate::ops;
#[cfg(not(target_arch = "wasm32"))]
use crate::weights::TensorSource;
use forward::{Head, Pass};
use queue::{DecodeQueue, NextInput};
pub use state::{KvFormat, RunState};
pub use weights::QwenWeights;
pub use window::WindowSpec;

/// Sizes chosen at load time.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// KV cache length in tokens; `None`: see [`ModelOptions::context_for`].
    pub context: Option<usize>,
    /// Most tokens one forward pass takes; longer prompts are fed in chunks.
    pub max_batch: usize,
    /// How matrices are stored on the GPU.
    pub weights: crate::weights::quant::WeightFormat,
    /// How the KV cache stores keys and values (f32: as the reference keeps it).
    pub kv: state::KvFormat,
    /// Where plain matrices are encoded into `weights` (see [`weights::Encoder`]).
    pub encoder: weights::Encoder,
    /// Layer-wise window attention (off: every layer sees its whole cache).
    pub window: WindowSpec,
    /// GPU memory the model may take, weights and run state (None: unknown). Only the
    /// default context of a long-context model depends on it ([`ModelOptions::context_for`]).
    pub max_gpu_bytes: Option<u64>,
}

/// GPU memory a long-context model's default context may fill when no budget is given.
pub const DEFAULT_GPU_BUDGET: u64 = 4 << 30;

/// The contexts a long-context model (Qwen v1, whose dynamic NTK and logN carry it past its
/// trained length) tries by default, longest first.
pub const LONG_CONTEXTS: [usize; 3] = [32768, 16384, 8192];

/// A default context's KV cache keeps each layer's K (and V) within this many bytes: WebGPU's
/// default storage-binding limit, which every adapter offers.
const DEFAULT_KV_BINDING: u64 = 128 << 20;

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            context: None,
            max_batch: 128,
            weights: crate::weights::quant::WeightFormat::F16,
            kv: state::KvFormat::F32,
            encoder: weights::Encoder::Auto,
            window: WindowSpec::Off,
            max_gpu_bytes: None,
        }
    }
}

impl ModelOptions {
    /// The KV cache length: the one asked for, else the model's trained context (at most
    /// 4096), except for a model whose positions run past its trained length by design (Qwen
    /// v1 with dynamic NTK): it gets the longest of [`LONG_CONTEXTS`] whose weights and run
    /// state fit `max_gpu_bytes` (default [`DEFAULT_GPU_BUDGET`]) with each layer's KV cache
    /// within 128 MiB, if any is longer.
    pub fn context_for(&self, cfg: &QwenConfig) -> usize {
        if let Some(c) = self.context {
            return c;
        }
        let plain = cfg.max_position_embeddings.min(4096);
        if !cfg.use_dynamic_ntk {
            return plain;
        }
        let budget = self.max_gpu_bytes.unwrap_or(DEFAULT_GPU_BUDGET);
        let weights = weights::weight_bytes_of(cfg, &Default::default(), self.weights);
        let fits = |c: usize| {
            let state = state::state_bytes(cfg, self.max_batch.min(c), c, self.kv);
            self.kv.layer_bytes(c, cfg.num_key_value_heads, cfg.head_dim) <= DEFAULT_KV_BINDING
                && weights.saturating_add(state) <= budget
        };
        LONG_CONTEXTS.into_iter().find(|&c| c > plain && fits(c)).unwrap_or(plain)
    }
}

/// What a forward pass should hand back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Nothing (the KV cache is filled).
    Nothing,
    /// The next token, chosen on the GPU from the last token's logits (4 bytes read back):
    /// their argmax, or a draw by the sampling settings of [`Qwen::set_sampling`]; with
    /// [`Qwen::set_logprobs`] on, its log-probabilities too ([`Qwen::last_logprobs`]).
    Token,
    /// [`Want::Token`], submitted but not read (see [`Qwen::queue_next`]).
    QueuedToken,
    /// The last token's logits.
    Logits,
    /// Logits for every token (tests, evaluation): `[n_tokens, vocab]`.
    AllLogits,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Nothing,
    Token(u32),
    Logits(Vec<f32>),
}

pub struct Qwen {
    pub config: QwenConfig,
    pub gpu: Gpu,
    pub weights: QwenWeights,
    state: RunState,
    /// RoPE frequencies in use (NTK-scaled for long Qwen v1 prompts) and the host table.
    rope: RopeState,
    /// Positions, token passes in flight and the next pass's input (see [`queue`]).
    queue: DecodeQueue,
    /// Each layer's attention window (0: the whole cache; see [`window`]).
    windows: Vec<usize>,
    /// `[rows, vocab]` logits for [`Want::AllLogits`], allocated on first use.
    logits_all: Option<(usize, GpuBuffer)>,
    /// Kernel dispatches in the last forward pass.
    last_dispatches: usize,
    /// Uniform arena and bind groups, reused from pass to pass (the buffers never change).
    encoding: PassEncoding,
    /// How token passes choose: `None` (or greedy without a penalty or bias) is the argmax.
    sampling: Option<crate::sampler::SamplingParams>,
    /// Token passes also compute their token's log-probabilities with this many top
    /// alternatives (see [`Qwen::set_logprobs`]); `None`: off.
    logprobs: Option<usize>,
    /// The log-probabilities of the token [`Qwen::take_token`] read last, when on.
    last_logprobs: Option<crate::sampler::TokenLogprobs>,
    /// Token passes choose among ids below this (the tokenizer's ids; see
    /// [`Qwen::set_token_limit`]); at most the vocabulary.
    token_limit: usize,
    /// Timestamps between dispatches, when profiling.
    profiler: Option<crate::gpu::profile::Profiler>,
    last_profile: Option<PassProfile>,
}

struct RopeState {
    inv_freq: Vec<f32>,
    ntk_alpha: f64,
    host: Vec<f32>,
}

/// What a pass reads as its tokens.
#[derive(Clone, Copy)]
enum PassInput<'a> {
    Tokens(&'a [u32]),
    /// One token: the last token pass's choice, copied on the GPU.
    OnGpu,
}

/// Where the last forward pass spent its time (see [`Qwen::set_profiling`]).
#[derive(Debug, Clone)]
pub struct PassProfile {
    /// GPU time of each dispatch, in order.
    pub dispatches: Vec<crate::gpu::profile::DispatchTime>,
    /// CPU time to record and encode the pass (before its submission).
    pub encode_s: f64,
}

impl Qwen {
    /// Upload a checkpoint and allocate the run state (native: waits for the GPU; the
    /// browser goes through [`weights::Uploader`] and its async `finish_async`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(
        gpu: Gpu,
        config: QwenConfig,
        src: &mut dyn TensorSource,
        opts: &ModelOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Qwen> {
        // The run state first: a context that cannot fit fails before any download.
        let windows = opts.window.resolve(config.num_hidden_layers)?;
        let state = Qwen::run_state(&gpu, &config, opts)?;
        let (gpu, weights) = weights::load(gpu, &config, src, opts.weights, opts.encoder, progress)?;
        Ok(Qwen::assemble(gpu, config, weights, state, windows))
    }

    /// Wrap uploaded weights (see [`weights::Uploader`]) and allocate the run state.
    pub fn from_weights(gpu: Gpu, config: QwenConfig, weights: QwenWeights, opts: &ModelOptions) -> Result<Qwen> {
        let windows = opts.window.resolve(config.num_hidden_layers)?;
        let state = Qwen::run_state(&gpu, &config, opts)?;
        Ok(Qwen::assemble(gpu, config, weights, state, windows))
    }

    fn run_state(gpu: &Gpu, config: &QwenConfig, opts: &ModelOptions) -> Result<RunState> {
        let context = opts.context_for(config);
        RunState::new(gpu, config, opts.max_batch.min(context), context, opts.kv)
    }

    fn assemble(gpu: Gpu, config: QwenConfig, weights: QwenWeights, state: RunState, windows: Vec<usize>) -> Qwen {
        let inv_freq = rope::inv_freq(config.rope_theta, config.head_dim);
        Qwen {
            config,
            gpu,
            weights,
            state,
            rope: RopeState { inv_freq, ntk_alpha: 1.0, host: Vec::new() },
            queue: DecodeQueue::default(),
            windows,
            logits_all: None,
            last_dispatches: 0,
            encoding: PassEncoding::default(),
            sampling: None,
            logprobs: None,
            last_logprobs: None,
            token_limit: usize::MAX,
            profiler: None,
            last_profile: None,
        }
    }

    /// Open a Hugging Face model folder (`config.json` + safetensors) or a GGUF file on the
    /// default GPU.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn load_dir(
        path: &std::path::Path,
        gpu_opts: &crate::gpu::GpuOptions,
        opts: &ModelOptions,
    ) -> Result<Qwen> {
        let (config, mut src) = open_source(path)?;
        crate::weights::checkpoint::check_tensors(&config, src.tensors())?;
        let gpu = Gpu::new(gpu_opts).await?;
        Qwen::load(gpu, config, src.as_mut(), opts, &mut |_, _| {})
    }

    /// Tokens in the KV cache (passes queued by [`Qwen::queue_next`] and not yet read
    /// not counted).
    pub fn pos(&self) -> usize {
        self.queue.pos()
    }

    /// KV cache length.
    pub fn context(&self) -> usize {
        self.state.context
    }

    /// Each layer's attention window in keys (0: the layer sees its whole cache).
    pub fn windows(&self) -> &[usize] {
        &self.windows
    }

    /// BENCHMARKS ONLY: take the cache as holding `n` tokens without computing them (what it
    /// holds is whatever was there: zeros, or an earlier sequence's keys). Decode and
    /// attention cost the same whatever the keys are, so a benchmark can time decoding at a
    /// long cache without prefilling it first. The next token fed goes to position `n`.
    #[doc(hidden)]
    pub fn assume_cached(&mut self, n: usize) -> Result<()> {
        if n > self.state.context {
            return Err(Error::ContextFull(format!("{n} tokens exceed the context of {}", self.state.context)));
        }
        self.queue.reset();
        self.queue.submitted(n, None);
        self.fix_ntk_alpha(n);
        Ok(())
    }

    /// How the KV cache stores keys and values.
    pub fn kv_format(&self) -> KvFormat {
        self.state.kv
    }

    /// Most tokens per forward pass.
    pub fn max_batch(&self) -> usize {
        self.state.max_tokens
    }

    /// The NTK alpha in use (1 unless a Qwen v1 prompt ran past `seq_length`).
    pub fn ntk_alpha(&self) -> f64 {
        self.rope.ntk_alpha
    }

    /// Kernel dispatches recorded by the last forward pass (all in one submission).
    pub fn last_dispatches(&self) -> usize {
        self.last_dispatches
    }

    /// Time each dispatch of the following forward passes on the GPU (needs a device opened
    /// with [`crate::gpu::GpuOptions::profile`]; slower: for benchmarks).
    pub fn set_profiling(&mut self, on: bool) -> Result<()> {
        self.profiler = if on { Some(crate::gpu::profile::Profiler::new(&self.gpu)?) } else { None };
        self.last_profile = None;
        Ok(())
    }

    /// The last forward pass's profile, while profiling.
    pub fn last_profile(&self) -> Option<&PassProfile> {
        self.last_profile.as_ref()
    }

    /// How the following token passes ([`Want::Token`], [`Qwen::queue_next`]) choose: `None`
    /// for the argmax, else a draw by `params` (see [`crate::sampler`]) from step 0, with the
    /// repetition penalty on the tokens of `history` and on each token drawn from here on, and
    /// the frequency and presence penalties on the tokens drawn from here on (their counts
    /// start at 0: the prompt does not count). Call it once per generation
    /// ([`crate::generate::Generator`] does). Queued passes are dropped first. `logit_bias`
    /// ids must be below the vocabulary.
    ///
    /// Greedy without any penalty or bias runs the argmax kernel; anything else the sampling
    /// kernel, which binds the counts and bias tables (allocated on first use) only when the
    /// penalties or the bias are on.
    pub fn set_sampling(&mut self, params: Option<&crate::sampler::SamplingParams>, history: &[u32]) -> Result<()> {
        let vocab = self.config.vocab_size;
        if let Some(p) = params {
            p.check_vocab(vocab)?;
        }
        self.queue.restart_sampling();
        let mut bits = vec![0u32; vocab.div_ceil(32)];
        if params.is_some_and(|p| p.repetition_penalty != 1.0) {
            for &t in history {
                if let Some(w) = bits.get_mut(t as usize / 32) {
                    *w |= 1 << (t % 32);
                }
            }
        }
        self.gpu.write(&self.state.seen, 0, bytemuck::cast_slice(&bits));
        self.sampling = params.filter(|p| !p.is_plain_argmax()).cloned();
        let (gpu, x) = (&self.gpu, &mut self.state.sampler);
        let p = self.sampling.as_ref();
        x.use_counts = p.is_some_and(|p| p.counts_tokens());
        if x.use_counts {
            gpu.write(x.counts(gpu, vocab)?, 0, bytemuck::cast_slice(&vec![0u32; vocab]));
        }
        x.use_bias = p.is_some_and(|p| !p.logit_bias.is_empty());
        if let Some(p) = p.filter(|_| x.use_bias) {
            let mut table = vec![0f32; vocab];
            for &(id, b) in &p.logit_bias {
                table[id as usize] = b;
            }
            gpu.write(x.bias(gpu, vocab)?, 0, bytemuck::cast_slice(&table));
        }
        Ok(())
    }

    /// Token passes also compute the log-probabilities of their token and of the `top` most
    /// likely ones (`Some(0..=20)`), read back with the token and handed out by
    /// [`Qwen::last_logprobs`]; `None` turns that off (the default: then nothing is computed
    /// or read beyond the token). The definition is the model's own log-softmax over the ids
    /// below the token limit, before penalties, bias and temperature (see [`crate::sampler`]).
    /// It costs one more one-workgroup dispatch per token and `16 + 8 top` bytes of readback.
    /// Stays set until changed; queued passes are dropped first.
    pub fn set_logprobs(&mut self, top: Option<usize>) -> Result<()> {
        if let Some(k) = top.filter(|&k| k > crate::sampler::MAX_TOP_LOGPROBS) {
            return Err(Error::Request(format!(
                "logprobs: at most {} top tokens can be listed, not {k}",
                crate::sampler::MAX_TOP_LOGPROBS
            )));
        }
        self.queue.discard();
        if top.is_some() {
            self.state.sampler.ensure_logprobs(&self.gpu, self.config.vocab_size)?;
        }
        self.state.sampler.use_keys = top.is_some();
        self.logprobs = top;
        self.last_logprobs = None;
        Ok(())
    }

    /// The log-probabilities of the token the last [`Qwen::take_token`] (or [`Want::Token`]
    /// pass) returned, while [`Qwen::set_logprobs`] has them on.
    pub fn last_logprobs(&self) -> Option<&crate::sampler::TokenLogprobs> {
        self.last_logprobs.as_ref()
    }

    /// Token passes choose only among ids below `limit` (None: the whole vocabulary). Real
    /// Qwen2.5/3 checkpoints have 151936 logits but their tokenizers only 151669 ids: the rows
    /// past them are padding that no text decodes to, so generation must never pick them.
    /// The CLI and the browser engine set it to the tokenizer's size.
    pub fn set_token_limit(&mut self, limit: Option<usize>) -> Result<()> {
        if limit == Some(0) {
            return Err(Error::Request("a token limit of 0 leaves nothing to choose".into()));
        }
        self.queue.discard();
        self.token_limit = limit.unwrap_or(usize::MAX);
        Ok(())
    }

    /// Ids below this can be chosen by token passes.
    pub fn token_limit(&self) -> usize {
        self.token_limit.min(self.config.vocab_size)
    }

    /// Keep only the first `n` tokens of the KV cache (a conversation's common prefix with the
    /// next prompt): the next token fed goes to position `n`. `n = 0` is [`Qwen::reset`].
    pub fn rewind(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            self.reset();
            return Ok(());
        }
        self.queue.rewind(n)
    }

    /// Forget the conversation: the next prompt starts at position 0.
    pub fn reset(&mut self) {
        self.queue.reset();
        self.rope.ntk_alpha = 1.0;
        self.rope.inv_freq = rope::inv_freq(self.config.rope_theta, self.config.head_dim);
    }

    /// Check token ids and room in the cache before touching the GPU.
    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::Request("no tokens to process".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::Request(format!(
                "token id {bad} is out of range (vocab_size {})",
                self.config.vocab_size
            )));
        }
        let pos = self.queue.end();
        if pos + tokens.len() > self.state.context {
            return Err(Error::ContextFull(format!(
                "{} tokens after {pos} already in the cache exceed the context of {}",
                tokens.len(),
                self.state.context
            )));
        }
        Ok(())
    }

    /// Feed `tokens` (any number; chunked by `max_batch`) and return what `want` asks for
    /// about the last chunk. On a fresh cache this is the prefill that fixes Qwen v1's NTK
    /// alpha for the rest of the sequence, as the reference does. Queued passes are dropped
    /// first.
    pub async fn feed(&mut self, tokens: &[u32], want: Want) -> Result<Output> {
        self.queue.discard();
        self.check_tokens(tokens)?;
        if self.queue.end() == 0 {
            self.fix_ntk_alpha(tokens.len());
        }
        let chunk = self.state.max_tokens;
        let n_chunks = tokens.len().div_ceil(chunk);
        let mut all = Vec::new();
        let mut last = Output::Nothing;
        for (i, c) in tokens.chunks(chunk).enumerate() {
            let w = if i + 1 == n_chunks || want == Want::AllLogits { want } else { Want::Nothing };
            last = self.forward(PassInput::Tokens(c), w).await?;
            if let (Want::AllLogits, Output::Logits(l)) = (want, &last) {
                all.extend_from_slice(l);
            }
        }
        Ok(if want == Want::AllLogits { Output::Logits(all) } else { last })
    }

    /// [`Qwen::feed`] of a whole sequence on a fresh cache (dynamic NTK's alpha from all of
    /// `tokens`), handing each forward pass's logits to `on_chunk` (`first`: the index in
    /// `tokens` of the chunk's first row; `logits`: `[rows, vocab]`) instead of keeping them:
    /// evaluation over long texts without holding every position's logits at once.
    pub async fn feed_scoring(
        &mut self,
        tokens: &[u32],
        on_chunk: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        self.reset();
        self.check_tokens(tokens)?;
        self.fix_ntk_alpha(tokens.len());
        let chunk = self.state.max_tokens;
        for (i, c) in tokens.chunks(chunk).enumerate() {
            if let Output::Logits(l) = self.forward(PassInput::Tokens(c), Want::AllLogits).await? {
                on_chunk(i * chunk, &l)?;
            }
        }
        Ok(())
    }

    /// Change the layers' attention windows (see [`window`]) for the following passes: one
    /// per layer, 0 for the whole cache. Keys already cached stay as they are, so a caller
    /// that compares settings starts each sequence afresh.
    pub fn set_windows(&mut self, windows: Vec<usize>) -> Result<()> {
        if windows.len() != self.config.num_hidden_layers {
            return Err(Error::Request(format!(
                "{} windows for a model of {} layers",
                windows.len(),
                self.config.num_hidden_layers
            )));
        }
        self.queue.discard();
        self.windows = windows;
        Ok(())
    }

    /// Qwen v1's dynamic NTK: the prefill of a fresh sequence fixes alpha from its length.
    fn fix_ntk_alpha(&mut self, prompt_len: usize) {
        let cfg = &self.config;
        self.rope.ntk_alpha = if cfg.use_dynamic_ntk { rope::ntk_alpha(prompt_len, cfg.seq_length) } else { 1.0 };
        let base = rope::ntk_base(cfg.rope_theta, self.rope.ntk_alpha, cfg.head_dim);
        self.rope.inv_freq = rope::inv_freq(base, cfg.head_dim);
    }

    /// Queue the decode of one token without waiting for anything: the token is the last
    /// token pass's result, read by the GPU itself, so the pass can be submitted before that
    /// result is read back. [`Qwen::take_token`] reads each queued pass's token in order.
    /// Generation keeps one pass queued ahead this way, so the GPU never waits for a
    /// readback or for the CPU to record the next pass. Any other call ([`Qwen::feed`],
    /// [`Qwen::reset`], [`Qwen::rewind`], [`Qwen::set_sampling`]) first drops queued passes
    /// that were not read (their positions are freed again; the token last read stays the
    /// next input, see [`queue`]).
    pub async fn queue_next(&mut self) -> Result<()> {
        match self.queue.can_queue(self.state.context)? {
            NextInput::Host(t) => self.forward(PassInput::Tokens(&[t]), Want::QueuedToken).await?,
            _ => self.forward(PassInput::OnGpu, Want::QueuedToken).await?,
        };
        Ok(())
    }

    /// The token of the oldest queued pass ([`Qwen::queue_next`]), once the GPU has it.
    pub async fn take_token(&mut self) -> Result<u32> {
        let slot = self.queue.oldest()?;
        self.last_logprobs = None;
        let (words, lp) = match (self.logprobs, &self.state.sampler.logprobs_readback) {
            (Some(k), Some(rb)) => {
                let bytes = ops::logprobs_words(k) as u64 * 4;
                let b = self.gpu.map_read(&rb[slot], bytes).await?;
                (b.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect(), Some(k))
            }
            _ => {
                let b = self.gpu.map_read(&self.state.next_readback[slot], 4).await?;
                (vec![u32::from_le_bytes([b[0], b[1], b[2], b[3]])], None)
            }
        };
        let id = words[0];
        if id as usize >= self.token_limit() {
            self.queue.discard();
            return Err(Error::Gpu("no token to choose: the logits are all NaN (or, when sampling, all -inf)".into()));
        }
        if let Some(k) = lp {
            self.last_logprobs = Some(read_logprobs(&words, k));
        }
        self.queue.read(id);
        Ok(id)
    }

    /// One forward pass over at most `max_batch` tokens at positions `queue.end()..`.
    async fn forward(&mut self, input: PassInput<'_>, want: Want) -> Result<Output> {
        let pass = Pass { n: input.len(), pos0: self.queue.end() };
        let head = self.head_for(want)?;
        self.write_inputs(input, pass);
        let clock = crate::clock::Stopwatch::start();
        let mut rec = Recorder::new(&self.gpu);
        forward::record_body(&mut rec, &self.config, &self.weights, &self.state, &self.windows, pass)?;
        forward::record_head(&mut rec, &self.config, &self.weights, &self.state, pass, &head)?;
        // The token's log-probabilities, from the logits the choice left as they were.
        if let (Head::Argmax(_) | Head::Sample(_), Some(k)) = (&head, self.logprobs) {
            let s = &self.state;
            let out = s.sampler.logprobs.as_ref().ok_or_else(|| Error::Gpu("logprobs buffers missing".into()))?;
            ops::logprobs(&mut rec, &s.logits, self.token_limit(), k, &s.next, out)?;
        }
        self.last_dispatches = rec.len();
        let mut enc =
            self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
        if matches!(input, PassInput::OnGpu) {
            enc.copy_buffer_to_buffer(&self.state.next, 0, &self.state.tokens, 0, 4);
        }
        let timestamps = self.profiler.as_ref().map(|p| p.query_set());
        rec.encode_with(&mut enc, &mut self.encoding, timestamps)?;
        let profiled = self.profiler.as_ref().map(|p| {
            p.resolve(&mut enc, rec.len() as u32 + 1);
            (rec.dispatch_info(), clock.seconds())
        });
        let out = self.submit(enc, pass.n, want).await?;
        if let (Some(p), Some((info, encode_s))) = (&self.profiler, profiled) {
            self.last_profile = Some(PassProfile { dispatches: p.read(&self.gpu, info).await?, encode_s });
        }
        if want == Want::Token {
            return Ok(Output::Token(self.take_token().await?));
        }
        Ok(out)
    }

    /// The tail `want` asks for (a sampled pass draws with the queue's next sampling step).
    fn head_for(&mut self, want: Want) -> Result<Head> {
        let n = self.token_limit();
        Ok(match (want, &self.sampling) {
            (Want::Nothing, _) => Head::None,
            (Want::Logits, _) => Head::Logits,
            (Want::AllLogits, _) => Head::AllRows,
            (Want::Token | Want::QueuedToken, None) => Head::Argmax(n),
            (Want::Token | Want::QueuedToken, Some(p)) => {
                Head::Sample(ops::SampleParams::new(p, n, self.queue.sample_step())?)
            }
        })
    }

    /// The pass's tokens (unless the GPU copies its own) and its RoPE table.
    fn write_inputs(&mut self, input: PassInput<'_>, pass: Pass) {
        let logn = self.config.use_logn_attn.then_some(self.config.seq_length);
        rope::fill_table(&mut self.rope.host, &self.rope.inv_freq, pass.pos0, pass.n, logn);
        self.gpu.write(&self.state.rope, 0, bytemuck::cast_slice(&self.rope.host));
        if let PassInput::Tokens(t) = input {
            self.gpu.write(&self.state.tokens, 0, bytemuck::cast_slice(t));
        }
    }

    /// Submit the pass with the copies `want` needs and read back what it asks for now.
    async fn submit(&mut self, mut enc: wgpu::CommandEncoder, n: usize, want: Want) -> Result<Output> {
        let (gpu, s) = (&self.gpu, &self.state);
        let vocab_bytes = self.config.vocab_size as u64 * 4;
        let out = match want {
            Want::Nothing => {
                gpu.queue.submit([enc.finish()]);
                gpu.check()?;
                Output::Nothing
            }
            Want::Token | Want::QueuedToken => {
                let slot = self.queue.next_slot();
                match (self.logprobs, &s.sampler.logprobs, &s.sampler.logprobs_readback) {
                    (Some(k), Some(lp), Some(rb)) => {
                        enc.copy_buffer_to_buffer(lp, 0, &rb[slot], 0, ops::logprobs_words(k) as u64 * 4)
                    }
                    _ => enc.copy_buffer_to_buffer(&s.next, 0, &s.next_readback[slot], 0, 4),
                }
                gpu.queue.submit([enc.finish()]);
                Output::Nothing
            }
            Want::Logits => {
                enc.copy_buffer_to_buffer(&s.logits, 0, &s.logits_readback, 0, vocab_bytes);
                gpu.queue.submit([enc.finish()]);
                let b = gpu.map_read(&s.logits_readback, vocab_bytes).await?;
                Output::Logits(bytemuck::cast_slice(&b).to_vec())
            }
            Want::AllLogits => Output::Logits(self.all_logits(enc, n).await?),
        };
        let sampled = self.sampling.is_some();
        self.queue.submitted(n, matches!(want, Want::Token | Want::QueuedToken).then_some(sampled));
        Ok(out)
    }

    /// Every row's logits: the LM head in groups of rows that fit one binding, each group
    /// copied out before the next overwrites it.
    async fn all_logits(&mut self, mut enc: wgpu::CommandEncoder, n: usize) -> Result<Vec<f32>> {
        let (gpu, s) = (&self.gpu, &self.state);
        let row_bytes = self.config.vocab_size as u64 * 4;
        let per = ((gpu.max_binding / row_bytes) as usize).clamp(1, s.max_tokens);
        if self.logits_all.as_ref().map(|(rows, _)| *rows) != Some(per) {
            self.logits_all = None; // freed before its successor is allocated
            self.logits_all = Some((per, gpu.storage("logits_all", per as u64 * row_bytes)?));
        }
        let all = &self.logits_all.as_ref().expect("allocated").1;
        let size = n as u64 * row_bytes;
        let readback = gpu.transient_readback("logits_all_readback", size);
        for g0 in (0..n).step_by(per) {
            let rows = per.min(n - g0);
            let mut head = Recorder::new(gpu);
            ops::linear(&mut head, &s.xn, g0, rows, None, self.weights.lm_head(), None, all, false)?;
            head.encode(&mut enc)?;
            enc.copy_buffer_to_buffer(all, 0, &readback, g0 as u64 * row_bytes, rows as u64 * row_bytes);
        }
        gpu.queue.submit([enc.finish()]);
        let b = gpu.map_read(&readback, size).await?;
        Ok(bytemuck::cast_slice(&b).to_vec())
    }
}

/// [`crate::sampler::TokenLogprobs`] from what the logprobs kernel wrote (`ops::logprobs`:
/// token, max, sum, the token's logit, then `k` (id, logit) pairs), finished in f64.
fn read_logprobs(words: &[u32], k: usize) -> crate::sampler::TokenLogprobs {
    let f = |i: usize| f32::from_bits(words[i]);
    let (m, sum) = (f(1), f(2) as f64);
    let top = (0..k)
        .map(|j| (words[4 + 2 * j], f(5 + 2 * j)))
        .filter(|e| e.0 != u32::MAX)
        .map(|(id, l)| (id, crate::sampler::logprob_of(l, m, sum)))
        .collect();
    crate::sampler::TokenLogprobs { token: words[0], logprob: crate::sampler::logprob_of(f(3), m, sum), top }
}

impl PassInput<'_> {
    fn len(&self) -> usize {
        match self {
            PassInput::Tokens(t) => t.len(),
            PassInput::OnGpu => 1,
        }
    }
}

/// The config of a model: `DIR/config.json`, or a GGUF file's metadata.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_config(path: &std::path::Path) -> Result<QwenConfig> {
    if is_gguf(path) {
        return Ok(crate::weights::gguf_model::GgufFile::open(path)?.model.config);
    }
    let path = path.join("config.json");
    let text = crate::files::read_text_capped(&path, crate::files::CONFIG_CAP)?;
    QwenConfig::from_json(&text)
}

/// Whether `path` names a GGUF file (a regular file that starts with the magic `GGUF`)
/// rather than a model folder.
#[cfg(not(target_arch = "wasm32"))]
pub fn is_gguf(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file() && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
}

/// A model's config and tensors, from a Hugging Face folder or a GGUF file (headers only).
#[cfg(not(target_arch = "wasm32"))]
pub fn open_source(path: &std::path::Path) -> Result<(QwenConfig, Box<dyn crate::weights::TensorSource>)> {
    if is_gguf(path) {
        let f = crate::weights::gguf_model::GgufFile::open(path)?;
        return Ok((f.model.config.clone(), Box::new(f)));
    }
    Ok((read_config(path)?, Box::new(crate::weights::FileSource::open_dir(path)?)))
}

/// GPU bytes a model needs: weights, activations and KV cache.
pub fn gpu_bytes(cfg: &QwenConfig, opts: &ModelOptions) -> (u64, u64) {
    gpu_bytes_of(cfg, &std::collections::BTreeMap::new(), opts)
}

/// [`gpu_bytes`] for a checkpoint with these tensors (a GGUF file's keep their own types).
pub fn gpu_bytes_of(
    cfg: &QwenConfig,
    tensors: &std::collections::BTreeMap<String, crate::weights::TensorInfo>,
    opts: &ModelOptions,
) -> (u64, u64) {
    let context = opts.context_for(cfg);
    let state = state::state_bytes(cfg, opts.max_batch.min(context), context, opts.kv);
    (weights::weight_bytes_of(cfg, tensors, opts.weights), state)
}
