//! What the GPU holds, read back as checkpoint tensors: the browser's model store (js/store.js)
//! keeps a loaded model as a pre-quantized folder, so a reload reads about the quantized bytes
//! and quantizes nothing.
//!
//! The folder is exactly the format `qwen-webgpu quantize` writes ([`crate::weights::quantize`]):
//! one safetensors file whose `__metadata__` names the format (q4/q8; none for f16), each
//! quantized matrix as `NAME.qweight` (U32 `[rows, words_per_row]`) and `NAME.scales` (F16
//! `[rows, cols / 32]`), every other matrix as F16. Norms and biases are F32 (what the GPU
//! holds; `quantize` keeps the source dtype, so those are equal in value, not in bytes).
//! Names are the checkpoint's own, so q/k/v and gate/up come back as the row ranges of the
//! fused GPU matrices they were written into, and a matrix split across bindings is read chunk
//! by chunk. A tensor is read a block of rows at a time ([`read_rows`]), so the host never
//! holds more than one block.

use crate::config::QwenConfig;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuMatrix};
use crate::weights::checkpoint::{layout, Part, Slot};
use crate::weights::quant::{self, WeightFormat};
use crate::weights::safetensors::{serialize_header, HeaderEntry};
use std::collections::BTreeMap;

use super::{Qwen, QwenWeights};

/// Version of the encoder that made the GPU's words and scales. Bump it when the GPU encoder
/// (or the CPU one) makes different bytes for the same input: stored models made by another
/// encoder are then ignored (their key differs), never loaded as if equal.
pub const GPU_ENCODER_VERSION: &str = "1";

/// The store's version: the folder layout ([`quant::FORMAT_VERSION`]) and the encoder
/// ([`GPU_ENCODER_VERSION`]), as `"layout.encoder"`. Part of every stored model's key.
pub fn store_version() -> String {
    format!("{}.{}", quant::FORMAT_VERSION, GPU_ENCODER_VERSION)
}

/// One tensor of the exported checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportTensor {
    pub name: String,
    /// `U32`, `F16` or `F32`.
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: u64,
    /// Byte offset in the file (after the header).
    pub offset: u64,
}

impl ExportTensor {
    /// Rows a [`read_rows`] call counts: the first dimension of a matrix, 1 for a vector.
    pub fn rows(&self) -> usize {
        if self.shape.len() == 2 {
            self.shape[0]
        } else {
            1
        }
    }

    /// Bytes of one such row.
    pub fn row_bytes(&self) -> u64 {
        self.bytes / self.rows().max(1) as u64
    }
}

/// The exported checkpoint's layout: the safetensors header and every tensor, in file order.
#[derive(Debug, Clone)]
pub struct Export {
    pub format: WeightFormat,
    /// The whole header: 8-byte length, then the JSON (padded to 8 bytes).
    pub header: Vec<u8>,
    pub tensors: Vec<ExportTensor>,
}

impl Export {
    /// The checkpoint a model of `cfg` loaded in `format` exports: q4/q8 as a pre-quantized
    /// folder, f16 as a plain one. Quantized pairs and F32 vectors first, then F16 tensors, so
    /// every 4-byte tensor starts 4-byte aligned (as `quantize` orders them).
    pub fn plan(cfg: &QwenConfig, format: WeightFormat) -> Result<Export> {
        let stored = if format == WeightFormat::F16 { None } else { Some(format) };
        let mut list: Vec<(String, String, Part, &'static str, Vec<usize>)> = layout(cfg, stored)
            .into_iter()
            .map(|(name, (source, part, shape, _))| {
                let dtype = match part {
                    Part::QWeight => "U32",
                    Part::Scales => "F16",
                    Part::Whole if shape.len() == 2 => "F16",
                    Part::Whole => "F32",
                };
                (name, source, part, dtype, shape)
            })
            .collect();
        list.sort_by(|a, b| {
            (a.3 == "F16" && a.2 == Part::Whole, &a.1, a.2).cmp(&(b.3 == "F16" && b.2 == Part::Whole, &b.1, b.2))
        });
        let mut at = 0u64;
        let mut tensors = Vec::with_capacity(list.len());
        for (name, _, _, dtype, shape) in list {
            let size = if dtype == "F16" { 2 } else { 4 };
            let bytes = shape.iter().product::<usize>() as u64 * size;
            tensors.push(ExportTensor { name, dtype, shape, bytes, offset: at });
            at += bytes;
        }
        let entries: Vec<HeaderEntry> = tensors
            .iter()
            .map(|t| HeaderEntry {
                name: t.name.clone(),
                dtype: t.dtype.to_string(),
                shape: t.shape.clone(),
                bytes: t.bytes,
            })
            .collect();
        let metadata = match stored {
            Some(f) => quant::checkpoint_metadata(f),
            None => BTreeMap::new(),
        };
        let header = serialize_header(&entries, &metadata)?;
        Ok(Export { format, header, tensors })
    }

    /// Bytes of the whole file: header and tensor data.
    pub fn file_bytes(&self) -> u64 {
        self.header.len() as u64 + self.tensors.iter().map(|t| t.bytes).sum::<u64>()
    }

    pub fn tensor(&self, name: &str) -> Result<&ExportTensor> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Request(format!("export: no tensor {name} in this model's checkpoint")))
    }
}

