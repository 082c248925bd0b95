//! One function per kernel. Each records a dispatch (or one per weight chunk) into a
//! [`Recorder`]; shapes are in the doc comments, activations are f32, weights f16 pairs.
//! The uniform parameter structs mirror the `Params` struct of their WGSL file.

use crate::error::{Error, Result};
use crate::gpu::matrix::WeightFormat;
use crate::gpu::{Binding, GpuMatrix, Recorder, ShaderKey};

pub use crate::gpu::tuning::{NORM_WG, WG};
/// Tile edge of the prefill matmul (TILE x TILE = 256 threads).
pub const TILE: u32 = 16;
/// Up to this many tokens, [`linear`] uses the mat-vec kernel.
pub const MATVEC_MAX_TOKENS: usize = 2;

use Binding::{Read, ReadWrite as Rw};

fn groups(n: usize, per: u32) -> Result<u32> {
    u32::try_from(n.div_ceil(per as usize)).map_err(|_| Error::Gpu(format!("dispatch of {n} threads is too large")))
}

/// A size or offset as the u32 the kernels take; an error (never a silent truncation) past 2^32.
fn u(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Gpu(format!("{n} does not fit the kernels' 32-bit sizes and offsets")))
}

/// Select the weight reader of `common/weights.wgsl`: W_Q8, W_Q4 (with W_QUANT, their
/// separate scales), or W_GGML with the block type (W_Q4_1, W_Q5_0, W_Q5_1, W_Q4_K, W_Q5_K,
/// W_Q6_K); f16 pairs by default.
fn weight_format(key: ShaderKey, f: WeightFormat) -> ShaderKey {
    use crate::weights::ggml::GgmlType as G;
    let t = f.ggml();
    key.flag("W_Q8", f == WeightFormat::Q8)
        .flag("W_Q4", f == WeightFormat::Q4)
        .flag("W_QUANT", f == WeightFormat::Q8 || f == WeightFormat::Q4)
        .flag("W_GGML", t.is_some())
        .flag("W_Q4_1", t == Some(G::Q4_1))
        .flag("W_Q5_0", t == Some(G::Q5_0))
        .flag("W_Q5_1", t == Some(G::Q5_1))
        .flag("W_Q4_K", t == Some(G::Q4K))
        .flag("W_Q5_K", t == Some(G::Q5K))
        .flag("W_Q6_K", t == Some(G::Q6K))
        .flag("W_KQ", matches!(t, Some(G::Q4K | G::Q5K)))
}

crate::kernel_params! {
    pub struct EmbedParams {
        pub n_tokens: u32,
        pub cols: u32,
        pub row0: u32,
        pub rows: u32,
        pub stride: u32,
        pub scales: u32,
        pub _pad: [u32; 2],
    }
}

/// `out[t, :] = table[tokens[t], :]`. tokens: u32 `[n_tokens]`, table: `[vocab, hidden]`,
/// out: `[n_tokens, hidden]`. Token ids must already be checked to be `< vocab`.
pub fn embed(
    rec: &mut Recorder,
    tokens: &wgpu::Buffer,
    n_tokens: usize,
    table: &GpuMatrix,
    out: &wgpu::Buffer,
) -> Result<()> {
    for c in &table.chunks {
        let key = weight_format(ShaderKey::new("embed").def("WG", WG), c.format);
        let k = rec.gpu().kernel(&key, &[Read, Read, Rw])?;
        let p = EmbedParams {
            n_tokens: u(n_tokens)?,
            cols: u(table.cols)?,
            row0: u(c.row0)?,
            rows: u(c.rows)?,
            stride: u(c.stride)?,
            scales: u(c.scales_offset())?,
            _pad: [0; 2],
        };
        rec.dispatch(&k, &p, &[tokens, &c.buffer, out], groups(n_tokens * table.cols, WG)?)?;
    }
    Ok(())
}

crate::kernel_params! {
    pub struct RmsNormParams {
        pub rows: u32,
        pub cols: u32,
        pub in_row0: u32,
        pub eps: f32,
    }
}

/// `out[r, :] = x[in_row0 + r, :] * rsqrt(mean(x^2) + eps) * w` for `rows` rows of `cols`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(
    rec: &mut Recorder,
    x: &wgpu::Buffer,
    in_row0: usize,
    rows: usize,
    cols: usize,
    w: &wgpu::Buffer,
    eps: f64,
    out: &wgpu::Buffer,
) -> Result<()> {
    let key = ShaderKey::new("rms_norm").def("WG", rec.gpu().tuning.norm_wg).flag("VEC4", cols.is_multiple_of(4));
    let k = rec.gpu().kernel(&key, &[Read, Read, Rw])?;
    let p = RmsNormParams { rows: u(rows)?, cols: u(cols)?, in_row0: u(in_row0)?, eps: eps as f32 };
    rec.dispatch(&k, &p, &[x, w, out], u(rows)?)
}

crate::kernel_params! {
    pub struct LinearParams {
        pub n_tokens: u32,
        pub cols: u32,
        pub rows: u32,
        pub stride: u32,
        pub out_cols: u32,
        pub row0: u32,
        pub x_row0: u32,
        pub scales: u32,
        /// With a norm: the RMSNorm epsilon.
        pub eps: f32,
        /// With SwiGLU: the chunk row of the up projection's first row.
        pub up_row: u32,
        pub _pad: [u32; 2],
    }
}

/// Which kernel computes a linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearKernel {
    /// One thread per output row for one token, or [`BLOCK_TOKENS`] tokens above
    /// [`MATVEC_MAX_TOKENS`]: any width, no barriers (CPU adapters without subgroups, and
    /// the fallback for f16 widths that are not a multiple of 8).
    MatVec,
    /// [`crate::gpu::Gpu::block_rows`] rows per workgroup, threads along the rows with 16-byte loads, the sums
    /// reduced through workgroup memory (widths % 8 == 0).
    Block,
    /// [`LinearKernel::Block`] reduced with subgroupAdd (adapters with fixed-size subgroups).
    SubgroupBlock,
    /// Tiled through workgroup memory: each weight tile is reused by TILE tokens.
    Tiled,
}

/// Tokens per workgroup of the mat-vecs above [`MATVEC_MAX_TOKENS`] tokens: each weight
/// is loaded once for this many.
pub const BLOCK_TOKENS: u32 = 8;

