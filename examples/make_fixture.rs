//! Write a tiny random Qwen2 checkpoint (config.json + model.safetensors, or shards with an
//! index) in the Hugging Face layout, for the browser tests (tests/web) and quick CLI runs.
//!
//! ```text
//! cargo run --example make_fixture -- OUT_DIR [--vocab 301] [--hidden 64] [--layers 2]
//!     [--ff 96] [--heads 4] [--kv-heads 2] [--shards 1] [--tie] [--seed 1] [--eos ID]
//! ```
//! Weights are bf16 with values f16 also holds exactly; the scales keep logits peaked so
//! greedy decoding has clear winners on any adapter.

use std::collections::BTreeMap;
use std::path::PathBuf;

mod common;

struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
}

/// A value bf16 and f16 both hold exactly.
fn representable(x: f32) -> f32 {
    let b = half::bf16::from_f32(x).to_f32();
    if b.abs() < 6.2e-5 {
        0.0
    } else {
        b
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut out: Option<PathBuf> = None;
    let (mut vocab, mut hidden, mut layers, mut ff, mut heads, mut kv_heads, mut shards, mut seed) =
        (301usize, 64usize, 2usize, 96usize, 4usize, 2usize, 1usize, 1u64);
    let mut tie = false;
    let mut eos: Option<u64> = None;
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--vocab" => vocab = num("--vocab") as usize,
            "--hidden" => hidden = num("--hidden") as usize,
            "--layers" => layers = num("--layers") as usize,
            "--ff" => ff = num("--ff") as usize,
            "--heads" => heads = num("--heads") as usize,
            "--kv-heads" => kv_heads = num("--kv-heads") as usize,
            "--shards" => shards = num("--shards").max(1) as usize,
            "--seed" => seed = num("--seed"),
            "--eos" => eos = Some(num("--eos")),
            "--tie" => tie = true,
            _ if out.is_none() && !a.starts_with("--") => out = Some(PathBuf::from(a)),
            _ => {
                eprintln!("unknown argument {a}");
                std::process::exit(2)
            }
        }
    }
    let Some(out) = out else {
        eprintln!("usage: make_fixture OUT_DIR [--vocab N] [--hidden N] [--layers N] [--ff N] [--heads N] [--kv-heads N] [--shards N] [--tie] [--seed N] [--eos ID]");
        std::process::exit(2)
    };
    let hd = hidden / heads;
    let (qd, kvd) = (heads * hd, kv_heads * hd);
    let mut rng = Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B);
    let mut t: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut mat = |rng: &mut Rng, name: String, rows: usize, cols: usize, scale: f32| {
        let vals = (0..rows * cols).map(|_| representable(rng.normal() * scale)).collect();
        t.insert(name, (vec![rows, cols], vals));
    };
    let s = |n: usize| 1.0 / (n as f32).sqrt();
    let mut vecs: Vec<(String, usize, f32, f32)> = Vec::new();
    mat(&mut rng, "model.embed_tokens.weight".into(), vocab, hidden, if tie { 0.15 } else { 1.0 });
    for i in 0..layers {
        let n = |x: &str| format!("model.layers.{i}.{x}");
        mat(&mut rng, n("self_attn.q_proj.weight"), qd, hidden, s(hidden));
        mat(&mut rng, n("self_attn.k_proj.weight"), kvd, hidden, s(hidden));
        mat(&mut rng, n("self_attn.v_proj.weight"), kvd, hidden, s(hidden));
        mat(&mut rng, n("self_attn.o_proj.weight"), hidden, qd, s(qd));
        mat(&mut rng, n("mlp.gate_proj.weight"), ff, hidden, s(hidden));
        mat(&mut rng, n("mlp.up_proj.weight"), ff, hidden, s(hidden));
        mat(&mut rng, n("mlp.down_proj.weight"), hidden, ff, s(ff));
        vecs.push((n("self_attn.q_proj.bias"), qd, 0.0, 0.2));
        vecs.push((n("self_attn.k_proj.bias"), kvd, 0.0, 0.2));
        vecs.push((n("self_attn.v_proj.bias"), kvd, 0.0, 0.2));
        vecs.push((n("input_layernorm.weight"), hidden, 1.0, 0.1));
        vecs.push((n("post_attention_layernorm.weight"), hidden, 1.0, 0.1));
    }
    vecs.push(("model.norm.weight".into(), hidden, 1.0, 0.1));
    if !tie {
        mat(&mut rng, "lm_head.weight".into(), vocab, hidden, 3.0 * s(hidden));
    }
    for (name, len, mean, std) in vecs {
        let vals = (0..len).map(|_| representable(mean + std * rng.normal())).collect();
        t.insert(name, (vec![len], vals));
    }

    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
    let mut cfg = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": ff,
        "vocab_size": vocab,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 512,
        "tie_word_embeddings": tie,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16"
    });
    if let Some(e) = eos {
        cfg["eos_token_id"] = serde_json::json!(e);
    }
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&cfg).expect("json")).expect("write config");

    let names: Vec<&String> = t.keys().collect();
    let per = names.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (si, group) in names.chunks(per).enumerate() {
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", si + 1, shards)
        };
        common::write_bf16_safetensors(group.iter().map(|n| (*n, &t[*n])), &out.join(&file));
        for n in group {
            weight_map.insert((*n).clone(), serde_json::Value::String(file.clone()));
        }
    }
    if shards > 1 {
        let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
        std::fs::write(out.join("model.safetensors.index.json"), index.to_string()).expect("write index");
    }
    println!("{}", out.display());
}