/// Rows `row0..row0 + rows` of the exported tensor `name` (a vector: row 0 of 1), as the
/// checkpoint stores them, read back from the GPU of `model`, which was loaded in `format`.
pub async fn read_rows(model: &Qwen, format: WeightFormat, name: &str, row0: usize, rows: usize) -> Result<Vec<u8>> {
    let cfg = &model.config;
    let stored = if format == WeightFormat::F16 { None } else { Some(format) };
    let lay = layout(cfg, stored);
    let Some((_, part, shape, slot)) = lay.get(name) else {
        return Err(Error::Request(format!("export: no tensor {name} in this model's checkpoint")));
    };
    let total_rows = if shape.len() == 2 { shape[0] } else { 1 };
    if rows == 0 || row0.checked_add(rows).is_none_or(|end| end > total_rows) {
        return Err(Error::Request(format!("export: rows {row0}..+{rows} of {name}, which has {total_rows}")));
    }
    let w = &model.weights;
    if let Some((m, base)) = matrix_of(w, *slot, name)? {
        return read_matrix(&model.gpu, m, *part, base + row0, rows, name).await;
    }
    let (buf, offset) = vector_of(w, cfg, *slot, name)?;
    let len = shape.iter().product::<usize>() as u64 * 4;
    let mut bytes = model.gpu.read(buf, offset, len).await?;
    bytes.truncate(len as usize);
    Ok(bytes)
}

/// The GPU matrix a slot's tensor is rows of, and its first row there.
fn matrix_of<'a>(w: &'a QwenWeights, slot: Slot, name: &str) -> Result<Option<(&'a GpuMatrix, usize)>> {
    let layer = |i: usize| w.layers.get(i).ok_or_else(|| Error::Weights(format!("export: {name}: no layer {i}")));
    Ok(Some(match slot {
        Slot::Embed => (&w.embed, 0),
        Slot::LmHead => (w.lm_head(), 0),
        Slot::Qkv(i, r) => (&layer(i)?.qkv, r),
        Slot::OProj(i) => (&layer(i)?.o_proj, 0),
        Slot::GateUp(i, r) => (&layer(i)?.gate_up, r),
        Slot::Down(i) => (&layer(i)?.down, 0),
        Slot::Norm | Slot::AttnNorm(_) | Slot::MlpNorm(_) | Slot::QkvBias(..) | Slot::QNorm(_) | Slot::KNorm(_) => {
            return Ok(None)
        }
    }))
}

/// The f32 buffer a vector lives in, and its byte offset there.
fn vector_of<'a>(w: &'a QwenWeights, cfg: &QwenConfig, slot: Slot, name: &str) -> Result<(&'a wgpu::Buffer, u64)> {
    let layer = |i: usize| w.layers.get(i).ok_or_else(|| Error::Weights(format!("export: {name}: no layer {i}")));
    let missing = || Error::Weights(format!("export: {name} has no buffer in this model"));
    Ok(match slot {
        Slot::Norm => (&w.norm, 0),
        Slot::AttnNorm(i) => (&layer(i)?.attn_norm, 0),
        Slot::MlpNorm(i) => (&layer(i)?.mlp_norm, 0),
        Slot::QkvBias(i, at) => (layer(i)?.qkv_bias.as_deref().ok_or_else(missing)?, at as u64 * 4),
        Slot::QNorm(i) => (layer(i)?.qk_norm.as_deref().ok_or_else(missing)?, 0),
        Slot::KNorm(i) => (layer(i)?.qk_norm.as_deref().ok_or_else(missing)?, cfg.head_dim as u64 * 4),
        _ => return Err(missing()),
    })
}

/// Rows `g0..g0 + n` of one part of a GPU matrix, chunk by chunk: the value words (`QWeight`),
/// the f16 scales (`Scales`), or an f16 matrix's values without the padding of an odd width
/// (`Whole`).
async fn read_matrix(gpu: &Gpu, m: &GpuMatrix, part: Part, g0: usize, n: usize, name: &str) -> Result<Vec<u8>> {
    if !m.is_uniform() || m.format.ggml().is_some() {
        return Err(Error::Weights(format!(
            "export: {name} is held in a GGUF block format; a model loaded from GGUF is not exported (its file is its own cache)"
        )));
    }
    let spr = m.format.scales_per_row(m.cols);
    let (gpu_row, out_row, scales) = match part {
        Part::QWeight if m.format != WeightFormat::F16 => (m.stride * 4, m.stride * 4, false),
        Part::Scales if spr > 0 => (spr * 2, spr * 2, true),
        Part::Whole if m.format == WeightFormat::F16 => (m.stride * 4, m.cols * 2, false),
        _ => {
            return Err(Error::Weights(format!(
                "export: {name} is stored as {part:?} but the GPU holds its matrix as {}",
                m.format.name()
            )))
        }
    };
    if g0 + n > m.rows {
        return Err(Error::Weights(format!("export: {name}: rows {g0}..{} of a {}-row matrix", g0 + n, m.rows)));
    }
    let mut out = Vec::with_capacity(n * out_row);
    for (c, lo, hi) in m.chunks_over(g0, n) {
        // Scales follow the chunk's words; every offset and size here is a multiple of 4
        // (scales per row are even: see WeightFormat::for_cols).
        let base = if scales { c.scales_offset() * 4 } else { 0 };
        let at = (base + (lo - c.row0) * gpu_row) as u64;
        let len = (hi - lo) * gpu_row;
        let bytes = gpu.read(&c.buffer, at, len as u64).await?;
        if bytes.len() < len {
            return Err(Error::Gpu(format!("export: {name}: read {} of {len} bytes", bytes.len())));
        }
        if gpu_row == out_row {
            out.extend_from_slice(&bytes[..len]);
        } else {
            for r in 0..hi - lo {
                out.extend_from_slice(&bytes[r * gpu_row..r * gpu_row + out_row]);
            }
        }
    }
    if out.len() != n * out_row {
        return Err(Error::Weights(format!("export: {name}: got {} bytes for {n} rows of {out_row}", out.len())));
    }
    Ok(out)
}
