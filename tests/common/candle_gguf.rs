//! The independent reference for GGUF files: candle-transformers running the file's weights,
//! every one dequantized to f32 by candle's own GGUF reader and dequantizers.
//!
//! - `qwen2` / `qwen3` files run on candle's `quantized_qwen2` / `quantized_qwen3` models. Those
//!   keep a quantized weight quantized (and quantize the activations for its dot products)
//!   unless the process environment says `CANDLE_DEQUANTIZE_ALL` (read once per thread). To be
//!   independent of the environment, the file is re-written in memory with every tensor
//!   dequantized to F32 (same names, shapes and metadata, less the tokenizer's arrays), and the
//!   model is built from that: candle's `QMatMul` then holds plain f32 tensors. The copy also
//!   says `general.dtype = 0` (F32), which `quantized_qwen3` reads for its RoPE tables (F16
//!   otherwise).
//! - `qwen` (v1) files, for which candle has no quantized model: each tensor is dequantized and
//!   mapped onto the qwen2 names of `candle_ref::CandleQwen` (attn_qkv split into q/k/v with
//!   their biases, ffn_gate → gate_proj, ffn_up → up_proj, ffn_down → down_proj), with
//!   `feed_forward_length / 2` as the MLP width (llama.cpp's qwen model halves it too) and
//!   head_dim = embedding_length / head_count.

use super::candle_ref::CandleQwen;
use super::{FileDtype, Spec};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor, D};
use candle_transformers::models::{quantized_qwen2, quantized_qwen3};
use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

pub enum CandleGguf {
    Q2(quantized_qwen2::ModelWeights),
    Q3(quantized_qwen3::ModelWeights),
    V1(CandleQwen),
}

fn md_u32(ct: &gguf_file::Content, key: &str) -> usize {
    ct.metadata.get(key).unwrap_or_else(|| panic!("GGUF key {key} missing")).to_u32().expect(key) as usize
}

fn md_f32(ct: &gguf_file::Content, key: &str) -> f64 {
    ct.metadata.get(key).unwrap_or_else(|| panic!("GGUF key {key} missing")).to_f32().expect(key) as f64
}

/// Every tensor of the file, dequantized to f32 by candle (shape in row-major order, i.e. the
/// GGUF dims reversed: `[rows, row length]` for a matrix).
pub fn dequantized(path: &Path) -> (gguf_file::Content, HashMap<String, Tensor>) {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ct = gguf_file::Content::read(&mut f).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = HashMap::new();
    for name in ct.tensor_infos.keys() {
        let q = ct.tensor(&mut f, name, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.insert(name.clone(), q.dequantize(&Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}")));
    }
    (ct, out)
}

/// The GGUF type of each tensor, by name.
pub fn tensor_types(path: &Path) -> HashMap<String, GgmlDType> {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ct = gguf_file::Content::read(&mut f).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ct.tensor_infos.iter().map(|(n, i)| (n.clone(), i.ggml_dtype)).collect()
}

/// The file with every tensor as F32, in memory.
fn f32_copy(ct: &gguf_file::Content, tensors: &HashMap<String, Tensor>) -> Vec<u8> {
    let q: Vec<(String, QTensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), QTensor::quantize(t, GgmlDType::F32).expect("F32 QTensor"))).collect();
    let f32_dtype = gguf_file::Value::U32(0);
    let mut md: Vec<(&str, &gguf_file::Value)> = ct
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("tokenizer.") && *k != "general.dtype")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    md.push(("general.dtype", &f32_dtype));
    let qs: Vec<(&str, &QTensor)> = q.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut buf = Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &md, &qs).expect("write the F32 copy");
    buf.into_inner()
}

