//! Checkpoint tensors → GPU weights, one tensor at a time, for every Qwen layout.
//!
//! Both families end up in one GPU layout: q, k and v are fused into one `[q + 2 kv, hidden]`
//! matrix (Qwen v1 stores it fused as `c_attn`; qwen2/qwen3 store three tensors, which are
//! written into its row ranges), and so are gate and up, as one `[2 intermediate, hidden]`
//! matrix, gate rows first (v1: `w2` is the gate, `w1` is up), then down.
//! Matrices are f16 or quantized (see [`WeightFormat`]), norms and biases f32.
//!
//! A checkpoint is plain (bf16/f16/f32 tensors, quantized here if asked) or pre-quantized by
//! `qwen-webgpu quantize`: then every matrix the format can group is stored as
//! `NAME.qweight` + `NAME.scales`, the GPU's own words and scales, uploaded as they are.

use crate::config::QwenConfig;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuBuffer, GpuMatrix, Recorder};
use crate::ops::{self, QuantizeRows};
use crate::weights::checkpoint::{check_checkpoint, layout, plan, Part, Slot};
use crate::weights::ggml::{self, GgmlType};
use crate::weights::quant::{self, WeightFormat};
#[cfg(not(target_arch = "wasm32"))]
use crate::weights::TensorSource;
use crate::weights::{self, TensorInfo};
use std::collections::{BTreeMap, BTreeSet};

pub struct LayerWeights {
    pub attn_norm: GpuBuffer,        // [hidden] f32
    pub qkv: GpuMatrix,              // [q_dim + 2 kv_dim, hidden]
    pub qkv_bias: Option<GpuBuffer>, // [q_dim + 2 kv_dim] f32
    pub qk_norm: Option<GpuBuffer>,  // [2 head_dim] f32: q_norm then k_norm (qwen3)
    pub o_proj: GpuMatrix,           // [hidden, q_dim]
    pub mlp_norm: GpuBuffer,         // [hidden] f32
    pub gate_up: GpuMatrix,          // [2 intermediate, hidden]: gate rows, then up rows
    pub down: GpuMatrix,             // [hidden, intermediate]
}

pub struct QwenWeights {
    pub embed: GpuMatrix, // [vocab, hidden]
    pub layers: Vec<LayerWeights>,
    pub norm: GpuBuffer,            // [hidden] f32
    pub lm_head: Option<GpuMatrix>, // [vocab, hidden]; None: tied to `embed`
}

impl QwenWeights {
    pub fn lm_head(&self) -> &GpuMatrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The formats the matrices are held in, each named once, in the order first met
    /// (one for a plain or pre-quantized checkpoint; a GGUF file's types, e.g. `q4+q6_k`).
    pub fn formats(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        let layers = self.layers.iter().flat_map(|l| [&l.qkv, &l.o_proj, &l.gate_up, &l.down]);
        for m in [&self.embed].into_iter().chain(layers).chain(self.lm_head.as_ref()) {
            for c in &m.chunks {
                if !out.contains(&c.format.name()) {
                    out.push(c.format.name());
                }
            }
        }
        out
    }

    /// Weight bytes one decoded token reads: every layer matrix, the LM head, one embedding
    /// row (norms and biases are negligible and left out).
    pub fn bytes_per_token(&self) -> u64 {
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| l.qkv.gpu_bytes() + l.o_proj.gpu_bytes() + l.gate_up.gpu_bytes() + l.down.gpu_bytes())
            .sum();
        layers + self.lm_head().gpu_bytes() + self.embed.max_row_bytes()
    }
}

/// GPU bytes of the weights of `cfg` in `format`: what [`Uploader`] allocates, on an adapter
/// that binds each matrix whole (see [`GpuMatrix::bytes_for`]).
pub fn weight_bytes(cfg: &QwenConfig, format: WeightFormat) -> u64 {
    weight_bytes_of(cfg, &BTreeMap::new(), format)
}