/// Whether `kind` can run `w` on this GPU.
pub fn linear_fits(gpu: &crate::gpu::Gpu, kind: LinearKernel, w: &GpuMatrix) -> bool {
    match kind {
        LinearKernel::MatVec | LinearKernel::Tiled => true,
        // 16-byte rows; quantized widths are whole groups of 64 already.
        LinearKernel::Block => w.cols.is_multiple_of(8),
        LinearKernel::SubgroupBlock => w.cols.is_multiple_of(8) && gpu.subgroup_size.is_some_and(|sg| sg <= WG),
    }
}

/// Up to this many tokens, GPUs run [`linear`] through the block mat-vec ([`BLOCK_TOKENS`]
/// tokens a workgroup, every weight read once per block) rather than the tiled matmul: a chat
/// turn's few new tokens must not cost more each than a decoded one. Not yet tuned on a GPU.
pub const SMALL_BATCH_TOKENS: usize = 32;

/// The kernel [`linear`] runs `w` with for `n_tokens` tokens on this adapter.
/// - Up to [`MATVEC_MAX_TOKENS`] (decode): a mat-vec, one token at a time.
/// - With `tuning.block_prefill` (the default on CPU adapters, where barriers cost more than
///   re-reading weights): always a mat-vec, [`BLOCK_TOKENS`] tokens at a time: the subgroup
///   block one where there are subgroups (lavapipe), else one thread per row (SwiftShader).
/// - Else (GPUs): the block mat-vec up to [`SMALL_BATCH_TOKENS`] tokens, the tiled matmul above.
pub fn linear_kernel(gpu: &crate::gpu::Gpu, n_tokens: usize, w: &GpuMatrix) -> LinearKernel {
    let cpu = gpu.is_cpu();
    let tiled = n_tokens > MATVEC_MAX_TOKENS
        && !gpu.tuning.block_prefill
        && (n_tokens > SMALL_BATCH_TOKENS || !linear_fits(gpu, LinearKernel::Block, w));
    if tiled {
        return LinearKernel::Tiled;
    }
    // Without subgroups the block kernel reduces through workgroup barriers, which CPU
    // adapters pay dearly for: they keep one thread per row.
    [LinearKernel::SubgroupBlock, LinearKernel::Block]
        .into_iter()
        .find(|&k| linear_fits(gpu, k, w) && (k == LinearKernel::SubgroupBlock || !cpu))
        .unwrap_or(LinearKernel::MatVec)
}

/// A linear layer `out[t, :] (+)= w · norm(x[x_row0 + t, :]) + bias`.
/// x: `[.., w.cols]`, w: `[rows, cols]`, bias: `[rows]`, out: `[n_tokens, w.rows]`.
/// With `norm` = (weight `[cols]`, eps) the input rows go through RMSNorm first, inside the
/// kernel (`x * rsqrt(mean(x^2) + eps) * weight`, as [`rms_norm`]); else as they are.
/// With `accumulate` the result is added to `out` (the residual add).
#[allow(clippy::too_many_arguments)]
pub fn linear(
    rec: &mut Recorder,
    x: &wgpu::Buffer,
    x_row0: usize,
    n_tokens: usize,
    norm: Option<(&wgpu::Buffer, f64)>,
    w: &GpuMatrix,
    bias: Option<&wgpu::Buffer>,
    out: &wgpu::Buffer,
    accumulate: bool,
) -> Result<()> {
    let kind = linear_kernel(rec.gpu(), n_tokens, w);
    linear_with(rec, kind, x, x_row0, n_tokens, norm, w, bias, out, accumulate)
}

/// [`linear`] with an explicit kernel choice (tests run each on the same shapes).
#[allow(clippy::too_many_arguments)]
pub fn linear_with(
    rec: &mut Recorder,
    kind: LinearKernel,
    x: &wgpu::Buffer,
    x_row0: usize,
    n_tokens: usize,
    norm: Option<(&wgpu::Buffer, f64)>,
    w: &GpuMatrix,
    bias: Option<&wgpu::Buffer>,
    out: &wgpu::Buffer,
    accumulate: bool,
) -> Result<()> {
    let epilogue = Epilogue { bias, accumulate, swiglu: false };
    linear_impl(rec, kind, x, x_row0, n_tokens, norm, w, out, epilogue)
}

/// Whether [`swiglu`] can run `gate_up`: the gate and up rows in one buffer.
pub fn swiglu_fits(gate_up: &GpuMatrix) -> bool {
    gate_up.chunks.len() == 1 && gate_up.rows.is_multiple_of(2)
}

/// The MLP's first half in one kernel: `out[t, i] = silu(g_i) * u_i` where `g` and `u` are
/// rows `i` and `width + i` of `gate_up` `[2 width, cols]` times `norm(x[x_row0 + t, :])`.
/// out: `[n_tokens, width]`. Needs [`swiglu_fits`]; else [`linear`] and [`silu_mul`].
#[allow(clippy::too_many_arguments)]
pub fn swiglu(
    rec: &mut Recorder,
    x: &wgpu::Buffer,
    x_row0: usize,
    n_tokens: usize,
    norm: Option<(&wgpu::Buffer, f64)>,
    gate_up: &GpuMatrix,
    out: &wgpu::Buffer,
) -> Result<()> {
    let kind = linear_kernel(rec.gpu(), n_tokens, gate_up);
    swiglu_with(rec, kind, x, x_row0, n_tokens, norm, gate_up, out)
}

/// [`swiglu`] with an explicit kernel choice.
#[allow(clippy::too_many_arguments)]
pub fn swiglu_with(
    rec: &mut Recorder,
    kind: LinearKernel,
    x: &wgpu::Buffer,
    x_row0: usize,
    n_tokens: usize,
    norm: Option<(&wgpu::Buffer, f64)>,
    gate_up: &GpuMatrix,
    out: &wgpu::Buffer,
) -> Result<()> {
    if !swiglu_fits(gate_up) {
        return Err(Error::Gpu(format!(
            "the fused SwiGLU kernel needs the {}-row gate/up projection in one buffer and an even row count",
            gate_up.rows
        )));
    }
    let epilogue = Epilogue { bias: None, accumulate: false, swiglu: true };
    linear_impl(rec, kind, x, x_row0, n_tokens, norm, gate_up, out, epilogue)
}

/// What a linear kernel does with its sums.
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    bias: Option<&'a wgpu::Buffer>,
    accumulate: bool,
    /// Pair row i with row rows/2 + i into silu(gate) * up (the matrix in one chunk).
    swiglu: bool,
}