/// Map a dequantized `qwen` (v1) file onto CandleQwen's qwen2 layout.
fn v1_model(ct: &gguf_file::Content, t: HashMap<String, Tensor>) -> CandleQwen {
    let hidden = md_u32(ct, "qwen.embedding_length");
    let heads = md_u32(ct, "qwen.attention.head_count");
    let kv_heads = ct.metadata.get("qwen.attention.head_count_kv").map_or(heads, |v| v.to_u32().expect("kv") as usize);
    let head_dim = hidden / heads;
    let vocab = t["token_embd.weight"].dims()[0];
    let s = Spec {
        model_type: "qwen",
        hidden,
        layers: md_u32(ct, "qwen.block_count"),
        heads,
        kv_heads,
        head_dim,
        ff: md_u32(ct, "qwen.feed_forward_length") / 2,
        vocab,
        tie: !t.contains_key("output.weight"),
        seq_length: md_u32(ct, "qwen.context_length"),
        ntk_logn: false,
        dtype: FileDtype::F32,
        shards: 1,
    };
    let eps = ["qwen.attention.layer_norm_rms_epsilon", "qwen.attention.layer_norm_epsilon"]
        .iter()
        .find(|k| ct.metadata.contains_key(**k))
        .map(|k| md_f32(ct, k))
        .expect("a norm epsilon");
    let theta = md_f32(ct, "qwen.rope.freq_base");
    let (qd, kvd) = (heads * head_dim, kv_heads * head_dim);
    let mut out = HashMap::new();
    for (name, x) in t {
        let (blk, field) = match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
            Some((i, f)) => (Some(i.to_string()), f.to_string()),
            None => (None, name.clone()),
        };
        let hf = |f: &str| format!("model.layers.{}.{f}", blk.as_deref().unwrap_or("?"));
        match (blk.is_some(), field.as_str()) {
            (true, "attn_qkv.weight" | "attn_qkv.bias") => {
                let kind = field.rsplit('.').next().unwrap_or("weight");
                out.insert(hf(&format!("self_attn.q_proj.{kind}")), x.narrow(0, 0, qd).expect("q"));
                out.insert(hf(&format!("self_attn.k_proj.{kind}")), x.narrow(0, qd, kvd).expect("k"));
                out.insert(hf(&format!("self_attn.v_proj.{kind}")), x.narrow(0, qd + kvd, kvd).expect("v"));
            }
            (true, f) => {
                let to = match f {
                    "attn_output.weight" => "self_attn.o_proj.weight",
                    "attn_norm.weight" => "input_layernorm.weight",
                    "ffn_norm.weight" => "post_attention_layernorm.weight",
                    "ffn_gate.weight" => "mlp.gate_proj.weight",
                    "ffn_up.weight" => "mlp.up_proj.weight",
                    "ffn_down.weight" => "mlp.down_proj.weight",
                    other => panic!("unexpected qwen GGUF tensor {name} ({other})"),
                };
                out.insert(hf(to), x);
            }
            (false, _) => {
                let to = match name.as_str() {
                    "token_embd.weight" => "model.embed_tokens.weight",
                    "output_norm.weight" => "model.norm.weight",
                    "output.weight" => "lm_head.weight",
                    other => panic!("unexpected qwen GGUF tensor {other}"),
                };
                out.insert(to.to_string(), x);
            }
        }
    }
    CandleQwen::from_tensors(out, &s, theta, eps)
}

impl CandleGguf {
    /// Load a GGUF file with every weight dequantized to f32.
    pub fn load(path: &Path) -> CandleGguf {
        let (ct, tensors) = dequantized(path);
        let arch = ct.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned();
        match arch.as_deref() {
            Some("qwen") => CandleGguf::V1(v1_model(&ct, tensors)),
            Some(a @ ("qwen2" | "qwen3")) => {
                let bytes = f32_copy(&ct, &tensors);
                drop(tensors);
                let mut r = Cursor::new(bytes);
                let ct = gguf_file::Content::read(&mut r).expect("read the F32 copy");
                if a == "qwen2" {
                    CandleGguf::Q2(quantized_qwen2::ModelWeights::from_gguf(ct, &mut r, &Device::Cpu).expect("qwen2"))
                } else {
                    CandleGguf::Q3(quantized_qwen3::ModelWeights::from_gguf(ct, &mut r, &Device::Cpu).expect("qwen3"))
                }
            }
            other => panic!("{}: architecture {other:?} is not qwen, qwen2 or qwen3", path.display()),
        }
    }

    /// Logits of the last of `tokens`, at positions `offset..`, continuing the KV cache.
    pub fn forward(&mut self, tokens: &[u32], offset: usize) -> Vec<f32> {
        let input = Tensor::new(tokens, &Device::Cpu).expect("ids").unsqueeze(0).expect("batch");
        let last = match self {
            CandleGguf::Q2(m) => m.forward(&input, offset).expect("qwen2 forward"),
            CandleGguf::Q3(m) => m.forward(&input, offset).expect("qwen3 forward"),
            CandleGguf::V1(m) => return m.forward(tokens, offset).pop().expect("a position"),
        };
        last.flatten_all().expect("flatten").to_vec1::<f32>().expect("f32 logits")
    }
}

fn argmax(logits: &[f32]) -> u32 {
    Tensor::new(logits, &Device::Cpu)
        .and_then(|t| t.argmax(D::Minus1))
        .and_then(|t| t.to_scalar::<u32>())
        .expect("argmax")
}

/// The last position's logits after the whole prompt `tokens`.
pub fn logits(path: &Path, tokens: &[u32]) -> Vec<f32> {
    CandleGguf::load(path).forward(tokens, 0)
}

/// Greedy continuation of `n` tokens after `prompt`, from a fresh model.
pub fn greedy(path: &Path, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut m = CandleGguf::load(path);
    let mut logits = m.forward(prompt, 0);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = argmax(&logits);
        out.push(t);
        if i + 1 < n {
            logits = m.forward(&[t], prompt.len() + i);
        }
    }
    out
}
