//! Every activation buffer and the KV cache, allocated once when the model loads.

use crate::config::QwenConfig;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuBuffer};

pub struct RunState {
    /// Most tokens one forward pass takes (longer prompts are fed in chunks).
    pub max_tokens: usize,
    /// KV cache length in tokens.
    pub context: usize,
    pub kv: KvFormat,
    pub tokens: GpuBuffer,             // [max_tokens] u32
    pub x: GpuBuffer,                  // [max_tokens, hidden] residual stream
    pub xn: GpuBuffer,                 // [max_tokens, hidden] normalised x
    pub qkv: GpuBuffer,                // [max_tokens, q_dim + 2 kv_dim]
    pub q: GpuBuffer,                  // [max_tokens, q_dim] rotated queries
    pub att: GpuBuffer,                // [max_tokens, q_dim] attention output
    pub att_partials: GpuBuffer,       // split-K attention partials (ops::attention_partials_bytes)
    pub gate_up: GpuBuffer,            // [max_tokens, 2 intermediate] gate | up
    pub act: GpuBuffer,                // [max_tokens, intermediate] silu(gate) * up
    pub rope: GpuBuffer,               // [max_tokens, head_dim + 1] cos | sin | q scale
    pub logits: GpuBuffer,             // [vocab] last token's logits
    pub next: GpuBuffer,               // [4] u32: the chosen token
    pub seen: GpuBuffer,               // [ceil(vocab / 32)] u32: tokens the repetition penalty hits
    pub next_readback: [GpuBuffer; 2], // [4] u32, MAP_READ: two, for a pass queued ahead
    pub logits_readback: GpuBuffer,    // [vocab] f32, MAP_READ
    pub k_cache: Vec<GpuBuffer>,       // per layer [context, kv_dim]
    pub v_cache: Vec<GpuBuffer>,       // per layer [context, kv_dim]
    /// What only some generations need (penalty counts, logit bias, logprobs), allocated on
    /// first use and kept: not part of [`plan`].
    pub sampler: SamplerBuffers,
}

/// The sampler's optional buffers and which of them the current generation uses (set by
/// [`crate::Qwen::set_sampling`] and [`crate::Qwen::set_logprobs`]). A generation that asks for
/// none of these allocates nothing and runs exactly the kernels it ran before they existed.
#[derive(Default)]
pub struct SamplerBuffers {
    /// `[vocab]` u32: times each token was generated (frequency/presence penalties).
    pub counts: Option<GpuBuffer>,
    /// `[vocab]` f32: the logit bias, dense.
    pub bias: Option<GpuBuffer>,
    /// `[vocab]` u32: the sampling kernel's sort keys, so the raw logits survive the draw.
    pub keys: Option<GpuBuffer>,
    /// `[ops::logprobs_words(MAX_TOP_LOGPROBS)]` u32: what the logprobs kernel writes.
    pub logprobs: Option<GpuBuffer>,
    /// MAP_READ copies of `logprobs`, one per readback slot (like `next_readback`).
    pub logprobs_readback: Option<[GpuBuffer; 2]>,
    pub use_counts: bool,
    pub use_bias: bool,
    pub use_keys: bool,
}

/// `slot` holding a `[vocab]`-word buffer named `label`, allocated if it is not yet.
fn vocab_buffer<'a>(gpu: &Gpu, slot: &'a mut Option<GpuBuffer>, label: &str, vocab: usize) -> Result<&'a GpuBuffer> {
    if slot.is_none() {
        *slot = Some(gpu.storage(label, vocab as u64 * 4)?);
    }
    Ok(slot.as_ref().expect("just allocated"))
}

impl SamplerBuffers {
    /// The counts buffer, allocated if needed.
    pub fn counts(&mut self, gpu: &Gpu, vocab: usize) -> Result<&GpuBuffer> {
        vocab_buffer(gpu, &mut self.counts, "sample_counts", vocab)
    }

    /// The bias table, allocated if needed.
    pub fn bias(&mut self, gpu: &Gpu, vocab: usize) -> Result<&GpuBuffer> {
        vocab_buffer(gpu, &mut self.bias, "sample_bias", vocab)
    }

    /// Allocate the key scratch and the logprobs buffers if needed.
    pub fn ensure_logprobs(&mut self, gpu: &Gpu, vocab: usize) -> Result<()> {
        vocab_buffer(gpu, &mut self.keys, "sample_keys", vocab)?;
        let bytes = crate::ops::logprobs_words(crate::sampler::MAX_TOP_LOGPROBS) as u64 * 4;
        if self.logprobs.is_none() {
            self.logprobs = Some(gpu.storage("logprobs", bytes)?);
        }
        if self.logprobs_readback.is_none() {
            self.logprobs_readback = Some([
                gpu.readback_buffer("logprobs_readback0", bytes),
                gpu.readback_buffer("logprobs_readback1", bytes),
            ]);
        }
        Ok(())
    }
}

/// One buffer [`RunState::new`] allocates: its label, bytes asked for, and whether it is a
/// MAP_READ readback buffer (else storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBuffer {
    pub label: String,
    pub bytes: u64,
    pub readback: bool,
}