#[allow(clippy::too_many_arguments)]
fn linear_impl(
    rec: &mut Recorder,
    kind: LinearKernel,
    x: &wgpu::Buffer,
    x_row0: usize,
    n_tokens: usize,
    norm: Option<(&wgpu::Buffer, f64)>,
    w: &GpuMatrix,
    out: &wgpu::Buffer,
    Epilogue { bias, accumulate, swiglu }: Epilogue,
) -> Result<()> {
    if !linear_fits(rec.gpu(), kind, w) {
        return Err(Error::Gpu(format!(
            "the {kind:?} linear kernel cannot run a {}-wide matrix on this adapter (block kernels need a width % 8 == 0; subgroup ones fixed-size subgroups)",
            w.cols
        )));
    }
    // Weight rows a block mat-vec workgroup reads: with SwiGLU an even count, half gate rows
    // and half up rows, for half as many outputs.
    let rows = rec.gpu().tuning.block_rows;
    let rows = if swiglu { rows.max(2).next_multiple_of(2) } else { rows };
    let out_rows_per_block = if swiglu { rows / 2 } else { rows };
    let tokens = if n_tokens > MATVEC_MAX_TOKENS { BLOCK_TOKENS } else { 1 };
    let block = |wg: u32| {
        ShaderKey::new("matvec_block")
            .def("WG", wg)
            .def("ROWS", rows)
            .def("TOKENS", tokens)
            .flag("MULTI", tokens > 1)
            .flag("VEC4_IO", true)
    };
    let key = match kind {
        LinearKernel::MatVec => ShaderKey::new("matvec").def("WG", WG).def("TOKENS", tokens).flag("MULTI", tokens > 1),
        LinearKernel::Block => block(WG).def("SUM_UNTIL", 8),
        LinearKernel::SubgroupBlock => {
            let (sg, wg) = (rec.gpu().subgroup_size.unwrap_or(0), rec.gpu().tuning.block_wg);
            block(wg).def("SG", sg).flag("ONE_SUBGROUP", wg == sg)
        }
        LinearKernel::Tiled => ShaderKey::new("matmul").def("TILE", TILE).def("TILE_PAD", TILE + 1),
    };
    let key = key
        .flag("BIAS", bias.is_some())
        .flag("NORM", norm.is_some())
        .flag("SWIGLU", swiglu)
        .flag("ACCUMULATE", accumulate);
    // x, w, then bias and the norm weight where there are, then out.
    let (mut bindings, mut buffers, mut n) = ([Read; 5], [x; 5], 2); // buffers[1]: each chunk's
    for b in [bias, norm.map(|n| n.0)].into_iter().flatten() {
        buffers[n] = b;
        n += 1;
    }
    (bindings[n], buffers[n]) = (Rw, out);
    let (bindings, buffers) = (&bindings[..=n], &mut buffers[..=n]);
    for c in &w.chunks {
        // The chunk's weight reader; the one-row mat-vec reads x in vec4s for every format
        // but f16 (whose widths may be odd).
        let key = weight_format(key.clone(), c.format);
        let key = if kind == LinearKernel::MatVec { key.flag("VEC4_IO", c.format != WeightFormat::F16) } else { key };
        let k = rec.gpu().kernel(&key, bindings)?;
        // Output rows of this chunk (with SwiGLU the one chunk's gate rows) and the width of
        // an output row.
        let (out_rows, out_cols) = if swiglu { (c.rows / 2, w.rows / 2) } else { (c.rows, w.rows) };
        let p = LinearParams {
            n_tokens: u(n_tokens)?,
            cols: u(w.cols)?,
            rows: u(out_rows)?,
            stride: u(c.stride)?,
            out_cols: u(out_cols)?,
            row0: u(c.row0)?,
            x_row0: u(x_row0)?,
            scales: u(c.scales_offset())?,
            eps: norm.map_or(0.0, |n| n.1 as f32),
            up_row: u(if swiglu { out_rows } else { 0 })?,
            _pad: [0; 2],
        };
        let n_groups = match kind {
            LinearKernel::MatVec => u(n_tokens.div_ceil(tokens as usize) * out_rows.div_ceil(WG as usize))?,
            LinearKernel::Tiled => u(n_tokens.div_ceil(TILE as usize) * out_rows.div_ceil(TILE as usize))?,
            LinearKernel::Block | LinearKernel::SubgroupBlock => {
                u(n_tokens.div_ceil(tokens as usize) * out_rows.div_ceil(out_rows_per_block as usize))?
            }
        };
        buffers[1] = &c.buffer;
        rec.dispatch(&k, &p, buffers, n_groups)?;
    }
    Ok(())
}

crate::kernel_params! {
    /// `qkv_rope.wgsl`'s parameters.
    pub struct RopeParams {
        pub n_tokens: u32,
        pub pos0: u32,
        pub n_heads: u32,
        pub n_kv_heads: u32,
        pub head_dim: u32,
        /// The q/k norm epsilon (Qwen3).
        pub eps: f32,
        pub kv_scales: u32,
        pub _pad: [u32; 1],
    }
}

crate::kernel_params! {
    /// `attention.wgsl`'s parameters.
    pub struct AttentionParams {
        pub n_tokens: u32,
        pub pos0: u32,
        pub n_heads: u32,
        pub n_kv_heads: u32,
        pub head_dim: u32,
        /// The score scale, 1 / sqrt(head_dim).
        pub scale: f32,
        pub kv_scales: u32,
        /// Keys per split (split-K); 0 otherwise.
        pub chunk: u32,
        /// Keys each query sees, itself included (0: the whole cache): see [`crate::model::window`].
        pub window: u32,
        /// `attention_decode.wgsl`: the q/k norm epsilon (Qwen3).
        pub eps: f32,
        pub _pad: [u32; 2],
    }
}

/// How the KV cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFormat {
    F32,
    /// Half the memory; needs head_dim % 4 == 0 (every Qwen model).
    F16,
    /// A quarter of the memory: int8 with an f32 scale per (position, kv head).
    Q8,
}

impl KvFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(KvFormat::F32),
            "f16" => Ok(KvFormat::F16),
            "q8" => Ok(KvFormat::Q8),
            _ => Err(Error::Request(format!("unknown KV cache format {s:?} (f32, f16 or q8)"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            KvFormat::F32 => "f32",
            KvFormat::F16 => "f16",
            KvFormat::Q8 => "q8",
        }
    }
    /// Bytes of one layer's K (or V) cache for `context` positions.
    /// Saturates instead of wrapping (a figure past u64 is refused as too big, never small).
    pub fn layer_bytes(self, context: usize, kv_heads: usize, head_dim: usize) -> u64 {
        let (c, h) = (context as u64, kv_heads as u64);
        let n = c.saturating_mul(h).saturating_mul(head_dim as u64);
        match self {
            KvFormat::F32 => n.saturating_mul(4),
            KvFormat::F16 => n.saturating_mul(2),
            KvFormat::Q8 => n.saturating_add(c.saturating_mul(h).saturating_mul(4)),
        }
    }

    /// Word offset of the Q8 scales in a cache buffer of `context` positions.
    pub fn scales_offset(self, context: usize, kv_heads: usize, head_dim: usize) -> usize {
        match self {
            KvFormat::Q8 => context * kv_heads * head_dim / 4,
            _ => 0,
        }
    }
}

