//! The forward pass as the model reads, recorded top to bottom: embed → each layer (attention
//! block, MLP block) → final norm → LM head → the choice of the next token. Only recording:
//! what goes in (tokens, the RoPE table) and what comes back (readback) is in `mod.rs`.

use super::state::RunState;
use super::weights::{LayerWeights, QwenWeights};
use crate::config::QwenConfig;
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::ops::{self, Heads, SampleParams};

/// What the tail of the pass computes from the last token's hidden state.
#[derive(Debug, Clone, Copy)]
pub enum Head {
    /// Nothing: the pass only fills the KV cache.
    None,
    /// The last token's logits.
    Logits,
    /// The last token's logits, then the argmax of the first n into `next`.
    Argmax(usize),
    /// The last token's logits, then a draw by these parameters into `next`.
    Sample(SampleParams),
    /// The final norm of every token (the LM head runs per group of rows: see `mod.rs`).
    AllRows,
}

/// One pass: `n` tokens written to the cache at positions `pos0..`.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub n: usize,
    pub pos0: usize,
}

/// The attention geometry and KV cache layout of `cfg` in `s`.
pub fn heads(cfg: &QwenConfig, s: &RunState) -> Heads {
    Heads {
        n_heads: cfg.num_attention_heads,
        n_kv_heads: cfg.num_key_value_heads,
        head_dim: cfg.head_dim,
        kv: s.kv,
        kv_scales: s.kv.scales_offset(s.context, cfg.num_key_value_heads, cfg.head_dim),
    }
}

/// Embedding, then every layer; layer i's queries see `windows[i]` keys (0: the whole cache,
/// see [`super::window`]).
pub fn record_body(
    rec: &mut Recorder,
    cfg: &QwenConfig,
    w: &QwenWeights,
    s: &RunState,
    windows: &[usize],
    pass: Pass,
) -> Result<()> {
    if windows.len() != w.layers.len() {
        return Err(Error::Request(format!("{} windows for {} layers", windows.len(), w.layers.len())));
    }
    ops::embed(rec, &s.tokens, pass.n, &w.embed, &s.x)?;
    for (i, layer) in w.layers.iter().enumerate() {
        attention_block(rec, cfg, layer, s, i, windows[i], pass)?;
        mlp_block(rec, cfg, layer, s, pass)?;
    }
    Ok(())
}

/// `x += o_proj(attention(rope(qkv(norm(x)))))` over the last `window` keys (0: all),
/// writing this layer's K and V.
fn attention_block(
    rec: &mut Recorder,
    cfg: &QwenConfig,
    l: &LayerWeights,
    s: &RunState,
    layer: usize,
    window: usize,
    Pass { n, pos0 }: Pass,
) -> Result<()> {
    let heads = heads(cfg, s);
    let (k_cache, v_cache) = (&s.k_cache[layer], &s.v_cache[layer]);
    let xn = normed(rec, cfg, s, 0, n, &l.attn_norm)?;
    ops::linear(rec, xn.x, xn.row0, n, xn.norm, &l.qkv, l.qkv_bias.as_deref(), &s.qkv, false)?;
    let qk_norm = l.qk_norm.as_deref().map(|b| (b, cfg.rms_norm_eps));
    let partials = Some(&*s.att_partials);
    if ops::attention_decode_fits(rec.gpu(), heads, n) {
        // A decode step: RoPE, the cache write and attention in one kernel.
        ops::attention_decode(
            rec, heads, n, pos0, &s.qkv, &s.rope, qk_norm, k_cache, v_cache, &s.att, partials, window,
        )?;
    } else {
        ops::qkv_rope(rec, heads, n, pos0, &s.qkv, &s.rope, qk_norm, &s.q, k_cache, v_cache)?;
        ops::attention(rec, heads, n, pos0, &s.q, k_cache, v_cache, &s.att, partials, window)?;
    }
    ops::linear(rec, &s.att, 0, n, None, &l.o_proj, None, &s.x, true)
}

/// The input of a linear layer that starts with RMSNorm: rows of `x` (from `row0`), and the
/// norm the kernel applies on the fly, if any.
struct Normed<'a> {
    x: &'a wgpu::Buffer,
    row0: usize,
    norm: Option<(&'a wgpu::Buffer, f64)>,
}

/// RMSNorm(x; weight) of rows `row0..row0 + n` as a linear layer's input: x itself with the
/// norm to apply on the fly where the tuning fuses it, else `xn` (from row 0) after a norm
/// kernel.
fn normed<'a>(
    rec: &mut Recorder,
    cfg: &QwenConfig,
    s: &'a RunState,
    row0: usize,
    n: usize,
    weight: &'a wgpu::Buffer,
) -> Result<Normed<'a>> {
    if rec.gpu().tuning.fused_norm {
        return Ok(Normed { x: &s.x, row0, norm: Some((weight, cfg.rms_norm_eps)) });
    }
    ops::rms_norm(rec, &s.x, row0, n, cfg.hidden_size, weight, cfg.rms_norm_eps, &s.xn)?;
    Ok(Normed { x: &s.xn, row0: 0, norm: None })
}

/// `x += down(silu(gate(norm(x))) * up(norm(x)))`.
fn mlp_block(rec: &mut Recorder, cfg: &QwenConfig, l: &LayerWeights, s: &RunState, Pass { n, .. }: Pass) -> Result<()> {
    let xn = normed(rec, cfg, s, 0, n, &l.mlp_norm)?;
    if rec.gpu().tuning.fused_swiglu && ops::swiglu_fits(&l.gate_up) {
        ops::swiglu(rec, xn.x, xn.row0, n, xn.norm, &l.gate_up, &s.act)?;
    } else {
        ops::linear(rec, xn.x, xn.row0, n, xn.norm, &l.gate_up, None, &s.gate_up, false)?;
        ops::silu_mul(rec, &s.gate_up, n, cfg.intermediate_size, &s.act)?;
    }
    ops::linear(rec, &s.act, 0, n, None, &l.down, None, &s.x, true)
}

/// The tail: only the last token goes through the final norm and the LM head, unless every
/// position's logits are wanted.
pub fn record_head(
    rec: &mut Recorder,
    cfg: &QwenConfig,
    w: &QwenWeights,
    s: &RunState,
    Pass { n, .. }: Pass,
    head: &Head,
) -> Result<()> {
    let (d, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
    match head {
        Head::None => return Ok(()),
        Head::AllRows => return ops::rms_norm(rec, &s.x, 0, n, d, &w.norm, eps, &s.xn),
        _ => {}
    }
    let xn = normed(rec, cfg, s, n - 1, 1, &w.norm)?;
    ops::linear(rec, xn.x, xn.row0, 1, xn.norm, w.lm_head(), None, &s.logits, false)?;
    match head {
        Head::Argmax(n) => ops::argmax(rec, &s.logits, (*n).min(cfg.vocab_size), &s.next),
        Head::Sample(p) => ops::sample(rec, p, &s.sample_buffers()),
        _ => Ok(()),
    }
}