/// Every buffer of the run state, in the order [`RunState::new`] allocates them: the one
/// list both the allocation and [`state_bytes`] read.
pub fn plan(cfg: &QwenConfig, max_tokens: usize, context: usize, kv: KvFormat) -> Vec<PlannedBuffer> {
    let t = max_tokens as u64;
    let f32s = |label: &str, n: u64| PlannedBuffer { label: label.into(), bytes: n * 4, readback: false };
    let readback = |label: &str, bytes: u64| PlannedBuffer { label: label.into(), bytes, readback: true };
    let (d, ff, vocab) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let mut p = vec![
        f32s("tokens", t),
        f32s("x", t * d),
        f32s("xn", t * d),
        f32s("qkv", t * cfg.qkv_dim() as u64),
        f32s("q", t * cfg.q_dim() as u64),
        f32s("att", t * cfg.q_dim() as u64),
        PlannedBuffer {
            label: "att_partials".into(),
            bytes: crate::ops::attention_partials_bytes(cfg.num_attention_heads, cfg.head_dim),
            readback: false,
        },
        f32s("gate_up", t * 2 * ff),
        f32s("act", t * ff),
        f32s("rope", t * (cfg.head_dim as u64 + 1)),
        f32s("logits", vocab),
        f32s("next", 4),
        PlannedBuffer { label: "seen".into(), bytes: seen_bytes(cfg.vocab_size), readback: false },
        readback("next_readback0", 16),
        readback("next_readback1", 16),
        readback("logits_readback", vocab * 4),
    ];
    let kv_bytes = kv.layer_bytes(context, cfg.num_key_value_heads, cfg.head_dim);
    for i in 0..cfg.num_hidden_layers {
        p.push(PlannedBuffer { label: format!("k_cache{i}"), bytes: kv_bytes, readback: false });
        p.push(PlannedBuffer { label: format!("v_cache{i}"), bytes: kv_bytes, readback: false });
    }
    p
}

/// Bytes of activations + KV cache for `cfg` at these sizes: exactly what [`RunState::new`]
/// allocates (the same [`plan`], each buffer rounded as [`Gpu::storage`] rounds it).
pub fn state_bytes(cfg: &QwenConfig, max_tokens: usize, context: usize, kv: KvFormat) -> u64 {
    plan(cfg, max_tokens, context, kv).iter().fold(0u64, |a, b| a.saturating_add(crate::gpu::buffer_size(b.bytes)))
}

pub use crate::ops::KvFormat;

/// Bytes of the sampler's bitset of penalised tokens.
pub fn seen_bytes(vocab: usize) -> u64 {
    vocab.div_ceil(32) as u64 * 4
}

/// Bytes of the KV cache for `context` tokens.
pub fn kv_cache_bytes(cfg: &QwenConfig, context: usize, kv: KvFormat) -> u64 {
    (2 * cfg.num_hidden_layers as u64).saturating_mul(kv.layer_bytes(context, cfg.num_key_value_heads, cfg.head_dim))
}

impl RunState {
    pub fn new(gpu: &Gpu, cfg: &QwenConfig, max_tokens: usize, context: usize, kv: KvFormat) -> Result<Self> {
        if max_tokens == 0 || context == 0 {
            return Err(Error::Request("context and batch size must be positive".into()));
        }
        if kv != KvFormat::F32 && !cfg.head_dim.is_multiple_of(4) {
            return Err(Error::Request(format!(
                "a {} KV cache needs head_dim % 4 == 0, not {}",
                kv.name(),
                cfg.head_dim
            )));
        }
        let kv_bytes = kv.layer_bytes(context, cfg.num_key_value_heads, cfg.head_dim);
        if kv_bytes > gpu.max_binding {
            return Err(Error::Gpu(format!(
                "a KV cache of {context} tokens needs {kv_bytes} bytes per layer, above this adapter's storage binding limit of {} bytes; use a shorter context",
                gpu.max_binding
            )));
        }
        let mut buffers = std::collections::VecDeque::new();
        for b in plan(cfg, max_tokens, context, kv) {
            let buf = if b.readback { gpu.readback_buffer(&b.label, b.bytes) } else { gpu.storage(&b.label, b.bytes)? };
            buffers.push_back((b.label, buf));
        }
        // Fields take the planned buffers in order, each checked by its label.
        let mut take = |label: &str| -> GpuBuffer {
            let (l, b) = buffers.pop_front().expect("the plan has every field");
            debug_assert_eq!(l, label, "RunState fields and plan() disagree");
            b
        };
        let mut state = RunState {
            max_tokens,
            context,
            kv,
            tokens: take("tokens"),
            x: take("x"),
            xn: take("xn"),
            qkv: take("qkv"),
            q: take("q"),
            att: take("att"),
            att_partials: take("att_partials"),
            gate_up: take("gate_up"),
            act: take("act"),
            rope: take("rope"),
            logits: take("logits"),
            next: take("next"),
            seen: take("seen"),
            next_readback: [take("next_readback0"), take("next_readback1")],
            logits_readback: take("logits_readback"),
            k_cache: Vec::with_capacity(cfg.num_hidden_layers),
            v_cache: Vec::with_capacity(cfg.num_hidden_layers),
            sampler: SamplerBuffers::default(),
        };
        for i in 0..cfg.num_hidden_layers {
            state.k_cache.push(take(&format!("k_cache{i}")));
            state.v_cache.push(take(&format!("v_cache{i}")));
        }
        Ok(state)
    }
}

impl RunState {
    /// The buffers the sampling kernel binds for the current generation (see
    /// [`SamplerBuffers`]): the optional ones only where that generation uses them.
    pub fn sample_buffers(&self) -> crate::ops::SampleBuffers<'_> {
        let x = &self.sampler;
        fn pick(on: bool, b: &Option<GpuBuffer>) -> Option<&wgpu::Buffer> {
            b.as_deref().filter(|_| on)
        }
        crate::ops::SampleBuffers {
            logits: &self.logits,
            seen: &self.seen,
            counts: pick(x.use_counts, &x.counts),
            bias: pick(x.use_bias, &x.bias),
            keys: pick(x.use_keys, &x.keys),
            out: &self.next,
        }
    }
}