/// [`weight_bytes`] for a checkpoint whose tensors are `tensors`: a GGUF file's matrices keep
/// their own types (see [`matrix_parts`]).
pub fn weight_bytes_of(cfg: &QwenConfig, tensors: &BTreeMap<String, TensorInfo>, format: WeightFormat) -> u64 {
    let f32s = |n: usize| crate::gpu::buffer_size(n as u64 * 4);
    let matrices: u64 = matrix_parts(cfg, tensors, format)
        .iter()
        .map(|(id, parts)| {
            let cols = id.cols(cfg);
            parts.iter().map(|&(rows, f)| GpuMatrix::bytes_for(rows, cols, f)).sum::<u64>()
        })
        .sum();
    let vectors: u64 = plan(cfg)
        .values()
        .map(|(shape, slot)| match slot {
            // Tensors that share one GPU buffer count once, at their first part.
            Slot::QkvBias(_, 0) => f32s(cfg.qkv_dim()),
            Slot::QNorm(_) => f32s(2 * cfg.head_dim),
            Slot::Norm | Slot::AttnNorm(_) | Slot::MlpNorm(_) => f32s(shape[0]),
            _ => 0,
        })
        .sum();
    matrices + vectors
}

/// One GPU matrix of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum MatrixId {
    Embed,
    LmHead,
    Qkv(usize),
    OProj(usize),
    GateUp(usize),
    Down(usize),
}

impl MatrixId {
    fn cols(self, cfg: &QwenConfig) -> usize {
        match self {
            MatrixId::OProj(_) => cfg.q_dim(),
            MatrixId::Down(_) => cfg.intermediate_size,
            _ => cfg.hidden_size,
        }
    }
}

/// The format a stored matrix tensor is kept in on the GPU: `format`, except that a GGUF
/// block type keeps its own (losslessly: see [`WeightFormat::from_ggml`]) unless q8 or q4 was
/// asked for, which decodes and re-encodes it.
fn tensor_format(dtype: &weights::Dtype, format: WeightFormat) -> WeightFormat {
    match dtype {
        weights::Dtype::Ggml(t) if format == WeightFormat::F16 => WeightFormat::from_ggml(*t).unwrap_or(format),
        _ => format,
    }
}

/// Each GPU matrix's parts, `(rows, format)` in row order: one part in `format` for a
/// checkpoint of float tensors; for a GGUF file one per stored tensor in its own format
/// (q/k/v and gate/up may differ), consecutive tensors of one format merged into one part
/// where the second starts on a whole word (so gate and up of one type share a buffer and the
/// fused SwiGLU kernel runs).
fn matrix_parts(
    cfg: &QwenConfig,
    tensors: &BTreeMap<String, TensorInfo>,
    format: WeightFormat,
) -> BTreeMap<MatrixId, Vec<(usize, WeightFormat)>> {
    let mut rows: BTreeMap<MatrixId, Vec<(usize, usize, WeightFormat)>> = BTreeMap::new();
    for (name, (shape, slot)) in plan(cfg) {
        let (id, row0) = match slot {
            Slot::Embed => (MatrixId::Embed, 0),
            Slot::LmHead => (MatrixId::LmHead, 0),
            Slot::Qkv(i, r) => (MatrixId::Qkv(i), r),
            Slot::OProj(i) => (MatrixId::OProj(i), 0),
            Slot::GateUp(i, r) => (MatrixId::GateUp(i), r),
            Slot::Down(i) => (MatrixId::Down(i), 0),
            _ => continue,
        };
        let f = tensors.get(&name).map_or(format, |t| tensor_format(&t.dtype, format)).for_cols(shape[1]);
        rows.entry(id).or_default().push((row0, shape[0], f));
    }
    rows.into_iter()
        .map(|(id, mut p)| {
            p.sort_by_key(|x| x.0);
            let mut out: Vec<(usize, WeightFormat)> = Vec::new();
            for (_, n, f) in p {
                match out.last_mut() {
                    Some((m, g)) if *g == f && (*m as u64 * f.row_bytes(id.cols(cfg))).is_multiple_of(4) => *m += n,
                    _ => out.push((n, f)),
                }
            }
            (id, out)
        })
        .collect()
}

