//! A GGUF file as a Qwen checkpoint: the model config from its metadata, and its tensors
//! under the names our checkpoint layout uses ([`crate::config::TensorNames`]), with
//! `[rows, cols]` shapes (GGUF lists `ne[0]`, the row length, first).
//!
//! Names and metadata follow what llama.cpp's converter (`convert_hf_to_gguf.py`) writes:
//! - every family: `token_embd`, `output_norm`, `output` (absent when tied), and per layer
//!   `blk.N.{attn_norm, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}`;
//! - `qwen2`/`qwen3`: `blk.N.attn_{q,k,v}` (+ `.bias` in qwen2), qwen3 `attn_{q,k}_norm`;
//! - `qwen` (v1): `blk.N.attn_qkv` (weight and bias, c_attn as it is); `ffn_gate` is v1's
//!   `w2` and `ffn_up` its `w1`, as in our layout (gate = w2).
//!
//! Metadata: `general.architecture`, then `{arch}.embedding_length`, `.block_count`,
//! `.attention.head_count`, `.attention.head_count_kv`, `.attention.key_length` (qwen3's
//! head_dim), `.rope.freq_base`, `.attention.layer_norm_rms_epsilon`, `.context_length`. The
//! MLP width and vocabulary size come from the tensors' shapes (v1's metadata halves
//! `intermediate_size` as we do, but the shapes are the truth). A `qwen` GGUF carries no NTK or
//! logN flags: every released Qwen v1 config sets both, with `seq_length` = its context length,
//! so both are on.

use super::gguf::{GgufHeader, GgufValue};
use super::{Dtype, TensorInfo};
use crate::config::{QkvNames, QwenConfig};
use crate::error::{Error, Result};
use crate::weights::ggml::GgmlType;
use std::collections::BTreeMap;

/// A GGUF checkpoint: config, and tensors by our names.
pub struct GgufModel {
    pub config: QwenConfig,
    /// Our name → where the tensor is in the file.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// Our name → the GGUF name (for messages).
    pub file_names: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, GgufValue>,
}

fn meta<'a>(h: &'a GgufHeader, key: &str) -> Option<&'a GgufValue> {
    h.metadata.get(key)
}

fn meta_u64(h: &GgufHeader, key: &str, label: &str) -> Result<Option<u64>> {
    match meta(h, key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Error::Config(format!("{label}: GGUF metadata {key} must be a non-negative integer, got {v:?}"))
        }),
    }
}

fn meta_f64(h: &GgufHeader, key: &str, label: &str) -> Result<Option<f64>> {
    match meta(h, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::Config(format!("{label}: GGUF metadata {key} must be a number, got {v:?}"))),
    }
}

fn dtype(t: GgmlType) -> Dtype {
    match t {
        GgmlType::F32 => Dtype::F32,
        GgmlType::F16 => Dtype::F16,
        GgmlType::BF16 => Dtype::BF16,
        t => Dtype::Ggml(t),
    }
}