/// Attention geometry and KV cache format, shared by [`qkv_rope`] and [`attention`].
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// How the KV cache stores keys and values (packed formats need head_dim % 4 == 0).
    pub kv: KvFormat,
    /// KvFormat::Q8: word offset of the scales in each cache buffer
    /// ([`KvFormat::scales_offset`]).
    pub kv_scales: usize,
}

impl Heads {
    fn kv_flags(&self, key: ShaderKey) -> ShaderKey {
        key.flag("KV_PACKED", self.kv != KvFormat::F32)
            .flag("KV_F16", self.kv == KvFormat::F16)
            .flag("KV_Q8", self.kv == KvFormat::Q8)
    }
}

impl Heads {
    fn rope_params(&self, n_tokens: usize, pos0: usize, eps: f32) -> Result<RopeParams> {
        Ok(RopeParams {
            n_tokens: u(n_tokens)?,
            pos0: u(pos0)?,
            n_heads: u(self.n_heads)?,
            n_kv_heads: u(self.n_kv_heads)?,
            head_dim: u(self.head_dim)?,
            eps,
            kv_scales: u(self.kv_scales)?,
            _pad: [0],
        })
    }

    fn attention_params(
        &self,
        n_tokens: usize,
        pos0: usize,
        chunk: usize,
        window: usize,
        eps: f32,
    ) -> Result<AttentionParams> {
        Ok(AttentionParams {
            n_tokens: u(n_tokens)?,
            pos0: u(pos0)?,
            n_heads: u(self.n_heads)?,
            n_kv_heads: u(self.n_kv_heads)?,
            head_dim: u(self.head_dim)?,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            kv_scales: u(self.kv_scales)?,
            chunk: u(chunk)?,
            window: u(window)?,
            eps,
            _pad: [0; 2],
        })
    }
}

/// Split `qkv` `[n_tokens, (H + 2 KVH) * D]`, optionally RMS-normalise each q and k head
/// with `qk_norm` `[2 * D]` (q weights then k weights), rotate q and k with the `rope` table
/// `[n_tokens, D + 1]` (cos `[D/2]`, sin `[D/2]`, q scale), write q to `q_out` `[n_tokens, H * D]`
/// and k, v to rows `pos0..pos0 + n_tokens` of the caches `[context, KVH * D]` (f32, or f16
/// pairs with `heads.kv_f16`).
#[allow(clippy::too_many_arguments)]
pub fn qkv_rope(
    rec: &mut Recorder,
    heads: Heads,
    n_tokens: usize,
    pos0: usize,
    qkv: &wgpu::Buffer,
    rope: &wgpu::Buffer,
    qk_norm: Option<(&wgpu::Buffer, f64)>,
    q_out: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
) -> Result<()> {
    let key =
        ShaderKey::new("qkv_rope").def("WG", WG).def("HEAD_DIM", heads.head_dim).flag("QK_NORM", qk_norm.is_some());
    let key = heads.kv_flags(key);
    let mut bindings = vec![Read, Read, Rw, Rw, Rw];
    let mut buffers = vec![qkv, rope, q_out, k_cache, v_cache];
    let mut eps = 0.0;
    if let Some((w, e)) = qk_norm {
        bindings.push(Read);
        buffers.push(w);
        eps = e as f32;
    }
    let k = rec.gpu().kernel(&key, &bindings)?;
    let p = heads.rope_params(n_tokens, pos0, eps)?;
    let n_groups = u(n_tokens * (heads.n_heads + 2 * heads.n_kv_heads))?;
    rec.dispatch(&k, &p, &buffers, n_groups)
}

/// Up to this many tokens, [`attention`] splits the keys across workgroups when it is given a
/// partials buffer (decode: a token's few heads alone would leave most of a GPU idle).
pub const ATTENTION_SPLIT_MAX_TOKENS: usize = MATVEC_MAX_TOKENS;
/// Most key splits per (token, head).
pub const ATTENTION_MAX_SPLITS: usize = 32;

/// Bytes of the partials buffer [`attention`] needs for split-K.
pub fn attention_partials_bytes(n_heads: usize, head_dim: usize) -> u64 {
    (ATTENTION_SPLIT_MAX_TOKENS * n_heads * ATTENTION_MAX_SPLITS * (head_dim + 2) * 4) as u64
}

/// The first key position a query at `pos` sees with window `w` (0: the whole cache):
/// it sees itself and the `w - 1` keys before it. [`crate::model::window`] chooses the windows.
pub fn first_key(pos: usize, w: usize) -> usize {
    if w == 0 {
        0
    } else {
        (pos + 1).saturating_sub(w)
    }
}

/// How many keys `n_tokens` tokens at positions `pos0..` see together with window `window`
/// (0: none): from the first token's first key to the last token. Split-K divides this span,
/// not the whole cache, so a windowed layer's cost does not grow with the context.
pub fn attention_span(n_tokens: usize, pos0: usize, window: usize) -> usize {
    pos0 + n_tokens - first_key(pos0, window)
}

/// Keys per split for `n_tokens` tokens after `pos0` cached ones with window `window` (0:
/// none), or None for one pass. Splits are whole tiles of WG keys, at most
/// [`ATTENTION_MAX_SPLITS`], over [`attention_span`]'s keys.
pub fn attention_split_chunk(n_tokens: usize, pos0: usize, window: usize) -> Option<usize> {
    split_chunk(n_tokens, pos0, window, WG as usize)
}

/// Keys per split of [`attention_decode`], roughly: the span is cut into
/// ceil(keys / this) splits (at most [`ATTENTION_MAX_SPLITS`]) of whole tiles, so a split
/// has about this many keys or more (257 keys: 192 + 65). Each workgroup first builds its
/// queries and the pass's keys (a few workgroup reductions), so a split must have keys
/// enough to pay for that, and a short cache (up to this many keys) needs no merge pass.
pub const DECODE_MIN_CHUNK: usize = 256;

