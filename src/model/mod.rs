//! The Qwen forward pass: embed → per layer (norm, fused qkv + bias, q/k norm + RoPE + KV
//! write, attention, o_proj + residual, norm, fused gate/up, SiLU·mul, down + residual) → final
//! norm → LM head, recorded top to bottom into one submission per forward.

pub mod rope;
pub mod state;
pub mod weights;

use crate::config::QwenConfig;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::ops::{self, Heads};
use crate::weights::TensorSource;
pub use state::{KvFormat, RunState};
pub use weights::QwenWeights;

/// Sizes chosen at load time.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// KV cache length in tokens; `None`: the model's trained context, at most 4096.
    pub context: Option<usize>,
    /// Most tokens one forward pass takes; longer prompts are fed in chunks.
    pub max_batch: usize,
    /// How matrices are stored on the GPU.
    pub weights: crate::weights::quant::WeightFormat,
    /// How the KV cache stores keys and values (f32: as the reference keeps it).
    pub kv: state::KvFormat,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            context: None,
            max_batch: 128,
            weights: crate::weights::quant::WeightFormat::F16,
            kv: state::KvFormat::F32,
        }
    }
}

impl ModelOptions {
    pub fn context_for(&self, cfg: &QwenConfig) -> usize {
        self.context.unwrap_or(cfg.max_position_embeddings.min(4096))
    }
}