/// Where plain matrices are encoded into the GPU format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoder {
    /// The GPU, unless the adapter is a CPU implementation (lavapipe, SwiftShader): there the
    /// "GPU" is the same CPU, and the native encoder beats software floats run by a shader JIT.
    #[default]
    Auto,
    /// WGSL kernels (`shaders/quantize.wgsl`): the stored bytes go up as they are and the GPU
    /// writes the words and scales, bit for bit what the CPU encoder writes.
    Gpu,
    /// The CPU reference encoder (`weights::quant::encode_rows`), then the encoded bytes go up.
    Cpu,
}

impl Encoder {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "" | "auto" => Ok(Encoder::Auto),
            "gpu" => Ok(Encoder::Gpu),
            "cpu" => Ok(Encoder::Cpu),
            _ => Err(Error::Request(format!("unknown encoder {s:?} (auto, gpu or cpu)"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoder::Auto => "auto",
            Encoder::Gpu => "gpu",
            Encoder::Cpu => "cpu",
        }
    }

    /// `Gpu` or `Cpu`: what `Auto` means on `gpu`.
    pub fn resolve(self, gpu: &Gpu) -> Encoder {
        match self {
            Encoder::Auto if gpu.is_cpu() => Encoder::Cpu,
            Encoder::Auto => Encoder::Gpu,
            e => e,
        }
    }
}

/// Bytes of stored rows sent to the GPU encoder at a time (one staging buffer, reused).
const STAGING_BYTES: u64 = 16 << 20;

/// The GPU encoder's buffers: stored rows go through `staging`; `errors` holds one u32 per
/// encoded tensor (`slots`), the first bad row it met (see [`ops::quantize`]).
struct GpuEncoder {
    staging: GpuBuffer,
    errors: GpuBuffer,
    slots: Vec<String>,
}

/// Puts checkpoint tensors on the GPU as they arrive, in any order: the loader pulls them
/// from files, the browser pushes them as downloads finish. Only one tensor's bytes are held
/// at a time.
pub struct Uploader {
    gpu: Gpu,
    cfg: QwenConfig,
    /// Stored name → (model tensor, part, stored shape, slot).
    layout: BTreeMap<String, (String, Part, Vec<usize>, Slot)>,
    infos: BTreeMap<String, TensorInfo>,
    weights: QwenWeights,
    done: BTreeSet<String>,
    bytes_done: u64,
    bytes_total: u64,
    encoder: Encoder,
    /// Made at the first matrix the GPU encodes; dropped by [`Uploader::finish`].
    gpu_encoder: Option<GpuEncoder>,
}

impl Uploader {
    /// Check the checkpoint's tensor list against `cfg` and allocate every GPU buffer.
    /// Matrices are stored in `format` (see [`WeightFormat`]); norms and biases in f32.
    /// For a checkpoint with safetensors metadata (a pre-quantized one) use [`Self::with_metadata`].
    pub fn new(
        gpu: Gpu,
        cfg: &QwenConfig,
        tensors: &BTreeMap<String, TensorInfo>,
        format: WeightFormat,
    ) -> Result<Self> {
        Self::with_metadata(gpu, cfg, tensors, &BTreeMap::new(), format)
    }