impl GgufModel {
    /// Read the config and the tensor table of a parsed GGUF header. `label` names the file.
    pub fn from_header(h: GgufHeader, label: &str) -> Result<GgufModel> {
        let arch = meta(&h, "general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| Error::Config(format!("{label}: GGUF metadata has no general.architecture")))?
            .to_string();
        let family = match arch.as_str() {
            "qwen" | "qwen2" | "qwen3" => arch.clone(),
            other => {
                return Err(Error::Config(format!(
                    "{label}: GGUF architecture \"{other}\" is not supported (supported: qwen, qwen2, qwen3{})",
                    if other.contains("moe") { "; mixture-of-experts models are not" } else { "" }
                )))
            }
        };
        // Shapes, by GGUF name, as [rows, cols].
        let mut shapes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for t in &h.tensors {
            let mut s = Vec::with_capacity(t.dims.len());
            for &d in t.dims.iter().rev() {
                s.push(
                    usize::try_from(d)
                        .map_err(|_| Error::Weights(format!("{label}: tensor {} has a dimension of {d}", t.name)))?,
                );
            }
            shapes.insert(&t.name, s);
        }
        let rows_of = |name: &str| -> Result<usize> {
            shapes
                .get(name)
                .filter(|s| s.len() == 2)
                .map(|s| s[0])
                .ok_or_else(|| Error::Weights(format!("{label}: GGUF has no 2-D tensor {name}")))
        };
        let k = |s: &str| format!("{arch}.{s}");
        let need = |key: String| -> Result<u64> {
            meta_u64(&h, &key, label)?.ok_or_else(|| Error::Config(format!("{label}: GGUF metadata lacks {key}")))
        };
        let hidden = need(k("embedding_length"))?;
        let layers = need(k("block_count"))?;
        let heads = need(k("attention.head_count"))?;
        let kv_heads = meta_u64(&h, &k("attention.head_count_kv"), label)?.unwrap_or(heads);
        let context = need(k("context_length"))?;
        let rope_theta = meta_f64(&h, &k("rope.freq_base"), label)?.unwrap_or(10000.0);
        let eps = meta_f64(&h, &k("attention.layer_norm_rms_epsilon"), label)?.unwrap_or(1e-6);
        if let Some(t) = meta(&h, &k("rope.scaling.type")).and_then(GgufValue::as_str) {
            if t != "none" {
                return Err(Error::Config(format!(
                    "{label}: RoPE scaling \"{t}\" is not supported (only plain RoPE; the long-context scaling we run is Qwen v1's dynamic NTK)"
                )));
            }
        }
        let ff = rows_of("blk.0.ffn_gate.weight")?;
        let vocab = rows_of("token_embd.weight")?;
        let tie = !shapes.contains_key("output.weight");
        let config = match family.as_str() {
            "qwen" => serde_json::json!({
                "model_type": "qwen",
                "hidden_size": hidden,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "kv_channels": hidden / heads.max(1),
                "intermediate_size": 2 * ff,
                "vocab_size": vocab,
                "rotary_emb_base": rope_theta,
                "layer_norm_epsilon": eps,
                "seq_length": context,
                "max_position_embeddings": context,
                "use_dynamic_ntk": true,
                "use_logn_attn": true,
                "tie_word_embeddings": tie,
            }),
            _ => {
                let mut c = serde_json::json!({
                    "model_type": family,
                    "hidden_size": hidden,
                    "num_hidden_layers": layers,
                    "num_attention_heads": heads,
                    "num_key_value_heads": kv_heads,
                    "intermediate_size": ff,
                    "vocab_size": vocab,
                    "rope_theta": rope_theta,
                    "rms_norm_eps": eps,
                    "max_position_embeddings": context,
                    "tie_word_embeddings": tie,
                });
                if let Some(d) = meta_u64(&h, &k("attention.key_length"), label)? {
                    c["head_dim"] = d.into();
                }
                if family == "qwen3" {
                    c["attention_bias"] = shapes.contains_key("blk.0.attn_q.bias").into();
                }
                c
            }
        };
        let config = QwenConfig::from_json(&config.to_string()).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{label} (GGUF metadata): {m}")),
            e => e,
        })?;
        let names = config.family.tensor_names();
        let mut tensors = BTreeMap::new();
        let mut file_names = BTreeMap::new();
        for t in &h.tensors {
            let ours = our_name(&t.name, names).unwrap_or_else(|| t.name.clone());
            let info = TensorInfo {
                dtype: dtype(t.ggml_type),
                shape: shapes[t.name.as_str()].clone(),
                start: t.start,
                end: t.end,
            };
            if tensors.insert(ours.clone(), info).is_some() {
                return Err(Error::Weights(format!("{label}: two GGUF tensors map onto {ours}")));
            }
            file_names.insert(ours, t.name.clone());
        }
        Ok(GgufModel { config, tensors, file_names, metadata: h.metadata })
    }
}