/// [`attention_split_chunk`] for [`attention_decode`]: ceil(keys / [`DECODE_MIN_CHUNK`])
/// splits of whole tiles, at most [`ATTENTION_MAX_SPLITS`], so the number of splits grows
/// with the cache: none up to 256 keys, 8 at 2048, 32 from 8192.
pub fn attention_decode_split_chunk(n_tokens: usize, pos0: usize, window: usize) -> Option<usize> {
    split_chunk(n_tokens, pos0, window, DECODE_MIN_CHUNK)
}

/// Splits of `chunk` keys (0: one pass) over the span the tokens see: as the shaders'
/// n_splits(), so the merge pass reads this many partials.
fn n_splits(n_tokens: usize, pos0: usize, window: usize, chunk: usize) -> usize {
    if chunk > 0 {
        attention_span(n_tokens, pos0, window).div_ceil(chunk)
    } else {
        1
    }
}

fn split_chunk(n_tokens: usize, pos0: usize, window: usize, min_chunk: usize) -> Option<usize> {
    if n_tokens == 0 || n_tokens > ATTENTION_SPLIT_MAX_TOKENS {
        return None;
    }
    let keys = attention_span(n_tokens, pos0, window);
    let wg = WG as usize;
    let splits = keys.div_ceil(min_chunk).min(ATTENTION_MAX_SPLITS);
    let chunk = keys.div_ceil(splits).div_ceil(wg) * wg;
    (keys.div_ceil(chunk) > 1).then_some(chunk)
}

/// Which kernel computes [`attention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// `attention_rows.wgsl`: a workgroup takes a tile of tokens of every query head of one kv
    /// head ([`attention_tile_tokens`]) and reads each key and value once for all of them.
    Rows,
    /// `attention.wgsl`: one workgroup per (token, query head), each reading every key it
    /// sees; where [`AttentionKernel::Rows`] does not fit (head_dim % 4 != 0, or its
    /// workgroup memory past the adapter's limit).
    PerQuery,
}

/// Query rows (tokens x query heads of one kv head) a workgroup of
/// [`AttentionKernel::Rows`] takes in a prompt, where the group allows.
pub const ATTENTION_TILE_ROWS: usize = 16;

/// Query heads that share one kv head.
fn group(heads: Heads) -> usize {
    heads.n_heads / heads.n_kv_heads.max(1)
}

/// Tokens a workgroup of [`AttentionKernel::Rows`] takes: as many as fill
/// [`ATTENTION_TILE_ROWS`] rows with every query head of a kv head (at least one). The same
/// for every prompt length (a shorter prompt's tile has rows that see no key), so a model
/// compiles one prefill attention kernel: a browser compiles each new one on first use, which
/// a chat turn would otherwise pay for its first prompt of each length below the tile.
pub fn attention_tile_tokens(heads: Heads) -> usize {
    (ATTENTION_TILE_ROWS / group(heads)).max(1)
}

/// Bytes of workgroup memory `attention_rows.wgsl` declares for `tokens` tokens a workgroup
/// (with `fused`, the pass's keys and values and a staging head too), plus
/// `common/reduce.wgsl`'s.
fn rows_workgroup_bytes(heads: Heads, tokens: usize, fused: bool) -> usize {
    let (rows, d, wg) = (tokens * group(heads), heads.head_dim, WG as usize);
    let own = if fused { 2 * tokens * d + d } else { 0 };
    4 * (rows * d + own + rows * wg + 3 * rows + 2 * wg)
}

/// Whether `attention_rows.wgsl` runs `tokens` tokens a workgroup of these heads here.
fn rows_fit(gpu: &crate::gpu::Gpu, heads: Heads, tokens: usize, fused: bool) -> bool {
    heads.n_kv_heads > 0
        && heads.n_heads.is_multiple_of(heads.n_kv_heads)
        && heads.head_dim.is_multiple_of(4)
        && rows_workgroup_bytes(heads, tokens, fused) <= gpu.limits.max_compute_workgroup_storage_size as usize
}

/// The kernel [`attention`] runs these heads with here (for every prompt length).
pub fn attention_kernel(gpu: &crate::gpu::Gpu, heads: Heads) -> AttentionKernel {
    if rows_fit(gpu, heads, attention_tile_tokens(heads), false) {
        AttentionKernel::Rows
    } else {
        AttentionKernel::PerQuery
    }
}

/// Causal attention of `q` `[n_tokens, H * D]` (token t at position pos0 + t) over cache rows
/// `first_key(pos0 + t, window) ..= pos0 + t`, into `out` `[n_tokens, H * D]`. Scores are
/// scaled by 1/sqrt(D). `window` 0 is the whole cache; otherwise each query sees itself and
/// the `window - 1` keys before it ([`first_key`]), and older keys are
/// never read. With `partials` ([`attention_partials_bytes`]) and few tokens, the keys the
/// tokens see ([`attention_span`]) are split across workgroups and a second pass merges the
/// partial softmaxes ("flash decoding").
#[allow(clippy::too_many_arguments)]
pub fn attention(
    rec: &mut Recorder,
    heads: Heads,
    n_tokens: usize,
    pos0: usize,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    out: &wgpu::Buffer,
    partials: Option<&wgpu::Buffer>,
    window: usize,
) -> Result<()> {
    let kind = attention_kernel(rec.gpu(), heads);
    attention_with(rec, kind, heads, n_tokens, pos0, q, k_cache, v_cache, out, partials, window)
}

