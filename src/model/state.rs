//! Every activation buffer and the KV cache, allocated once when the model loads.

use crate::config::QwenConfig;
use crate::error::{Error, Result};
use crate::gpu::Gpu;

pub struct RunState {
    /// Most tokens one forward pass takes (longer prompts are fed in chunks).
    pub max_tokens: usize,
    /// KV cache length in tokens.
    pub context: usize,
    pub kv: KvFormat,
    pub tokens: wgpu::Buffer,             // [max_tokens] u32
    pub x: wgpu::Buffer,                  // [max_tokens, hidden] residual stream
    pub xn: wgpu::Buffer,                 // [max_tokens, hidden] normalised x
    pub qkv: wgpu::Buffer,                // [max_tokens, q_dim + 2 kv_dim]
    pub q: wgpu::Buffer,                  // [max_tokens, q_dim] rotated queries
    pub att: wgpu::Buffer,                // [max_tokens, q_dim] attention output
    pub att_partials: wgpu::Buffer,       // split-K attention partials (ops::attention_partials_bytes)
    pub gate_up: wgpu::Buffer,            // [max_tokens, 2 intermediate] gate | up
    pub act: wgpu::Buffer,                // [max_tokens, intermediate] silu(gate) * up
    pub rope: wgpu::Buffer,               // [max_tokens, head_dim + 1] cos | sin | q scale
    pub logits: wgpu::Buffer,             // [vocab] last token's logits
    pub next: wgpu::Buffer,               // [4] u32: the chosen token
    pub seen: wgpu::Buffer,               // [ceil(vocab / 32)] u32: tokens the repetition penalty hits
    pub next_readback: [wgpu::Buffer; 2], // [4] u32, MAP_READ: two, for a pass queued ahead
    pub logits_readback: wgpu::Buffer,    // [vocab] f32, MAP_READ
    pub k_cache: Vec<wgpu::Buffer>,       // per layer [context, kv_dim]
    pub v_cache: Vec<wgpu::Buffer>,       // per layer [context, kv_dim]
}

/// Bytes of activations + KV cache for `cfg` at these sizes (what [`RunState::new`] allocates,
/// readback buffers included).
pub fn state_bytes(cfg: &QwenConfig, max_tokens: usize, context: usize, kv: KvFormat) -> u64 {
    let t = max_tokens as u64;
    let per_token =
        2 * cfg.hidden_size + cfg.qkv_dim() + 2 * cfg.q_dim() + 3 * cfg.intermediate_size + cfg.head_dim + 1;
    let acts = t * 4 + t * per_token as u64 * 4 + 2 * cfg.vocab_size as u64 * 4 + 48 + seen_bytes(cfg.vocab_size);
    let partials = crate::ops::attention_partials_bytes(cfg.num_attention_heads, cfg.head_dim);
    acts + partials + kv_cache_bytes(cfg, context, kv)
}

pub use crate::ops::KvFormat;

/// Bytes of the sampler's bitset of penalised tokens.
pub fn seen_bytes(vocab: usize) -> u64 {
    vocab.div_ceil(32) as u64 * 4
}

/// Bytes of the KV cache for `context` tokens.
pub fn kv_cache_bytes(cfg: &QwenConfig, context: usize, kv: KvFormat) -> u64 {
    2 * cfg.num_hidden_layers as u64 * kv.layer_bytes(context, cfg.num_key_value_heads, cfg.head_dim)
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
        let f = |label: &str, n: usize| gpu.storage(label, n as u64 * 4);
        let t = max_tokens;
        let readback = |label: &str, size: u64| gpu.readback_buffer(label, size);
        let kv_bytes = kv.layer_bytes(context, cfg.num_key_value_heads, cfg.head_dim);
        if kv_bytes > gpu.max_binding {
            return Err(Error::Gpu(format!(
                "a KV cache of {context} tokens needs {kv_bytes} bytes per layer, above this adapter's storage binding limit of {} bytes; use a shorter context",
                gpu.max_binding
            )));
        }
        let mut k_cache = Vec::new();
        let mut v_cache = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            k_cache.push(gpu.storage(&format!("k_cache{i}"), kv_bytes)?);
            v_cache.push(gpu.storage(&format!("v_cache{i}"), kv_bytes)?);
        }
        Ok(RunState {
            max_tokens,
            context,
            kv,
            tokens: f("tokens", t)?,
            x: f("x", t * cfg.hidden_size)?,
            xn: f("xn", t * cfg.hidden_size)?,
            qkv: f("qkv", t * cfg.qkv_dim())?,
            q: f("q", t * cfg.q_dim())?,
            att: f("att", t * cfg.q_dim())?,
            att_partials: gpu
                .storage("att_partials", crate::ops::attention_partials_bytes(cfg.num_attention_heads, cfg.head_dim))?,
            gate_up: f("gate_up", t * 2 * cfg.intermediate_size)?,
            act: f("act", t * cfg.intermediate_size)?,
            rope: f("rope", t * (cfg.head_dim + 1))?,
            logits: f("logits", cfg.vocab_size)?,
            next: f("next", 4)?,
            seen: gpu.storage("seen", seen_bytes(cfg.vocab_size))?,
            next_readback: [readback("next_readback0", 16), readback("next_readback1", 16)],
            logits_readback: readback("logits_readback", cfg.vocab_size as u64 * 4),
            k_cache,
            v_cache,
        })
    }
}
