//! The independent reference: candle-transformers' qwen2/qwen3 on the CPU in f32, loading
//! the fixture's safetensors files with candle's own reader. Qwen v1 checkpoints are mapped
//! onto the qwen2 layout (c_attn split into q/k/v, w2 → gate_proj, w1 → up_proj), which is
//! exactly v1's architecture when NTK/logN are inactive.

use super::Spec;
use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::{qwen2, qwen3};
use std::collections::HashMap;
use std::path::Path;

pub enum Base {
    Q2(qwen2::Model),
    Q3(qwen3::Model),
}

pub struct CandleQwen {
    base: Base,
    lm_head: Tensor,
}

fn load_files(dir: &Path) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("safetensors") {
            for (n, t) in candle_core::safetensors::load(&p, &Device::Cpu).unwrap() {
                out.insert(n, t.to_dtype(DType::F32).unwrap());
            }
        }
    }
    out
}

/// Rename a Qwen v1 checkpoint into the qwen2 layout.
fn v1_to_qwen2(s: &Spec, t: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    let (qd, kvd) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    for (name, x) in t {
        let rest = name.strip_prefix("transformer.h.");
        if let Some(rest) = rest {
            let (i, field) = rest.split_once('.').unwrap();
            let p = format!("model.layers.{i}.");
            match field {
                "attn.c_attn.weight" | "attn.c_attn.bias" => {
                    let kind = field.rsplit('.').next().unwrap();
                    out.insert(format!("{p}self_attn.q_proj.{kind}"), x.narrow(0, 0, qd).unwrap());
                    out.insert(format!("{p}self_attn.k_proj.{kind}"), x.narrow(0, qd, kvd).unwrap());
                    out.insert(format!("{p}self_attn.v_proj.{kind}"), x.narrow(0, qd + kvd, kvd).unwrap());
                }
                "attn.c_proj.weight" => drop(out.insert(format!("{p}self_attn.o_proj.weight"), x)),
                "ln_1.weight" => drop(out.insert(format!("{p}input_layernorm.weight"), x)),
                "ln_2.weight" => drop(out.insert(format!("{p}post_attention_layernorm.weight"), x)),
                "mlp.w2.weight" => drop(out.insert(format!("{p}mlp.gate_proj.weight"), x)),
                "mlp.w1.weight" => drop(out.insert(format!("{p}mlp.up_proj.weight"), x)),
                "mlp.c_proj.weight" => drop(out.insert(format!("{p}mlp.down_proj.weight"), x)),
                other => panic!("unexpected v1 tensor {other}"),
            }
        } else {
            let n = match name.as_str() {
                "transformer.wte.weight" => "model.embed_tokens.weight",
                "transformer.ln_f.weight" => "model.norm.weight",
                other => other,
            };
            out.insert(n.to_string(), x);
        }
    }
    out
}

impl CandleQwen {
    pub fn load(dir: &Path, s: &Spec) -> CandleQwen {
        let mut t = load_files(dir);
        if s.model_type == "qwen" {
            t = v1_to_qwen2(s, t);
        }
        let theta = if s.model_type == "qwen" { 10000.0 } else { 1e6 };
        CandleQwen::from_tensors(t, s, theta, 1e-6)
    }

    /// The model from f32 tensors already in the qwen2/qwen3 layout (HF names; a Qwen v1
    /// checkpoint mapped onto qwen2's, as `load` does), with the given RoPE base and RMSNorm
    /// epsilon. `s` gives the shapes; `s.tie` takes the LM head from the embedding table.
    pub fn from_tensors(t: HashMap<String, Tensor>, s: &Spec, theta: f64, eps: f64) -> CandleQwen {
        let dev = Device::Cpu;
        let lm_head = if s.tie { t["model.embed_tokens.weight"].clone() } else { t["lm_head.weight"].clone() };
        let vb = VarBuilder::from_tensors(t, DType::F32, &dev);
        let act = candle_nn::Activation::Silu;
        let base = if s.model_type == "qwen3" {
            Base::Q3(
                qwen3::Model::new(
                    &qwen3::Config {
                        vocab_size: s.vocab,
                        hidden_size: s.hidden,
                        intermediate_size: s.ff,
                        num_hidden_layers: s.layers,
                        num_attention_heads: s.heads,
                        head_dim: s.head_dim,
                        attention_bias: false,
                        num_key_value_heads: s.kv_heads,
                        max_position_embeddings: 4096,
                        sliding_window: None,
                        max_window_layers: s.layers,
                        tie_word_embeddings: s.tie,
                        rope_theta: theta,
                        rms_norm_eps: eps,
                        use_sliding_window: false,
                        hidden_act: act,
                    },
                    vb,
                )
                .unwrap(),
            )
        } else {
            Base::Q2(
                qwen2::Model::new(
                    &qwen2::Config {
                        vocab_size: s.vocab,
                        hidden_size: s.hidden,
                        intermediate_size: s.ff,
                        num_hidden_layers: s.layers,
                        num_attention_heads: s.heads,
                        num_key_value_heads: s.kv_heads,
                        max_position_embeddings: 4096,
                        sliding_window: 1 << 20,
                        max_window_layers: s.layers,
                        tie_word_embeddings: s.tie,
                        rope_theta: theta,
                        rms_norm_eps: eps,
                        use_sliding_window: false,
                        hidden_act: act,
                    },
                    vb,
                )
                .unwrap(),
            )
        };
        CandleQwen { base, lm_head }
    }

    /// Logits `[n, vocab]` for `tokens` at positions `offset..`, continuing the KV cache.
    pub fn forward(&mut self, tokens: &[u32], offset: usize) -> Vec<Vec<f32>> {
        let input = Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let h = match &mut self.base {
            Base::Q2(m) => m.forward(&input, offset, None).unwrap(),
            Base::Q3(m) => m.forward(&input, offset).unwrap(),
        };
        let logits = h.i(0).unwrap().matmul(&self.lm_head.t().unwrap()).unwrap();
        logits.to_vec2::<f32>().unwrap()
    }

    /// Greedy continuation of `n` tokens from a fresh model.
    pub fn greedy(dir: &Path, s: &Spec, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut m = CandleQwen::load(dir, s);
        let mut logits = m.forward(prompt, 0).pop().unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            let t = Tensor::new(logits.as_slice(), &Device::Cpu)
                .unwrap()
                .argmax(D::Minus1)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap();
            out.push(t);
            logits = m.forward(&[t], prompt.len() + i).pop().unwrap();
        }
        out
    }
}