    /// [`Self::new`] for a checkpoint whose merged safetensors `__metadata__` is `metadata`.
    /// A pre-quantized checkpoint loads only in its own format (`format` must be it; see
    /// [`quant::resolve_format`]) and its words and scales are uploaded as stored.
    pub fn with_metadata(
        gpu: Gpu,
        cfg: &QwenConfig,
        tensors: &BTreeMap<String, TensorInfo>,
        metadata: &BTreeMap<String, String>,
        format: WeightFormat,
    ) -> Result<Self> {
        let stored = check_checkpoint(cfg, tensors, metadata)?;
        let format = quant::resolve_format(Some(format), stored)?;
        let parts = matrix_parts(cfg, tensors, format);
        let weights = Self::allocate(&gpu, cfg, &parts, format)?;
        let encoder = Encoder::Auto.resolve(&gpu);
        let layout = layout(cfg, stored);
        let infos: BTreeMap<String, TensorInfo> = layout.keys().map(|n| (n.clone(), tensors[n].clone())).collect();
        let bytes_total = infos.values().map(|t| t.byte_len() as u64).sum();
        gpu.check()?;
        Ok(Uploader {
            gpu,
            cfg: cfg.clone(),
            layout,
            infos,
            weights,
            done: BTreeSet::new(),
            bytes_done: 0,
            bytes_total,
            encoder,
            gpu_encoder: None,
        })
    }

    /// Where plain matrices are encoded (see [`Encoder`]).
    pub fn set_encoder(&mut self, encoder: Encoder) {
        self.encoder = encoder.resolve(&self.gpu);
    }

