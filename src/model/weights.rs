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

use crate::config::{Family, QwenConfig};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuMatrix};
use crate::weights::quant::{self, WeightFormat, QWEIGHT_SUFFIX, SCALES_SUFFIX};
use crate::weights::{self, TensorInfo, TensorSource};
use std::collections::{BTreeMap, BTreeSet};

pub struct LayerWeights {
    pub attn_norm: wgpu::Buffer,        // [hidden] f32
    pub qkv: GpuMatrix,                 // [q_dim + 2 kv_dim, hidden]
    pub qkv_bias: Option<wgpu::Buffer>, // [q_dim + 2 kv_dim] f32
    pub qk_norm: Option<wgpu::Buffer>,  // [2 head_dim] f32: q_norm then k_norm (qwen3)
    pub o_proj: GpuMatrix,              // [hidden, q_dim]
    pub mlp_norm: wgpu::Buffer,         // [hidden] f32
    pub gate_up: GpuMatrix,             // [2 intermediate, hidden]: gate rows, then up rows
    pub down: GpuMatrix,                // [hidden, intermediate]
}

pub struct QwenWeights {
    pub embed: GpuMatrix, // [vocab, hidden]
    pub layers: Vec<LayerWeights>,
    pub norm: wgpu::Buffer,         // [hidden] f32
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

/// Where a checkpoint tensor goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Embed,
    LmHead,
    Norm,
    AttnNorm(usize),
    MlpNorm(usize),
    /// Rows `row0..` of layer's fused qkv matrix.
    Qkv(usize, usize),
    QkvBias(usize, usize),
    QNorm(usize),
    KNorm(usize),
    OProj(usize),
    /// Rows `row0..` of layer's fused gate/up matrix.
    GateUp(usize, usize),
    Down(usize),
}

/// The tensors a checkpoint of `cfg` must hold: name → (shape, slot).
fn plan(cfg: &QwenConfig) -> BTreeMap<String, (Vec<usize>, Slot)> {
    let (d, ff, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let mut p = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, slot: Slot| {
        p.insert(name, (shape, slot));
    };
    match cfg.family {
        Family::QwenV1 => {
            add("transformer.wte.weight".into(), vec![v, d], Slot::Embed);
            add("transformer.ln_f.weight".into(), vec![d], Slot::Norm);
            for i in 0..cfg.num_hidden_layers {
                let n = |s: &str| format!("transformer.h.{i}.{s}");
                add(n("ln_1.weight"), vec![d], Slot::AttnNorm(i));
                add(n("attn.c_attn.weight"), vec![qd + 2 * kvd, d], Slot::Qkv(i, 0));
                add(n("attn.c_attn.bias"), vec![qd + 2 * kvd], Slot::QkvBias(i, 0));
                add(n("attn.c_proj.weight"), vec![d, qd], Slot::OProj(i));
                add(n("ln_2.weight"), vec![d], Slot::MlpNorm(i));
                add(n("mlp.w2.weight"), vec![ff, d], Slot::GateUp(i, 0));
                add(n("mlp.w1.weight"), vec![ff, d], Slot::GateUp(i, ff));
                add(n("mlp.c_proj.weight"), vec![d, ff], Slot::Down(i));
            }
        }
        Family::Qwen2 | Family::Qwen3 => {
            add("model.embed_tokens.weight".into(), vec![v, d], Slot::Embed);
            add("model.norm.weight".into(), vec![d], Slot::Norm);
            for i in 0..cfg.num_hidden_layers {
                let n = |s: &str| format!("model.layers.{i}.{s}");
                add(n("input_layernorm.weight"), vec![d], Slot::AttnNorm(i));
                add(n("self_attn.q_proj.weight"), vec![qd, d], Slot::Qkv(i, 0));
                add(n("self_attn.k_proj.weight"), vec![kvd, d], Slot::Qkv(i, qd));
                add(n("self_attn.v_proj.weight"), vec![kvd, d], Slot::Qkv(i, qd + kvd));
                if cfg.attention_bias {
                    add(n("self_attn.q_proj.bias"), vec![qd], Slot::QkvBias(i, 0));
                    add(n("self_attn.k_proj.bias"), vec![kvd], Slot::QkvBias(i, qd));
                    add(n("self_attn.v_proj.bias"), vec![kvd], Slot::QkvBias(i, qd + kvd));
                }
                if cfg.family == Family::Qwen3 {
                    add(n("self_attn.q_norm.weight"), vec![cfg.head_dim], Slot::QNorm(i));
                    add(n("self_attn.k_norm.weight"), vec![cfg.head_dim], Slot::KNorm(i));
                }
                add(n("self_attn.o_proj.weight"), vec![d, qd], Slot::OProj(i));
                add(n("post_attention_layernorm.weight"), vec![d], Slot::MlpNorm(i));
                add(n("mlp.gate_proj.weight"), vec![ff, d], Slot::GateUp(i, 0));
                add(n("mlp.up_proj.weight"), vec![ff, d], Slot::GateUp(i, ff));
                add(n("mlp.down_proj.weight"), vec![d, ff], Slot::Down(i));
            }
        }
    }
    if !cfg.tie_word_embeddings {
        add("lm_head.weight".into(), vec![v, d], Slot::LmHead);
    }
    p
}

/// Every tensor a checkpoint of `cfg` must hold, with its shape.
pub fn expected_tensors(cfg: &QwenConfig) -> Vec<(String, Vec<usize>)> {
    plan(cfg).into_iter().map(|(n, (shape, _))| (n, shape)).collect()
}

/// Which part of a model tensor a stored tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The tensor itself (bf16/f16/f32).
    Whole,
    /// A pre-quantized matrix's value words (U32 `[rows, words_per_row]`).
    QWeight,
    /// A pre-quantized matrix's scales (F16 `[rows, cols / 32]`).
    Scales,
}

