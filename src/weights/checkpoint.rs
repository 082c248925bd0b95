//! What a checkpoint holds: for each family, the stored tensor names (a table in
//! [`crate::config::TensorNames`]), their shapes and where each goes in the model's fused GPU
//! layout ([`Slot`]), for plain checkpoints and for folders pre-quantized by
//! `qwen-webgpu quantize`. Checks a checkpoint's tensor list against a config without reading
//! tensor bytes. Knows nothing of the GPU.

use super::quant::{self, WeightFormat, QWEIGHT_SUFFIX, SCALES_SUFFIX};
use super::TensorInfo;
use crate::config::{QkvNames, QwenConfig};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Where a checkpoint tensor goes in the model's GPU layout: q, k and v are rows of one fused
/// matrix, and so are gate and up (gate rows first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Slot {
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

/// The tensors a checkpoint of `cfg` must hold: name → (shape, slot), from the family's
/// tensor-name table and the config's flags.
pub(crate) fn plan(cfg: &QwenConfig) -> BTreeMap<String, (Vec<usize>, Slot)> {
    let (d, ff, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let names = cfg.family.tensor_names();
    let mut p = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, slot: Slot| {
        p.insert(name, (shape, slot));
    };
    add(names.embed.into(), vec![v, d], Slot::Embed);
    add(names.final_norm.into(), vec![d], Slot::Norm);
    for i in 0..cfg.num_hidden_layers {
        let n = |s: &str| format!("{}{i}.{s}", names.layer_prefix);
        let w = |s: &str| format!("{}{i}.{s}.weight", names.layer_prefix);
        add(n(names.attn_norm), vec![d], Slot::AttnNorm(i));
        match names.qkv {
            QkvNames::Fused(qkv) => {
                add(w(qkv), vec![qd + 2 * kvd, d], Slot::Qkv(i, 0));
                if cfg.attention_bias {
                    add(n(&format!("{qkv}.bias")), vec![qd + 2 * kvd], Slot::QkvBias(i, 0));
                }
            }
            QkvNames::Split(parts) => {
                for (name, rows, row0) in [(parts[0], qd, 0), (parts[1], kvd, qd), (parts[2], kvd, qd + kvd)] {
                    add(w(name), vec![rows, d], Slot::Qkv(i, row0));
                    if cfg.attention_bias {
                        add(n(&format!("{name}.bias")), vec![rows], Slot::QkvBias(i, row0));
                    }
                }
            }
        }
        if cfg.qk_norm {
            add(n(names.q_norm), vec![cfg.head_dim], Slot::QNorm(i));
            add(n(names.k_norm), vec![cfg.head_dim], Slot::KNorm(i));
        }
        add(n(names.o_proj), vec![d, qd], Slot::OProj(i));
        add(n(names.mlp_norm), vec![d], Slot::MlpNorm(i));
        add(n(names.gate), vec![ff, d], Slot::GateUp(i, 0));
        add(n(names.up), vec![ff, d], Slot::GateUp(i, ff));
        add(n(names.down), vec![d, ff], Slot::Down(i));
    }
    if !cfg.tie_word_embeddings {
        add(names.lm_head.into(), vec![v, d], Slot::LmHead);
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
pub(crate) fn layout(
    cfg: &QwenConfig,
    stored: Option<WeightFormat>,
) -> BTreeMap<String, (String, Part, Vec<usize>, Slot)> {
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
    let names = cfg.family.tensor_names();
    names.ignored_suffixes.iter().any(|s| name.ends_with(s)) || (cfg.tie_word_embeddings && name == names.lm_head)
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
        if let super::Dtype::Ggml(g) = t.dtype {
            if !g.decodable() || *part != Part::Whole {
                return Err(g.unsupported(name));
            }
        }
        let want = match part {
            Part::Whole => None,
            Part::QWeight => Some("U32"),
            Part::Scales => Some("F16"),
        };
        match want {
            None if matches!(t.dtype, super::Dtype::Other(_)) => {
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