    /// Allocate every GPU buffer of the weights.
    /// Each buffer is made in an out-of-memory error scope naming it (see [`Gpu::scoped`]).
    fn allocate(
        gpu: &Gpu,
        cfg: &QwenConfig,
        parts: &BTreeMap<MatrixId, Vec<(usize, WeightFormat)>>,
        format: WeightFormat,
    ) -> Result<QwenWeights> {
        let (d, ff, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let f32_buf =
            |label: &str, n: usize| gpu.scoped(|| format!("allocating {label}"), || gpu.storage(label, n as u64 * 4));
        let matrix = |label: &str, rows: usize, cols: usize, id: MatrixId| {
            let whole = [(rows, format)];
            let p = parts.get(&id).filter(|p| p.iter().map(|x| x.0).sum::<usize>() == rows).map_or(&whole[..], |p| p);
            gpu.scoped(|| format!("allocating {label}"), || GpuMatrix::with_parts(gpu, label, cols, p))
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = |s: &str| format!("layer{i}.{s}");
            layers.push(LayerWeights {
                attn_norm: f32_buf(&l("attn_norm"), d)?,
                qkv: matrix(&l("qkv"), cfg.qkv_dim(), d, MatrixId::Qkv(i))?,
                qkv_bias: if cfg.attention_bias { Some(f32_buf(&l("qkv_bias"), cfg.qkv_dim())?) } else { None },
                qk_norm: if cfg.qk_norm { Some(f32_buf(&l("qk_norm"), 2 * cfg.head_dim)?) } else { None },
                o_proj: matrix(&l("o_proj"), d, cfg.q_dim(), MatrixId::OProj(i))?,
                mlp_norm: f32_buf(&l("mlp_norm"), d)?,
                gate_up: matrix(&l("gate_up"), 2 * ff, d, MatrixId::GateUp(i))?,
                down: matrix(&l("down"), d, ff, MatrixId::Down(i))?,
            });
        }
        Ok(QwenWeights {
            embed: matrix("embed", v, d, MatrixId::Embed)?,
            layers,
            norm: f32_buf("norm", d)?,
            lm_head: if cfg.tie_word_embeddings { None } else { Some(matrix("lm_head", v, d, MatrixId::LmHead)?) },
        })
    }

    /// The tensors still needed, with where they are stored.
    pub fn wanted(&self) -> Vec<(String, TensorInfo)> {
        self.infos.iter().filter(|(n, _)| !self.done.contains(*n)).map(|(n, t)| (n.clone(), t.clone())).collect()
    }

    /// (bytes uploaded, bytes in all wanted tensors), in checkpoint bytes.
    pub fn progress(&self) -> (u64, u64) {
        (self.bytes_done, self.bytes_total)
    }

    /// Upload one tensor's stored bytes (its checkpoint dtype). Plain matrices are encoded on
    /// the GPU (see [`Encoder`]); a bad value there is reported by [`Uploader::finish`].
    /// Runs in an out-of-memory error scope naming the tensor.
    pub fn put(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let scope = self.gpu.begin_scope();
        let result = self.put_here(name, bytes);
        self.gpu.end_scope(scope, format!("uploading tensor {name}"));
        result
    }

    fn put_here(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let (info, (_, part, shape, slot)) = match (self.infos.get(name), self.layout.get(name)) {
            (Some(i), Some(p)) => (i, p),
            _ => return Err(Error::Weights(format!("tensor {name} is not part of this model"))),
        };
        if self.done.contains(name) {
            return Err(Error::Weights(format!("tensor {name} was uploaded twice")));
        }
        if bytes.len() != info.byte_len() {
            return Err(Error::Weights(format!(
                "tensor {name}: got {} bytes, the header says {}",
                bytes.len(),
                info.byte_len()
            )));
        }
        let is_matrix = matches!(
            slot,
            Slot::Embed | Slot::LmHead | Slot::Qkv(..) | Slot::OProj(_) | Slot::GateUp(..) | Slot::Down(_)
        );
        let float = matches!(info.dtype, weights::Dtype::F32 | weights::Dtype::F16 | weights::Dtype::BF16);
        let gpu_slot = if is_matrix && *part == Part::Whole && float && self.encoder == Encoder::Gpu {
            if self.gpu_encoder.is_none() {
                self.gpu_encoder = Some(self.make_gpu_encoder()?);
            }
            let enc = self.gpu_encoder.as_mut().ok_or_else(|| Error::Weights("no GPU encoder".into()))?;
            enc.slots.push(name.to_string());
            Some(enc.slots.len() - 1)
        } else {
            None
        };
        let (gpu, w, cfg, enc) = (&self.gpu, &self.weights, &self.cfg, self.gpu_encoder.as_ref());
        let vector = || -> Result<Vec<u8>> {
            let vals = weights::to_f32(name, &info.dtype, bytes)?;
            if let Some(i) = vals.iter().position(|x| !x.is_finite()) {
                return Err(Error::Weights(format!("tensor {name}: non-finite value at [{i}]")));
            }
            Ok(bytemuck::cast_slice(&vals).to_vec())
        };
        // Matrices: plain ones are converted and encoded a block of rows at a time;
        // pre-quantized words and scales go up as they are.
        let matrix = |m: &GpuMatrix, row0: usize| -> Result<()> {
            // A GGUF block type: as stored where the GPU holds this part in it, repacked
            // where it holds Q8_0/Q4_0 as q8/q4, else decoded and re-encoded below.
            if let (weights::Dtype::Ggml(t), Part::Whole) = (&info.dtype, part) {
                let held = m.chunks_over(row0, 1).next().map(|(c, ..)| c.format);
                match (t, held) {
                    (t, Some(WeightFormat::Ggml(h))) if *t == h => return m.write_words(gpu, row0, bytes, name),
                    (GgmlType::Q8_0, Some(WeightFormat::Q8)) | (GgmlType::Q4_0, Some(WeightFormat::Q4)) => {
                        let (words, scales) =
                            if *t == GgmlType::Q8_0 { ggml::repack_q8_0(bytes) } else { ggml::repack_q4_0(bytes) };
                        m.write_words(gpu, row0, &words, name)?;
                        return m.write_scales(gpu, row0, &scales, name);
                    }
                    _ => {}
                }
            }
            match (part, gpu_slot.zip(enc)) {
                (Part::Whole, Some((slot, enc))) => {
                    encode_on_gpu(gpu, enc, slot, m, row0, name, &info.dtype, bytes, shape[0], shape[1])
                }
                (Part::Whole, None) => {
                    weights::for_row_blocks(name, &info.dtype, bytes, shape[0], shape[1], &mut |r, vals| {
                        m.write_rows(gpu, row0 + r, vals, name)
                    })
                }
                (Part::QWeight, _) => m.write_words(gpu, row0, bytes, name),
                (Part::Scales, _) => m.write_scales(gpu, row0, bytes, name),
            }
        };
        let expect = |b: &Option<GpuBuffer>| -> Result<wgpu::Buffer> {
            b.as_ref().map(|b| (**b).clone()).ok_or_else(|| Error::Weights(format!("no destination for {name}")))
        };
        match *slot {
            Slot::Embed => matrix(&w.embed, 0)?,
            Slot::LmHead => matrix(w.lm_head.as_ref().unwrap_or(&w.embed), 0)?,
            Slot::Norm => gpu.write(&w.norm, 0, &vector()?),
            Slot::AttnNorm(i) => gpu.write(&w.layers[i].attn_norm, 0, &vector()?),
            Slot::MlpNorm(i) => gpu.write(&w.layers[i].mlp_norm, 0, &vector()?),
            Slot::Qkv(i, row0) => matrix(&w.layers[i].qkv, row0)?,
            Slot::QkvBias(i, at) => gpu.write(&expect(&w.layers[i].qkv_bias)?, at as u64 * 4, &vector()?),
            Slot::QNorm(i) => gpu.write(&expect(&w.layers[i].qk_norm)?, 0, &vector()?),
            Slot::KNorm(i) => gpu.write(&expect(&w.layers[i].qk_norm)?, cfg.head_dim as u64 * 4, &vector()?),
            Slot::OProj(i) => matrix(&w.layers[i].o_proj, 0)?,
            Slot::GateUp(i, row0) => matrix(&w.layers[i].gate_up, row0)?,
            Slot::Down(i) => matrix(&w.layers[i].down, 0)?,
        }
        self.done.insert(name.to_string());
        self.bytes_done += info.byte_len() as u64;
        self.gpu.check()
    }

    fn make_gpu_encoder(&self) -> Result<GpuEncoder> {
        let gpu = &self.gpu;
        let matrices =
            self.layout.values().filter(|(_, part, shape, _)| *part == Part::Whole && shape.len() == 2).count();
        let staging = STAGING_BYTES.min(gpu.max_binding);
        let errors = vec![u32::MAX; matrices.max(1)];
        Ok(GpuEncoder {
            staging: gpu.scoped(
                || "allocating the encoder's staging buffer".into(),
                || gpu.storage("encoder staging", staging),
            )?,
            errors: gpu.scoped(
                || "allocating the encoder's error slots".into(),
                || gpu.storage_init("encoder errors", bytemuck::cast_slice(&errors)),
            )?,
            slots: Vec::with_capacity(matrices),
        })
    }

    /// The GPU and the weights, once every tensor has been put: waits for the GPU encoder
    /// and reports the first bad value it met (as the CPU encoder would have, by tensor and
    /// row), and any out-of-memory error of an allocation or upload, naming it.
    pub async fn finish_async(mut self) -> Result<(Gpu, QwenWeights)> {
        let missing: Vec<&String> = self.infos.keys().filter(|n| !self.done.contains(*n)).collect();
        if let Some(first) = missing.first() {
            return Err(Error::Weights(format!("{} tensor(s) never arrived, e.g. {first}", missing.len())));
        }
        self.gpu.settle().await?;
        if let Some(enc) = self.gpu_encoder.take() {
            let n = enc.slots.len();
            let bytes = self.gpu.read(&enc.errors, 0, n.max(1) as u64 * 4).await?;
            let found: &[u32] = bytemuck::cast_slice(&bytes);
            if let Some((name, &key)) = enc.slots.iter().zip(found).find(|(_, &k)| k != u32::MAX) {
                let row = key / 4;
                return Err(Error::Weights(match key % 4 {
                    1 => format!("{name}: non-finite value in row {row}"),
                    _ => format!(
                        "{name}: a value in row {row} is outside the f16 range (|x| > 65504) or needs a scale past it"
                    ),
                }));
            }
        }
        Ok((self.gpu, self.weights))
    }

    /// [`Uploader::finish_async`], waiting here (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn finish(self) -> Result<(Gpu, QwenWeights)> {
        pollster::block_on(self.finish_async())
    }
}

/// Encode a plain `[rows, cols]` tensor into matrix `m` from row `row0` on the GPU: the
/// stored bytes go through the staging buffer a block of rows at a time, one dispatch per
/// matrix chunk a block touches.
#[allow(clippy::too_many_arguments)]
fn encode_on_gpu(
    gpu: &Gpu,
    enc: &GpuEncoder,
    slot: usize,
    m: &GpuMatrix,
    row0: usize,
    name: &str,
    dtype: &weights::Dtype,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> Result<()> {
    let size = weights::float_size(name, dtype)?;
    let row_bytes = bytes.len() / rows.max(1);
    if row_bytes * rows != bytes.len() || row_bytes != cols * size {
        return Err(Error::Weights(format!(
            "tensor {name}: {} bytes are not {rows} rows of {cols} {dtype:?} values",
            bytes.len()
        )));
    }
    if row0 + rows > m.rows || cols != m.cols {
        return Err(Error::Weights(format!(
            "tensor {name}: [{rows}, {cols}] at row {row0} does not fit a [{}, {}] matrix",
            m.rows, m.cols
        )));
    }
    if row_bytes as u64 > enc.staging.size() {
        return Err(Error::Weights(format!(
            "tensor {name}: a row of {row_bytes} bytes is larger than the encoder's staging buffer"
        )));
    }
    let per_block = (enc.staging.size() as usize / row_bytes.max(1)).max(1);
    for r in (0..rows).step_by(per_block) {
        let n = per_block.min(rows - r);
        gpu.write(&enc.staging, 0, &bytes[r * row_bytes..(r + n) * row_bytes]);
        let mut rec = Recorder::new(gpu);
        for (c, lo, hi) in m.chunks_over(row0 + r, n) {
            let spr = c.format.scales_per_row(cols);
            ops::quantize(
                &mut rec,
                &QuantizeRows {
                    src: &enc.staging,
                    dtype,
                    src_row0: lo - (row0 + r),
                    rows: hi - lo,
                    cols,
                    dst: &c.buffer,
                    format: c.format,
                    dst_word0: (lo - c.row0) * c.stride,
                    scales_word0: c.scales_offset() + (lo - c.row0) * spr / 2,
                    stride: c.stride,
                    err: &enc.errors,
                    err_slot: slot,
                    err_row0: lo - row0,
                },
            )?;
        }
        rec.submit()?;
    }
    Ok(())
}

/// Upload a checkpoint to the GPU, reading one tensor at a time from `src` (native).
/// `progress(done_bytes, total_bytes)` is called after each tensor. A pre-quantized `src`
/// loads only as its own format (`format` must equal it: see [`quant::resolve_format`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn load(
    gpu: Gpu,
    cfg: &QwenConfig,
    src: &mut dyn TensorSource,
    format: WeightFormat,
    encoder: Encoder,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Gpu, QwenWeights)> {
    let mut up = Uploader::with_metadata(gpu, cfg, src.tensors(), src.metadata(), format)?;
    up.set_encoder(encoder);
    for (name, _) in up.wanted() {
        let bytes = src.read(&name)?;
        up.put(&name, &bytes)?;
        let (done, total) = up.progress();
        progress(done, total);
    }
    up.finish()
}