/// One tensor a checkpoint stores: its name, the model tensor it is (part of), its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    pub name: String,
    pub source: String,
    pub part: Part,
    pub shape: Vec<usize>,
}

/// Whether a `[_, cols]` matrix is stored as qweight + scales in a checkpoint pre-quantized to
/// `format`: exactly when loading would quantize it.
fn grouped(format: WeightFormat, shape: &[usize]) -> bool {
    format != WeightFormat::F16 && shape.len() == 2 && format.for_cols(shape[1]) == format
}

/// Stored name → (model tensor, part, stored shape, slot) for a checkpoint of `cfg` that is
/// plain (`stored` None) or pre-quantized to `stored`.
fn layout(cfg: &QwenConfig, stored: Option<WeightFormat>) -> BTreeMap<String, (String, Part, Vec<usize>, Slot)> {
    let mut out = BTreeMap::new();
    for (name, (shape, slot)) in plan(cfg) {
        match stored {
            Some(f) if grouped(f, &shape) => {
                let (rows, cols) = (shape[0], shape[1]);
                let q = vec![rows, f.words_per_row(cols)];
                let s = vec![rows, f.scales_per_row(cols)];
                out.insert(format!("{name}{QWEIGHT_SUFFIX}"), (name.clone(), Part::QWeight, q, slot));
                out.insert(format!("{name}{SCALES_SUFFIX}"), (name, Part::Scales, s, slot));
            }
            _ => {
                out.insert(name.clone(), (name, Part::Whole, shape, slot));
            }
        }
    }
    out
}

/// Every tensor a checkpoint of `cfg` stores when plain (`None`) or pre-quantized to `stored`.
pub fn stored_tensors(cfg: &QwenConfig, stored: Option<WeightFormat>) -> Vec<StoredTensor> {
    layout(cfg, stored)
        .into_iter()
        .map(|(name, (source, part, shape, _))| StoredTensor { name, source, part, shape })
        .collect()
}

/// The pre-quantized format a tensor list looks like, from its `.qweight` shapes alone
/// (None: no quantized tensors).
fn infer_stored(cfg: &QwenConfig, tensors: &BTreeMap<String, TensorInfo>) -> Result<Option<WeightFormat>> {
    let plan = plan(cfg);
    let mut any = None;
    for (name, t) in tensors {
        let base = name.strip_suffix(QWEIGHT_SUFFIX).or_else(|| name.strip_suffix(SCALES_SUFFIX));
        let Some(base) = base else { continue };
        any.get_or_insert(name.as_str());
        let (Some((shape, _)), true) = (plan.get(base), name.ends_with(QWEIGHT_SUFFIX)) else { continue };
        if shape.len() != 2 || t.shape.len() != 2 {
            continue; // the layout check names it
        }
        let cols = shape[1];
        for f in [WeightFormat::Q4, WeightFormat::Q8] {
            if grouped(f, shape) && t.shape[1] == f.words_per_row(cols) {
                return Ok(Some(f));
            }
        }
        return Err(Error::Weights(format!(
            "tensor {name} has shape {:?}; a [{}, {cols}] matrix pre-quantized to q4 needs [{}, {}], to q8 [{}, {}]",
            t.shape,
            shape[0],
            shape[0],
            cols / 8,
            shape[0],
            cols / 4
        )));
    }
    match any {
        // Only scales, or quantized names we do not plan: the layout check lists what is
        // missing (the qweights) and what is extra.
        Some(_) => Ok(Some(WeightFormat::Q4)),
        None => Ok(None),
    }
}

/// Tensors a checkpoint may hold that we do not need.
fn ignorable(name: &str, cfg: &QwenConfig) -> bool {
    name.ends_with("rotary_emb.inv_freq") || (cfg.tie_word_embeddings && name == "lm_head.weight")
}

/// GPU bytes of the weights of `cfg` in `format` (what [`load`] allocates).
pub fn weight_bytes(cfg: &QwenConfig, format: WeightFormat) -> u64 {
    plan(cfg)
        .values()
        .map(|(shape, slot)| match slot {
            Slot::Qkv(_, 0) => GpuMatrix::bytes_for(cfg.qkv_dim(), cfg.hidden_size, format),
            Slot::Qkv(..) => 0,
            Slot::GateUp(_, 0) => GpuMatrix::bytes_for(2 * cfg.intermediate_size, cfg.hidden_size, format),
            Slot::GateUp(..) => 0,
            _ if shape.len() == 2 => GpuMatrix::bytes_for(shape[0], shape[1], format),
            _ => shape[0] as u64 * 4,
        })
        .sum::<u64>()
}