/// [`attention`] with an explicit kernel choice (tests run each on the same inputs).
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    rec: &mut Recorder,
    kind: AttentionKernel,
    heads: Heads,
    n_tokens: usize,
    pos0: usize,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    out: &wgpu::Buffer,
    partials: Option<&wgpu::Buffer>,
    window: usize,
) -> Result<()> {
    let d = heads.head_dim;
    if n_tokens == 0 {
        return Ok(()); // no queries
    }
    let split = partials.zip(attention_split_chunk(n_tokens, pos0, window));
    let (chunk, target) = split.map_or((0, out), |(partials, chunk)| (chunk, partials));
    let p = heads.attention_params(n_tokens, pos0, chunk, window, 0.0)?;
    let splits = n_splits(n_tokens, pos0, window, chunk);
    match kind {
        AttentionKernel::Rows => {
            let tokens = attention_tile_tokens(heads);
            if !rows_fit(rec.gpu(), heads, tokens, false) {
                return Err(Error::Gpu(format!(
                    "the row-tiled attention kernel cannot run {} heads ({} kv heads, head_dim {d}) on this adapter",
                    heads.n_heads, heads.n_kv_heads
                )));
            }
            let key = rows_key(heads, tokens).flag("SPLIT", split.is_some());
            let k = rec.gpu().kernel(&key, &[Read, Read, Read, Rw])?;
            let groups = n_tokens.div_ceil(tokens) * heads.n_kv_heads * splits;
            rec.dispatch(&k, &p, &[q, k_cache, v_cache, target], u(groups)?)?;
        }
        AttentionKernel::PerQuery => {
            let key = ShaderKey::new("attention")
                .def("WG", WG)
                .def("HEAD_DIM", d)
                .def("DIMS_PER_THREAD", d.div_ceil(WG as usize));
            let key = heads.kv_flags(key).flag("SPLIT", split.is_some());
            let k = rec.gpu().kernel(&key, &[Read, Read, Read, Rw])?;
            rec.dispatch(&k, &p, &[q, k_cache, v_cache, target], u(n_tokens * heads.n_heads * splits)?)?;
        }
    }
    match split {
        Some((partials, _)) => merge_partials(rec, heads, &p, partials, out),
        None => Ok(()),
    }
}

/// `attention_rows.wgsl` for `tokens` tokens a workgroup.
fn rows_key(heads: Heads, tokens: usize) -> ShaderKey {
    let d = heads.head_dim;
    // The value loads: a thread takes quads of dimensions (one q8 word, two f16 words); with
    // fewer quads than threads, LANES threads share a quad and take a tile's keys in turn.
    let (quads, wg) = (d / 4, WG as usize);
    let (lanes, quads_per_thread) = if quads >= wg { (1, quads.div_ceil(wg)) } else { (wg / quads, 1) };
    let key = ShaderKey::new("attention_rows")
        .def("WG", WG)
        .def("HEAD_DIM", d)
        .def("LANES", format!("{lanes}u"))
        .def("QUADS_PER_THREAD", quads_per_thread)
        .def("TOKENS", tokens)
        .def("GROUP", group(heads))
        .def("ROWS", tokens * group(heads));
    heads.kv_flags(key)
}

/// Split-K's second pass: each (token, head)'s partial softmaxes in `partials` combined into
/// `out` `[n_tokens, H * D]`.
fn merge_partials(
    rec: &mut Recorder,
    heads: Heads,
    p: &AttentionParams,
    partials: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<()> {
    let merge = ShaderKey::new("attention").def("WG", WG).def("HEAD_DIM", heads.head_dim).flag("MERGE", true);
    let m = rec.gpu().kernel(&merge, &[Read, Rw])?;
    rec.dispatch(&m, p, &[partials, out], u(p.n_tokens as usize * heads.n_heads)?)
}

/// Whether [`attention_decode`] can run `n_tokens` tokens of these heads here: a decode step
/// (at most [`ATTENTION_SPLIT_MAX_TOKENS`] tokens), whole query groups, head_dim % 4 == 0
/// and its workgroup memory within the adapter's limit. Else [`qkv_rope`] then [`attention`].
pub fn attention_decode_fits(gpu: &crate::gpu::Gpu, heads: Heads, n_tokens: usize) -> bool {
    (1..=ATTENTION_SPLIT_MAX_TOKENS).contains(&n_tokens) && rows_fit(gpu, heads, n_tokens, true)
}

/// A decode step's attention in one kernel ([`qkv_rope`] then [`attention`] fused): from the
/// raw projection `qkv` `[n_tokens, (H + 2 KVH) * D]` with the `rope` table (and `qk_norm`),
/// the tokens' K and V go to cache rows `pos0..pos0 + n_tokens` and their attention over
/// the cache (`window` as in [`attention`]) to `out` `[n_tokens, H * D]`. One workgroup per
/// (kv head, split) serves every query head of that kv head, so GQA reads each key once per
/// group. With `partials`, a span longer than [`DECODE_MIN_CHUNK`] keys is split
/// ([`attention_decode_split_chunk`]) and merged after.
/// Needs [`attention_decode_fits`].
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    rec: &mut Recorder,
    heads: Heads,
    n_tokens: usize,
    pos0: usize,
    qkv: &wgpu::Buffer,
    rope: &wgpu::Buffer,
    qk_norm: Option<(&wgpu::Buffer, f64)>,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    out: &wgpu::Buffer,
    partials: Option<&wgpu::Buffer>,
    window: usize,
) -> Result<()> {
    if !attention_decode_fits(rec.gpu(), heads, n_tokens) {
        return Err(Error::Gpu(format!(
            "the fused decode attention cannot run {n_tokens} tokens of {} heads ({} kv heads, head_dim {}) here",
            heads.n_heads, heads.n_kv_heads, heads.head_dim
        )));
    }
    let split = partials.zip(attention_decode_split_chunk(n_tokens, pos0, window));
    let key =
        rows_key(heads, n_tokens).flag("FUSED", true).flag("QK_NORM", qk_norm.is_some()).flag("SPLIT", split.is_some());
    let mut bindings = vec![Read, Read, Rw, Rw, Rw];
    let target = split.map_or(out, |(partials, _)| partials);
    let mut buffers = vec![qkv, rope, k_cache, v_cache, target];
    if let Some((w, _)) = qk_norm {
        bindings.push(Read);
        buffers.push(w);
    }
    let k = rec.gpu().kernel(&key, &bindings)?;
    let eps = qk_norm.map_or(0.0, |n| n.1 as f32);
    let chunk = split.map_or(0, |s| s.1);
    let p = heads.attention_params(n_tokens, pos0, chunk, window, eps)?;
    let splits = n_splits(n_tokens, pos0, window, chunk);
    rec.dispatch(&k, &p, &buffers, u(heads.n_kv_heads * splits)?)?;
    match split {
        Some((partials, _)) => merge_partials(rec, heads, &p, partials, out),
        None => Ok(()),
    }
}

crate::kernel_params! {
    pub struct CountParams {
        pub n: u32,
        pub _pad: [u32; 3],
    }
}

crate::kernel_params! {
    pub struct SiluMulParams {
        pub n_tokens: u32,
        pub width: u32,
        pub _pad: [u32; 2],
    }
}

