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
use crate::gpu::{Gpu, GpuBuffer, GpuMatrix};
use crate::weights::checkpoint::{check_checkpoint, layout, plan, Part, Slot};
use crate::weights::quant::{self, WeightFormat};
use crate::weights::{self, TensorInfo, TensorSource};
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

    /// Weight bytes one decoded token reads: every layer matrix, the LM head, one embedding
    /// row (norms and biases are negligible and left out).
    pub fn bytes_per_token(&self) -> u64 {
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| l.qkv.gpu_bytes() + l.o_proj.gpu_bytes() + l.gate_up.gpu_bytes() + l.down.gpu_bytes())
            .sum();
        layers + self.lm_head().gpu_bytes() + self.embed.format.row_bytes(self.embed.cols)
    }
}

/// GPU bytes of the weights of `cfg` in `format`: what [`Uploader`] allocates, on an adapter
/// that binds each matrix whole (see [`GpuMatrix::bytes_for`]).
pub fn weight_bytes(cfg: &QwenConfig, format: WeightFormat) -> u64 {
    let f32s = |n: usize| crate::gpu::buffer_size(n as u64 * 4);
    plan(cfg)
        .values()
        .map(|(shape, slot)| match slot {
            // Tensors that share one GPU buffer count once, at their first part.
            Slot::Qkv(_, 0) => GpuMatrix::bytes_for(cfg.qkv_dim(), cfg.hidden_size, format),
            Slot::GateUp(_, 0) => GpuMatrix::bytes_for(2 * cfg.intermediate_size, cfg.hidden_size, format),
            Slot::QkvBias(_, 0) => f32s(cfg.qkv_dim()),
            Slot::QNorm(_) => f32s(2 * cfg.head_dim),
            Slot::Qkv(..) | Slot::GateUp(..) | Slot::QkvBias(..) | Slot::KNorm(_) => 0,
            _ if shape.len() == 2 => GpuMatrix::bytes_for(shape[0], shape[1], format),
            _ => f32s(shape[0]),
        })
        .sum::<u64>()
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
        let weights = Self::allocate(&gpu, cfg, format)?;
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
        })
    }

    /// Allocate every GPU buffer of the weights.
    fn allocate(gpu: &Gpu, cfg: &QwenConfig, format: WeightFormat) -> Result<QwenWeights> {
        let (d, ff, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let f32_buf = |label: &str, n: usize| gpu.storage(label, n as u64 * 4);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = |s: &str| format!("layer{i}.{s}");
            layers.push(LayerWeights {
                attn_norm: f32_buf(&l("attn_norm"), d)?,
                qkv: GpuMatrix::new(gpu, &l("qkv"), cfg.qkv_dim(), d, format)?,
                qkv_bias: if cfg.attention_bias { Some(f32_buf(&l("qkv_bias"), cfg.qkv_dim())?) } else { None },
                qk_norm: if cfg.qk_norm { Some(f32_buf(&l("qk_norm"), 2 * cfg.head_dim)?) } else { None },
                o_proj: GpuMatrix::new(gpu, &l("o_proj"), d, cfg.q_dim(), format)?,
                mlp_norm: f32_buf(&l("mlp_norm"), d)?,
                gate_up: GpuMatrix::new(gpu, &l("gate_up"), 2 * ff, d, format)?,
                down: GpuMatrix::new(gpu, &l("down"), d, ff, format)?,
            });
        }
        Ok(QwenWeights {
            embed: GpuMatrix::new(gpu, "embed", v, d, format)?,
            layers,
            norm: f32_buf("norm", d)?,
            lm_head: if cfg.tie_word_embeddings { None } else { Some(GpuMatrix::new(gpu, "lm_head", v, d, format)?) },
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

    /// Upload one tensor's stored bytes (its checkpoint dtype).
    pub fn put(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
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
        let (gpu, w, cfg) = (&self.gpu, &self.weights, &self.cfg);
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
            match part {
                Part::Whole => weights::for_row_blocks(name, &info.dtype, bytes, shape[0], shape[1], &mut |r, vals| {
                    m.write_rows(gpu, row0 + r, vals, name)
                }),
                Part::QWeight => m.write_words(gpu, row0, bytes, name),
                Part::Scales => m.write_scales(gpu, row0, bytes, name),
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

    /// The GPU and the weights, once every tensor has been put.
    pub fn finish(self) -> Result<(Gpu, QwenWeights)> {
        let missing: Vec<&String> = self.infos.keys().filter(|n| !self.done.contains(*n)).collect();
        if let Some(first) = missing.first() {
            return Err(Error::Weights(format!("{} tensor(s) never arrived, e.g. {first}", missing.len())));
        }
        Ok((self.gpu, self.weights))
    }
}

/// Upload a checkpoint to the GPU, reading one tensor at a time from `src`.
/// `progress(done_bytes, total_bytes)` is called after each tensor. A pre-quantized `src`
/// loads only as its own format (`format` must equal it: see [`quant::resolve_format`]).
pub fn load(
    gpu: Gpu,
    cfg: &QwenConfig,
    src: &mut dyn TensorSource,
    format: WeightFormat,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Gpu, QwenWeights)> {
    let mut up = Uploader::with_metadata(gpu, cfg, src.tensors(), src.metadata(), format)?;
    for (name, _) in up.wanted() {
        let bytes = src.read(&name)?;
        up.put(&name, &bytes)?;
        let (done, total) = up.progress();
        progress(done, total);
    }
    up.finish()
}