/// Check a checkpoint's tensor list against `cfg`: every tensor present with the right shape
/// and a loadable dtype, nothing unexpected. Reads no tensor bytes. A pre-quantized layout is
/// recognised by its `.qweight` tensors; [`check_checkpoint`] also checks the metadata.
pub fn check_tensors(cfg: &QwenConfig, tensors: &BTreeMap<String, TensorInfo>) -> Result<()> {
    let stored = infer_stored(cfg, tensors)?;
    check_layout(cfg, tensors, stored)
}

/// [`check_tensors`] for a checkpoint with its safetensors metadata: returns the format it is
/// pre-quantized to (None: plain). Metadata and tensors must agree.
pub fn check_checkpoint(
    cfg: &QwenConfig,
    tensors: &BTreeMap<String, TensorInfo>,
    metadata: &BTreeMap<String, String>,
) -> Result<Option<WeightFormat>> {
    let declared = quant::stored_format(metadata)?;
    let inferred = infer_stored(cfg, tensors)?;
    match (declared, inferred) {
        (None, Some(_)) => {
            let q = tensors.keys().find(|n| n.ends_with(QWEIGHT_SUFFIX) || n.ends_with(SCALES_SUFFIX));
            return Err(Error::Weights(format!(
                "checkpoint has pre-quantized tensors ({}) but its safetensors metadata has no {}: \
                 not written by `qwen-webgpu quantize`, or its header was edited",
                q.map(String::as_str).unwrap_or("?"),
                quant::META_FORMAT
            )));
        }
        (Some(d), Some(i)) if d != i && tensors.keys().any(|n| n.ends_with(QWEIGHT_SUFFIX)) => {
            return Err(Error::Weights(format!(
                "safetensors metadata says {} but the .qweight tensors have the shape of {}",
                d.name(),
                i.name()
            )));
        }
        _ => {}
    }
    check_layout(cfg, tensors, declared)?;
    Ok(declared)
}

fn check_layout(cfg: &QwenConfig, tensors: &BTreeMap<String, TensorInfo>, stored: Option<WeightFormat>) -> Result<()> {
    let layout = layout(cfg, stored);
    let kind = match stored {
        Some(f) => format!("{} model with this config, pre-quantized to {},", cfg.family.name(), f.name()),
        None => format!("{} model with this config", cfg.family.name()),
    };
    let missing: Vec<&String> = layout.keys().filter(|n| !tensors.contains_key(*n)).collect();
    if !missing.is_empty() {
        let more = if missing.len() > 5 { format!(" and {} more", missing.len() - 5) } else { String::new() };
        let names: Vec<&str> = missing.iter().take(5).map(|s| s.as_str()).collect();
        return Err(Error::Weights(format!(
            "checkpoint lacks {} tensor(s) a {kind} needs: {}{more}",
            missing.len(),
            names.join(", ")
        )));
    }
    let extra: Vec<&String> = tensors.keys().filter(|n| !layout.contains_key(*n) && !ignorable(n, cfg)).collect();
    if !extra.is_empty() {
        let names: Vec<&str> = extra.iter().take(5).map(|s| s.as_str()).collect();
        return Err(Error::Weights(format!(
            "checkpoint has {} tensor(s) a {kind} does not use (wrong model_type or layer count?): {}",
            extra.len(),
            names.join(", ")
        )));
    }
    for (name, (_, part, shape, _)) in &layout {
        let t = &tensors[name];
        if &t.shape != shape {
            return Err(Error::Weights(format!("tensor {name} has shape {:?}, the config implies {shape:?}", t.shape)));
        }
        let want = match part {
            Part::Whole => None,
            Part::QWeight => Some("U32"),
            Part::Scales => Some("F16"),
        };
        match want {
            None if matches!(t.dtype, weights::Dtype::Other(_)) => {
                return Err(Error::Weights(format!(
                    "tensor {name} has dtype {}; only F32, F16 and BF16 checkpoints are supported",
                    t.dtype.name()
                )))
            }
            Some(d) if t.dtype.name() != d => {
                return Err(Error::Weights(format!(
                    "tensor {name} has dtype {}; a pre-quantized checkpoint stores it as {d}",
                    t.dtype.name()
                )))
            }
            _ => {}
        }
    }
    Ok(())
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
                qk_norm: if cfg.family == Family::Qwen3 {
                    Some(f32_buf(&l("qk_norm"), 2 * cfg.head_dim)?)
                } else {
                    None
                },
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
        let expect = |b: &'_ Option<wgpu::Buffer>| -> Result<wgpu::Buffer> {
            b.clone().ok_or_else(|| Error::Weights(format!("no destination for {name}")))
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