/// SwiGLU: `out[t, i] = silu(gate_up[t, i]) * gate_up[t, width + i]`. gate_up:
/// `[n_tokens, 2 width]` (gate | up), out: `[n_tokens, width]`.
pub fn silu_mul(
    rec: &mut Recorder,
    gate_up: &wgpu::Buffer,
    n_tokens: usize,
    width: usize,
    out: &wgpu::Buffer,
) -> Result<()> {
    let k = rec.gpu().kernel(&ShaderKey::new("silu_mul").def("WG", WG), &[Read, Rw])?;
    let p = SiluMulParams { n_tokens: u(n_tokens)?, width: u(width)?, _pad: [0; 2] };
    rec.dispatch(&k, &p, &[gate_up, out], groups(n_tokens * width, WG)?)
}

/// `dst[..n] = src[..n]` in 16-byte elements (`n` counts vec4<u32>): the bandwidth probe.
pub fn copy(rec: &mut Recorder, src: &wgpu::Buffer, dst: &wgpu::Buffer, n: usize) -> Result<()> {
    let k = rec.gpu().kernel(&ShaderKey::new("copy").def("WG", WG), &[Read, Rw])?;
    rec.dispatch(&k, &CountParams { n: u(n)?, _pad: [0; 3] }, &[src, dst], groups(n, WG)?)
}

/// Threads of the one argmax workgroup.
pub const ARGMAX_WG: u32 = 256;

/// `out[0] = argmax(logits[0..n])` (first index on ties; 0xffffffff if all NaN).
pub fn argmax(rec: &mut Recorder, logits: &wgpu::Buffer, n: usize, out: &wgpu::Buffer) -> Result<()> {
    let k = rec.gpu().kernel(&ShaderKey::new("argmax").def("WG", ARGMAX_WG), &[Read, Rw])?;
    rec.dispatch(&k, &CountParams { n: u(n)?, _pad: [0; 3] }, &[logits, out], 1)
}

crate::kernel_params! {
    /// Uniform parameters of the sampling kernel (see `shaders/sample.wgsl`).
    pub struct SampleParams {
        pub n: u32,
        /// 0: off.
        pub top_k: u32,
        pub seed_lo: u32,
        pub seed_hi: u32,
        /// The sampling step (a fresh uniform stream each).
        pub step: u32,
        /// 0: greedy.
        pub inv_temperature: f32,
        /// 1: off.
        pub top_p: f32,
        /// 1: off.
        pub penalty: f32,
        pub inv_penalty: f32,
        /// Frequency and presence penalties (read with a counts buffer, see [`SampleBuffers`]).
        pub frequency: f32,
        pub presence: f32,
        pub _pad: [u32; 1],
    }
}

impl SampleParams {
    /// The kernel's parameters for `params` at sampling step `step` over `n` logits (the
    /// logit bias is a buffer: see [`SampleBuffers::bias`]).
    pub fn new(params: &crate::sampler::SamplingParams, n: usize, step: u32) -> Result<SampleParams> {
        let t = crate::sampler::KernelTerms::of(params);
        Ok(SampleParams {
            n: u(n)?,
            top_k: params.top_k.min(u32::MAX as usize) as u32,
            seed_lo: params.seed as u32,
            seed_hi: (params.seed >> 32) as u32,
            step,
            inv_temperature: t.inv_temperature,
            top_p: params.top_p,
            penalty: params.repetition_penalty,
            inv_penalty: t.inv_penalty,
            frequency: params.frequency_penalty,
            presence: params.presence_penalty,
            _pad: [0; 1],
        })
    }

    /// Whether the frequency or presence penalty is on (the kernel then needs the counts).
    pub fn counts_tokens(&self) -> bool {
        self.frequency != 0.0 || self.presence != 0.0
    }
}

/// The buffers of one draw ([`sample`]).
#[derive(Clone, Copy)]
pub struct SampleBuffers<'a> {
    /// `[>= n]` f32: the logits (overwritten with sort keys unless `keys` is given).
    pub logits: &'a wgpu::Buffer,
    /// `[ceil(n / 32)]` u32: the tokens the repetition penalty applies to; the chosen one's
    /// bit is set.
    pub seen: &'a wgpu::Buffer,
    /// `[>= n]` u32: how many times each token was generated (the frequency and presence
    /// penalties); the chosen one's count is bumped. Needed when either penalty is on; when
    /// given with both off, the counts are still kept.
    pub counts: Option<&'a wgpu::Buffer>,
    /// `[>= n]` f32: added to each logit after the penalties (the logit bias).
    pub bias: Option<&'a wgpu::Buffer>,
    /// `[>= n]` u32 scratch for the sort keys, so that `logits` stay as they are (for
    /// [`logprobs`] after the draw).
    pub keys: Option<&'a wgpu::Buffer>,
    /// `out[0]`: the token.
    pub out: &'a wgpu::Buffer,
}

/// Threads of the one sampling workgroup: 256 on GPUs, 64 on CPU adapters (which pay for
/// every barrier of a wider workgroup).
pub fn sample_wg(gpu: &crate::gpu::Gpu) -> u32 {
    gpu.tuning.sample_wg
}

/// Choose the next token from `logits[0..n]` on the GPU, as [`crate::sampler::Sampler`] does on
/// the CPU: `out[0]` = the token (0xffffffff if none can be chosen), its bit set in `seen` and
/// its count bumped in `counts` (see [`SampleBuffers`]).
pub fn sample(rec: &mut Recorder, params: &SampleParams, bufs: &SampleBuffers) -> Result<()> {
    let wg = sample_wg(rec.gpu());
    sample_in(rec, wg, params, bufs)
}

/// [`sample`] with `wg` threads (a power of two from 32 to 256): tests run both sizes.
pub fn sample_in(rec: &mut Recorder, wg: u32, params: &SampleParams, bufs: &SampleBuffers) -> Result<()> {
    if !wg.is_power_of_two() || !(32..=256).contains(&wg) {
        return Err(Error::Request(format!("sampling workgroup of {wg} threads: want a power of two in 32..=256")));
    }
    if params.counts_tokens() && bufs.counts.is_none() {
        return Err(Error::Request(
            "the frequency and presence penalties need the token counts buffer (SampleBuffers::counts)".into(),
        ));
    }
    let mut key =
        ShaderKey::new("sample").def("WG", wg).def("KEYS", if bufs.keys.is_some() { "keys" } else { "logits" });
    let mut buffers = vec![bufs.logits, bufs.seen, bufs.out];
    let mut bindings = vec![Rw, Rw, Rw];
    for (flag, at, b, access) in [
        ("COUNTS", "B_COUNTS", bufs.counts, Rw),
        ("BIAS", "B_BIAS", bufs.bias, Read),
        ("KEYS_APART", "B_KEYS", bufs.keys, Rw),
    ] {
        if let Some(b) = b {
            buffers.push(b);
            bindings.push(access);
            key = key.flag(flag, true).def(at, buffers.len());
        }
    }
    let k = rec.gpu().kernel(&key, &bindings)?;
    rec.dispatch(&k, params, &buffers, 1)
}