/// What a forward pass should hand back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Nothing (the KV cache is filled).
    Nothing,
    /// The next token, chosen on the GPU from the last token's logits (4 bytes read back):
    /// their argmax, or a draw by the sampling settings of [`Qwen::set_sampling`].
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
    /// Inverse RoPE frequencies in use (NTK-scaled for long Qwen v1 prompts).
    inv_freq: Vec<f32>,
    ntk_alpha: f64,
    /// Tokens in the KV cache.
    pos: usize,
    rope_host: Vec<f32>,
    /// `[rows, vocab]` logits for [`Want::AllLogits`], allocated on first use.
    logits_all: Option<(usize, wgpu::Buffer)>,
    /// Kernel dispatches in the last forward pass.
    last_dispatches: usize,
    /// Uniform parameters of the forward pass's dispatches, reused from pass to pass.
    params_arena: Option<wgpu::Buffer>,
    /// Bind groups of the forward pass, reused from pass to pass (the buffers never change).
    bind_groups: crate::gpu::recorder::BindGroupCache,
    /// Readback slots (of `state.next_readback`) of submitted token passes not yet read,
    /// oldest first: at most two (see [`Qwen::queue_next`]).
    in_flight: std::collections::VecDeque<usize>,
    next_slot: usize,
    /// Whether `state.next` holds the last pass's token (what [`Qwen::queue_next`] feeds).
    next_on_gpu: bool,
    /// How token passes choose: `None` (or greedy without a penalty) is the argmax.
    sampling: Option<crate::sampler::SamplingParams>,
    /// The sampling step of the next token pass (one per drawn token, queued ones included).
    sample_step: u32,
    /// Timestamps between dispatches, when profiling.
    profiler: Option<crate::gpu::profile::Profiler>,
    last_profile: Option<PassProfile>,
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
    /// Upload a checkpoint and allocate the run state.
    pub fn load(
        gpu: Gpu,
        config: QwenConfig,
        src: &mut dyn TensorSource,
        opts: &ModelOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Qwen> {
        // The run state first: a context that cannot fit fails before any download.
        let state = Qwen::run_state(&gpu, &config, opts)?;
        let (gpu, weights) = weights::load(gpu, &config, src, opts.weights, progress)?;
        Ok(Qwen::assemble(gpu, config, weights, state))
    }

    /// Wrap uploaded weights (see [`weights::Uploader`]) and allocate the run state.
    pub fn from_weights(gpu: Gpu, config: QwenConfig, weights: QwenWeights, opts: &ModelOptions) -> Result<Qwen> {
        let state = Qwen::run_state(&gpu, &config, opts)?;
        Ok(Qwen::assemble(gpu, config, weights, state))
    }

    fn run_state(gpu: &Gpu, config: &QwenConfig, opts: &ModelOptions) -> Result<RunState> {
        let context = opts.context_for(config);
        RunState::new(gpu, config, opts.max_batch.min(context), context, opts.kv)
    }

    fn assemble(gpu: Gpu, config: QwenConfig, weights: QwenWeights, state: RunState) -> Qwen {
        let inv_freq = rope::inv_freq(config.rope_theta, config.head_dim);
        Qwen {
            config,
            gpu,
            weights,
            state,
            inv_freq,
            ntk_alpha: 1.0,
            pos: 0,
            rope_host: Vec::new(),
            logits_all: None,
            last_dispatches: 0,
            params_arena: None,
            bind_groups: Default::default(),
            in_flight: Default::default(),
            next_slot: 0,
            next_on_gpu: false,
            sampling: None,
            sample_step: 0,
            profiler: None,
            last_profile: None,
        }
    }

    /// Open a Hugging Face model folder (`config.json` + safetensors) on the default GPU.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn load_dir(
        dir: &std::path::Path,
        gpu_opts: &crate::gpu::GpuOptions,
        opts: &ModelOptions,
    ) -> Result<Qwen> {
        let config = read_config(dir)?;
        let mut src = crate::weights::FileSource::open_dir(dir)?;
        weights::check_tensors(&config, crate::weights::TensorSource::tensors(&src))?;
        let gpu = Gpu::new(gpu_opts).await?;
        Qwen::load(gpu, config, &mut src, opts, &mut |_, _| {})
    }

    /// Tokens in the KV cache (passes queued by [`Qwen::queue_next`] and not yet read
    /// not counted).
    pub fn pos(&self) -> usize {
        self.pos - self.in_flight.len()
    }

    /// KV cache length.
    pub fn context(&self) -> usize {
        self.state.context
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
        self.ntk_alpha
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
    /// repetition penalty on the tokens of `history` and on each token drawn from here on.
    /// Call it once per generation ([`crate::generate::Generator`] does).
    pub fn set_sampling(&mut self, params: Option<&crate::sampler::SamplingParams>, history: &[u32]) -> Result<()> {
        self.discard_queued();
        if let Some(p) = params {
            p.validate()?;
        }
        let mut bits = vec![0u32; self.config.vocab_size.div_ceil(32)];
        if params.is_some_and(|p| p.repetition_penalty != 1.0) {
            for &t in history {
                if let Some(w) = bits.get_mut(t as usize / 32) {
                    *w |= 1 << (t % 32);
                }
            }
        }
        self.gpu.write(&self.state.seen, 0, bytemuck::cast_slice(&bits));
        self.sampling = params.filter(|p| !(p.is_greedy() && p.repetition_penalty == 1.0)).cloned();
        self.sample_step = 0;
        Ok(())
    }

    /// Keep only the first `n` tokens of the KV cache (a conversation's common prefix with the
    /// next prompt): the next token fed goes to position `n`. `n = 0` is [`Qwen::reset`].
    pub fn rewind(&mut self, n: usize) -> Result<()> {
        self.discard_queued();
        if n > self.pos {
            return Err(Error::Request(format!("cannot rewind to {n} tokens: the cache holds {}", self.pos)));
        }
        if n == 0 {
            self.reset();
        } else if n < self.pos {
            // The last pass's token is not the input of position n: queue_next must not feed it.
            self.pos = n;
            self.next_on_gpu = false;
        }
        Ok(())
    }

    /// Forget the conversation: the next prompt starts at position 0.
    pub fn reset(&mut self) {
        self.discard_queued();
        self.next_on_gpu = false;
        self.pos = 0;
        self.ntk_alpha = 1.0;
        self.inv_freq = rope::inv_freq(self.config.rope_theta, self.config.head_dim);
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
        if self.pos + tokens.len() > self.state.context {
            return Err(Error::ContextFull(format!(
                "{} tokens after {} already in the cache exceed the context of {}",
                tokens.len(),
                self.pos,
                self.state.context
            )));
        }
        Ok(())
    }

    /// Feed `tokens` (any number; chunked by `max_batch`) and return what `want` asks for
    /// about the last chunk. On a fresh cache this is the prefill that fixes Qwen v1's NTK
    /// alpha for the rest of the sequence, as the reference does.
    pub async fn feed(&mut self, tokens: &[u32], want: Want) -> Result<Output> {
        self.discard_queued();
        self.check_tokens(tokens)?;
        if self.pos == 0 {
            self.ntk_alpha =
                if self.config.use_dynamic_ntk { rope::ntk_alpha(tokens.len(), self.config.seq_length) } else { 1.0 };
            let base = rope::ntk_base(self.config.rope_theta, self.ntk_alpha, self.config.head_dim);
            self.inv_freq = rope::inv_freq(base, self.config.head_dim);
        }
        let chunk = self.state.max_tokens;
        let n_chunks = tokens.len().div_ceil(chunk);
        let mut all = Vec::new();
        let mut last = Output::Nothing;
        for (i, c) in tokens.chunks(chunk).enumerate() {
            let w = if i + 1 == n_chunks || want == Want::AllLogits { want } else { Want::Nothing };
            last = self.forward(Some(c), w).await?;
            if want == Want::AllLogits {
                if let Output::Logits(l) = &last {
                    all.extend_from_slice(l);
                }
            }
        }
        Ok(if want == Want::AllLogits { Output::Logits(all) } else { last })
    }

    /// Queue the decode of one token without waiting for anything: the token is the last
    /// token pass's result, read by the GPU itself, so the pass can be submitted before that
    /// result is read back. [`Qwen::take_token`] reads each queued pass's token in order.
    /// Generation keeps one pass queued ahead this way, so the GPU never waits for a
    /// readback or for the CPU to record the next pass. Any other call ([`Qwen::feed`],
    /// [`Qwen::reset`]) first drops queued passes that were not read (their positions are
    /// freed again).
    pub async fn queue_next(&mut self) -> Result<()> {
        if !self.next_on_gpu || self.in_flight.len() >= 2 {
            return Err(Error::Request(
                "queue_next needs the previous pass to be a token pass, with at most one pass queued".into(),
            ));
        }
        if self.pos >= self.state.context {
            return Err(Error::ContextFull(format!("the context of {} tokens is full", self.state.context)));
        }
        self.forward(None, Want::QueuedToken).await.map(|_| ())
    }

    /// The token of the oldest queued pass ([`Qwen::queue_next`]), once the GPU has it.
    pub async fn take_token(&mut self) -> Result<u32> {
        let slot = self.in_flight.pop_front().ok_or_else(|| Error::Request("no pass is queued".into()))?;
        let b = self.gpu.map_read(&self.state.next_readback[slot], 4).await?;
        let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if id as usize >= self.config.vocab_size {
            return Err(Error::Gpu("no token to choose: the logits are all NaN (or, when sampling, all -inf)".into()));
        }
        Ok(id)
    }

    /// Forget queued passes that were not read: their positions are free again (whatever
    /// they write there is overwritten by the next pass), and so are their sampling steps.
    fn discard_queued(&mut self) {
        self.pos -= self.in_flight.len();
        if self.sampling.is_some() {
            self.sample_step = self.sample_step.wrapping_sub(self.in_flight.len() as u32);
        }
        self.in_flight.clear();
    }

    /// One forward pass over at most `max_batch` tokens at positions `pos..`: `tokens`, or
    /// (None) one token, the last pass's chosen token, copied on the GPU.
    async fn forward(&mut self, tokens: Option<&[u32]>, want: Want) -> Result<Output> {
        let cfg = &self.config;
        let n = tokens.map_or(1, |t| t.len());
        let pos0 = self.pos;
        let (d, ff) = (cfg.hidden_size, cfg.intermediate_size);
        let heads = Heads {
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            kv: self.state.kv,
            kv_scales: self.state.kv.scales_offset(self.state.context, cfg.num_key_value_heads, cfg.head_dim),
        };
        let s = &self.state;
        let w = &self.weights;
        let gpu = &self.gpu;

        let logn = cfg.use_logn_attn.then_some(cfg.seq_length);
        rope::fill_table(&mut self.rope_host, &self.inv_freq, pos0, n, logn);
        gpu.write(&s.rope, 0, bytemuck::cast_slice(&self.rope_host));
        if let Some(tokens) = tokens {
            gpu.write(&s.tokens, 0, bytemuck::cast_slice(tokens));
        }

        let clock = crate::bench::Stopwatch::start();
        let mut rec = Recorder::new(gpu);
        ops::embed(&mut rec, &s.tokens, n, &w.embed, &s.x)?;
        for (i, l) in w.layers.iter().enumerate() {
            // Attention block: x += o_proj(attention(rope(qkv(norm(x)))))
            ops::rms_norm(&mut rec, &s.x, 0, n, d, &l.attn_norm, cfg.rms_norm_eps, &s.xn)?;
            ops::linear(&mut rec, &s.xn, 0, n, &l.qkv, l.qkv_bias.as_ref(), &s.qkv, false)?;
            let qk_norm = l.qk_norm.as_ref().map(|b| (b, cfg.rms_norm_eps));
            ops::qkv_rope(&mut rec, heads, n, pos0, &s.qkv, &s.rope, qk_norm, &s.q, &s.k_cache[i], &s.v_cache[i])?;
            ops::attention(
                &mut rec,
                heads,
                n,
                pos0,
                &s.q,
                &s.k_cache[i],
                &s.v_cache[i],
                &s.att,
                Some(&s.att_partials),
            )?;
            ops::linear(&mut rec, &s.att, 0, n, &l.o_proj, None, &s.x, true)?;
            // MLP block: x += down(silu(gate(norm(x))) * up(norm(x)))
            ops::rms_norm(&mut rec, &s.x, 0, n, d, &l.mlp_norm, cfg.rms_norm_eps, &s.xn)?;
            ops::linear(&mut rec, &s.xn, 0, n, &l.gate_up, None, &s.gate_up, false)?;
            ops::silu_mul(&mut rec, &s.gate_up, n, ff, &s.act)?;
            ops::linear(&mut rec, &s.act, 0, n, &l.down, None, &s.x, true)?;
        }

        // The tail of the pass: only the last token goes through the final norm and the LM
        // head, unless every position's logits are wanted.
        let vocab = cfg.vocab_size;
        match want {
            Want::Nothing => {}
            Want::Token | Want::QueuedToken | Want::Logits => {
                ops::rms_norm(&mut rec, &s.x, n - 1, 1, d, &w.norm, cfg.rms_norm_eps, &s.xn)?;
                ops::linear(&mut rec, &s.xn, 0, 1, w.lm_head(), None, &s.logits, false)?;
                match (&self.sampling, want) {
                    (_, Want::Logits) => {}
                    (None, _) => ops::argmax(&mut rec, &s.logits, vocab, &s.next)?,
                    (Some(p), _) => {
                        let sp = ops::SampleParams::new(p, vocab, self.sample_step);
                        self.sample_step = self.sample_step.wrapping_add(1);
                        ops::sample(&mut rec, &s.logits, &sp, &s.seen, &s.next)?;
                    }
                }
            }
            Want::AllLogits => ops::rms_norm(&mut rec, &s.x, 0, n, d, &w.norm, cfg.rms_norm_eps, &s.xn)?,
        }
        self.last_dispatches = rec.len();
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
        if tokens.is_none() {
            enc.copy_buffer_to_buffer(&s.next, 0, &s.tokens, 0, 4);
        }
        let timestamps = self.profiler.as_ref().map(|p| p.query_set());
        rec.encode_with(&mut enc, &mut self.params_arena, Some(&mut self.bind_groups), timestamps)?;
        let profiled = self.profiler.as_ref().map(|p| {
            p.resolve(&mut enc, rec.len() as u32 + 1);
            (rec.dispatch_info(), clock.seconds())
        });

        let out = match want {
            Want::Nothing => {
                gpu.queue.submit([enc.finish()]);
                gpu.check()?;
                Output::Nothing
            }
            Want::Token | Want::QueuedToken => {
                let slot = self.next_slot;
                self.next_slot ^= 1;
                enc.copy_buffer_to_buffer(&s.next, 0, &s.next_readback[slot], 0, 4);
                gpu.queue.submit([enc.finish()]);
                self.in_flight.push_back(slot);
                Output::Nothing
            }
            Want::Logits => {
                enc.copy_buffer_to_buffer(&s.logits, 0, &s.logits_readback, 0, vocab as u64 * 4);
                gpu.queue.submit([enc.finish()]);
                let b = gpu.map_read(&s.logits_readback, vocab as u64 * 4).await?;
                Output::Logits(bytemuck::cast_slice(&b).to_vec())
            }
            Want::AllLogits => {
                // The LM head in groups of rows that fit one binding, each group copied out
                // before the next overwrites it.
                let row_bytes = vocab as u64 * 4;
                let per = ((gpu.max_binding / row_bytes) as usize).clamp(1, s.max_tokens);
                if self.logits_all.as_ref().map(|(rows, _)| *rows) != Some(per) {
                    self.logits_all = Some((per, gpu.storage("logits_all", per as u64 * row_bytes)?));
                }
                let all = &self.logits_all.as_ref().expect("allocated").1;
                let size = n as u64 * row_bytes;
                let readback = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("logits_all_readback"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                for g0 in (0..n).step_by(per) {
                    let rows = per.min(n - g0);
                    let mut head = Recorder::new(gpu);
                    ops::linear(&mut head, &s.xn, g0, rows, w.lm_head(), None, all, false)?;
                    head.encode(&mut enc)?;
                    enc.copy_buffer_to_buffer(all, 0, &readback, g0 as u64 * row_bytes, rows as u64 * row_bytes);
                }
                gpu.queue.submit([enc.finish()]);
                let b = gpu.map_read(&readback, size).await?;
                Output::Logits(bytemuck::cast_slice(&b).to_vec())
            }
        };
        self.pos += n;
        self.next_on_gpu = matches!(want, Want::Token | Want::QueuedToken);
        if let (Some(p), Some((info, encode_s))) = (&self.profiler, profiled) {
            self.last_profile = Some(PassProfile { dispatches: p.read(gpu, info).await?, encode_s });
        }
        if want == Want::Token {
            return Ok(Output::Token(self.take_token().await?));
        }
        Ok(out)
    }
}

/// Read and parse `DIR/config.json`.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_config(dir: &std::path::Path) -> Result<QwenConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(path.display(), e))?;
    QwenConfig::from_json(&text)
}

/// GPU bytes a model needs: weights, activations and KV cache.
pub fn gpu_bytes(cfg: &QwenConfig, opts: &ModelOptions) -> (u64, u64) {
    let context = opts.context_for(cfg);
    (weights::weight_bytes(cfg, opts.weights), state::state_bytes(cfg, opts.max_batch.min(context), context, opts.kv))
}