/// Our checkpoint name of GGUF tensor `name` (None: not a tensor the converter writes for
/// Qwen; it is then kept under its own name, and the layout check names it).
fn our_name(name: &str, n: &crate::config::TensorNames) -> Option<String> {
    match name {
        "token_embd.weight" => return Some(n.embed.into()),
        "output_norm.weight" => return Some(n.final_norm.into()),
        "output.weight" => return Some(n.lm_head.into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (i, field) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    let layer = |s: &str| Some(format!("{}{i}.{s}", n.layer_prefix));
    let (base, kind) = field.rsplit_once('.')?;
    let with_kind = |s: &str| layer(&format!("{s}.{kind}"));
    match (base, kind, n.qkv) {
        ("attn_norm", "weight", _) => layer(n.attn_norm),
        ("attn_qkv", _, QkvNames::Fused(qkv)) => with_kind(qkv),
        ("attn_q", _, QkvNames::Split(p)) => with_kind(p[0]),
        ("attn_k", _, QkvNames::Split(p)) => with_kind(p[1]),
        ("attn_v", _, QkvNames::Split(p)) => with_kind(p[2]),
        ("attn_q_norm", "weight", _) => layer(n.q_norm),
        ("attn_k_norm", "weight", _) => layer(n.k_norm),
        ("attn_output", "weight", _) => layer(n.o_proj),
        ("ffn_norm", "weight", _) => layer(n.mlp_norm),
        ("ffn_gate", "weight", _) => layer(n.gate),
        ("ffn_up", "weight", _) => layer(n.up),
        ("ffn_down", "weight", _) => layer(n.down),
        _ => None,
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::GgufFile;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use crate::weights::gguf::{parse_header, Parsed};
    use crate::weights::TensorSource;
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom};
    use std::path::{Path, PathBuf};

    /// A GGUF file on disk: the header read at open, tensor bytes read on demand.
    pub struct GgufFile {
        path: PathBuf,
        file: File,
        pub model: GgufModel,
    }

    /// Bytes read first; a header that needs more says how many.
    const FIRST_READ: u64 = 1 << 20;

    impl GgufFile {
        pub fn open(path: &Path) -> Result<GgufFile> {
            let label = path.display().to_string();
            crate::files::check_regular(path)?;
            let mut file = File::open(path).map_err(|e| Error::io(&label, e))?;
            let len = file.metadata().map_err(|e| Error::io(&label, e))?.len();
            let mut prefix = Vec::new();
            let mut want = FIRST_READ.min(len);
            let header = loop {
                if want > prefix.len() as u64 {
                    let mut more = vec![0u8; (want - prefix.len() as u64) as usize];
                    file.read_exact(&mut more).map_err(|e| Error::io(&label, e))?;
                    prefix.extend(more);
                }
                match parse_header(&prefix, len, &label)? {
                    Parsed::Header(h) => break h,
                    Parsed::NeedMore(n) if n > prefix.len() as u64 && n <= len => want = n,
                    Parsed::NeedMore(n) => {
                        return Err(Error::Weights(format!(
                            "{label}: the GGUF header asks for {n} bytes of a {len}-byte file (truncated?)"
                        )))
                    }
                }
            };
            let model = GgufModel::from_header(header, &label)?;
            Ok(GgufFile { path: path.to_path_buf(), file, model })
        }
    }

    impl TensorSource for GgufFile {
        fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
            &self.model.tensors
        }
        fn read(&mut self, name: &str) -> Result<Vec<u8>> {
            let info = self.model.tensors.get(name).ok_or_else(|| Error::Weights(format!("no tensor {name}")))?;
            let label = self.path.display().to_string();
            let mut buf = vec![0u8; info.byte_len()];
            self.file.seek(SeekFrom::Start(info.start)).map_err(|e| Error::io(&label, e))?;
            self.file.read_exact(&mut buf).map_err(|e| Error::io(&label, e))?;
            Ok(buf)
        }
    }
}