crate::kernel_params! {
    /// Uniform parameters of the log-probability kernel (see `shaders/logprobs.wgsl`).
    pub struct LogprobsParams {
        pub n: u32,
        pub k: u32,
        pub _pad: [u32; 2],
    }
}

/// Words [`logprobs`] writes for `k` top tokens: the token, the max, the sum, the chosen
/// logit, then `k` (id, logit) pairs.
pub fn logprobs_words(k: usize) -> usize {
    4 + 2 * k
}

/// The numbers the log-probabilities of the token in `next[0]` need, from the raw
/// `logits[0..n]` (see `shaders/logprobs.wgsl` for the layout of `out`, [`logprobs_words`]
/// long, and [`crate::sampler::logprob_of`] for the last step, on the host): run it after
/// [`argmax`] or after [`sample`] with [`SampleBuffers::keys`], which leave the logits as
/// they are. `k` is at most [`crate::sampler::MAX_TOP_LOGPROBS`].
pub fn logprobs(
    rec: &mut Recorder,
    logits: &wgpu::Buffer,
    n: usize,
    k: usize,
    next: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<()> {
    if k > crate::sampler::MAX_TOP_LOGPROBS {
        return Err(Error::Request(format!(
            "logprobs can list at most {} top tokens, not {k}",
            crate::sampler::MAX_TOP_LOGPROBS
        )));
    }
    let wg = sample_wg(rec.gpu());
    let key = ShaderKey::new("logprobs").def("WG", wg);
    let kernel = rec.gpu().kernel(&key, &[Read, Read, Rw])?;
    let p = LogprobsParams { n: u(n)?, k: u(k)?, _pad: [0; 2] };
    rec.dispatch(&kernel, &p, &[logits, next, out], 1)
}

crate::kernel_params! {
    /// Uniform parameters of the weight encoder (see `shaders/quantize.wgsl`).
    pub struct QuantizeParams {
        pub rows: u32,
        pub cols: u32,
        pub src_row0: u32,
        pub dst_word0: u32,
        pub stride: u32,
        pub scales_word0: u32,
        pub err_slot: u32,
        pub err_row0: u32,
    }
}

/// One run of rows for [`quantize`]: rows `src_row0..src_row0 + rows` of the stored tensor
/// bytes in `src` become rows of one chunk of a [`GpuMatrix`].
pub struct QuantizeRows<'a> {
    /// The tensor's stored bytes (rows of `cols` values of `dtype`, from byte 0).
    pub src: &'a wgpu::Buffer,
    pub dtype: &'a crate::weights::Dtype,
    pub src_row0: usize,
    pub rows: usize,
    pub cols: usize,
    /// The destination chunk and the format it holds.
    pub dst: &'a wgpu::Buffer,
    pub format: WeightFormat,
    /// Word offset of the first row's values and of its scales in `dst`, value words per row.
    pub dst_word0: usize,
    pub scales_word0: usize,
    pub stride: usize,
    /// Where bad values are reported: `err[err_slot]` (u32, starts at u32::MAX) gets the
    /// smallest `(err_row0 + row) * 4 + kind` (kind 1 non-finite, 2 outside f16's range).
    pub err: &'a wgpu::Buffer,
    pub err_slot: usize,
    pub err_row0: usize,
}

/// Encode stored rows (f32, f16 or bf16) into the GPU weight format, bit for bit as
/// [`crate::weights::quant::encode_rows`] does on the CPU (every float operation in software
/// IEEE arithmetic, `shaders/common/softfloat.wgsl`).
pub fn quantize(rec: &mut Recorder, job: &QuantizeRows) -> Result<()> {
    use crate::weights::Dtype;
    let key = ShaderKey::new("quantize")
        .flag("SRC_F32", *job.dtype == Dtype::F32)
        .flag("SRC_F16", *job.dtype == Dtype::F16)
        .flag("OUT_Q4", job.format == WeightFormat::Q4)
        .flag("OUT_Q8", job.format == WeightFormat::Q8)
        .flag("OUT_F16", job.format == WeightFormat::F16);
    crate::weights::float_size("to encode", job.dtype)?;
    if job.format != WeightFormat::F16 && !job.cols.is_multiple_of(2 * crate::weights::quant::GROUP) {
        return Err(Error::Weights(format!("{} rows of {} values cannot be grouped", job.format.name(), job.cols)));
    }
    let threads = match job.format {
        WeightFormat::F16 => job.rows * job.stride,
        _ => job.rows * (job.cols / (2 * crate::weights::quant::GROUP)),
    };
    // Every offset the kernel computes must fit its u32 arithmetic.
    u((job.src_row0 + job.rows) * job.cols)?;
    u((job.err_row0 + job.rows) * 4 + 3)?;
    let k = rec.gpu().kernel(&key, &[Read, Rw, Rw])?;
    let p = QuantizeParams {
        rows: u(job.rows)?,
        cols: u(job.cols)?,
        src_row0: u(job.src_row0)?,
        dst_word0: u(job.dst_word0)?,
        stride: u(job.stride)?,
        scales_word0: u(job.scales_word0)?,
        err_slot: u(job.err_slot)?,
        err_row0: u(job.err_row0)?,
    };
    rec.dispatch(&k, &p, &[job.src, job.dst, job.err], groups(threads, 64)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn first_keys() {
        assert_eq!(first_key(10, 0), 0);
        assert_eq!(first_key(10, 4), 7);
        assert_eq!(first_key(2, 4), 0);
        assert_eq!(first_key(3, 4), 0);
        assert_eq!(first_key(4, 4), 1);
    }

    #[test]
    fn params_are_uniform_sized() {
        // WGSL uniform structs are padded to 16 bytes; these sizes mirror the shaders.
        assert_eq!(std::mem::size_of::<EmbedParams>(), 32);
        assert_eq!(std::mem::size_of::<RmsNormParams>(), 16);
        assert_eq!(std::mem::size_of::<LinearParams>(), 48);
        assert_eq!(std::mem::size_of::<RopeParams>(), 32);
        assert_eq!(std::mem::size_of::<AttentionParams>(), 48);
        assert_eq!(std::mem::size_of::<CountParams>(), 16);
        assert_eq!(std::mem::size_of::<SampleParams>(), 48);
        assert_eq!(std::mem::size_of::<LogprobsParams>(), 16);
    }
}
