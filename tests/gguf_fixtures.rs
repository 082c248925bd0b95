//! GGUF fixtures made by llama.cpp's own converter and quantizer (scripts/gguf-tools.sh) from
//! tiny random checkpoints with the real vocabulary, and a sanity check of the candle
//! reference that later tests compare our engine with:
//! - the f16 file's weights are the checkpoint's, bit for bit, under llama.cpp's names and in
//!   the checkpoint's row order (no q/k permutation; v1's c_attn kept fused as attn_qkv);
//! - candle on the f16 file (tests/common/candle_gguf.rs) decodes the same greedy ids as candle
//!   on the safetensors checkpoint (tests/common/candle_ref.rs), with logits within f32 noise;
//! - candle's dequantized Q8_0 / Q4_0 / Q4_K_M files stay close to the f16 logits, and candle
//!   dequantizes every tensor as gguf-py (llama.cpp's Python package) does;
//! - llama-quantize's choice of type per tensor (the file types' mixes) is what the notes say.
//!
//! The first run installs the tools and converts (minutes; Qwen v1's vocabulary is slow in the
//! converter); later runs find everything in ~/.cache/qwen-webgpu.

mod common;

use candle_core::quantized::GgmlDType;
use common::candle_gguf::{self, dequantized, tensor_types, CandleGguf};
use common::candle_ref::CandleQwen;
use common::gguf_fixture::{checkpoint, gguf_fixture, gguf_py_dequantize, spec};
use common::{assert_close, random_ids, random_tensors};

/// Prompt ids below the first special token (151643).
fn prompt() -> Vec<u32> {
    random_ids(7, 151643, 11)
}

const N: usize = 8;

/// The prompt's last logits and N greedy ids from `step(ids, position)` (last logits).
fn greedy(mut step: impl FnMut(&[u32], usize) -> Vec<f32>, prompt: &[u32]) -> (Vec<f32>, Vec<u32>) {
    let first = step(prompt, 0);
    let mut logits = first.clone();
    let mut ids = Vec::new();
    for i in 0..N {
        let t = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap() as u32;
        ids.push(t);
        if i + 1 < N {
            logits = step(&[t], prompt.len() + i);
        }
    }
    (first, ids)
}

/// Relative RMS error of `got` against `want`.
fn rel_rms(got: &[f32], want: &[f32]) -> f32 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den).sqrt() as f32
}

/// The f16 file holds the checkpoint's values under llama.cpp's names, unpermuted.
fn check_layout(family: &str) {
    let s = spec(family);
    let t = random_tensors(&s, common::gguf_fixture::SEED);
    let (_, g) = dequantized(&gguf_fixture(family, "f16"));
    let pairs: Vec<(String, String)> = if family == "qwen" {
        let mut p = vec![
            ("token_embd.weight", "transformer.wte.weight"),
            ("output.weight", "lm_head.weight"),
            ("output_norm.weight", "transformer.ln_f.weight"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect::<Vec<_>>();
        for i in 0..s.layers {
            for (a, b) in [
                ("attn_qkv.weight", "attn.c_attn.weight"),
                ("attn_qkv.bias", "attn.c_attn.bias"),
                ("attn_output.weight", "attn.c_proj.weight"),
                ("attn_norm.weight", "ln_1.weight"),
                ("ffn_norm.weight", "ln_2.weight"),
                ("ffn_up.weight", "mlp.w1.weight"),
                ("ffn_gate.weight", "mlp.w2.weight"),
                ("ffn_down.weight", "mlp.c_proj.weight"),
            ] {
                p.push((format!("blk.{i}.{a}"), format!("transformer.h.{i}.{b}")));
            }
        }
        p
    } else {
        let mut p = vec![
            ("token_embd.weight".to_string(), "model.embed_tokens.weight".to_string()),
            ("output_norm.weight".to_string(), "model.norm.weight".to_string()),
        ];
        if !s.tie {
            p.push(("output.weight".into(), "lm_head.weight".into()));
        }
        for i in 0..s.layers {
            let mut fields = vec![
                ("attn_q.weight", "self_attn.q_proj.weight"),
                ("attn_k.weight", "self_attn.k_proj.weight"),
                ("attn_v.weight", "self_attn.v_proj.weight"),
                ("attn_output.weight", "self_attn.o_proj.weight"),
                ("attn_norm.weight", "input_layernorm.weight"),
                ("ffn_norm.weight", "post_attention_layernorm.weight"),
                ("ffn_gate.weight", "mlp.gate_proj.weight"),
                ("ffn_up.weight", "mlp.up_proj.weight"),
                ("ffn_down.weight", "mlp.down_proj.weight"),
            ];
            if family == "qwen2" {
                fields.extend([
                    ("attn_q.bias", "self_attn.q_proj.bias"),
                    ("attn_k.bias", "self_attn.k_proj.bias"),
                    ("attn_v.bias", "self_attn.v_proj.bias"),
                ]);
            } else {
                fields.extend([
                    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
                    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
                ]);
            }
            for (a, b) in fields {
                p.push((format!("blk.{i}.{a}"), format!("model.layers.{i}.{b}")));
            }
        }
        p
    };
    assert_eq!(g.len(), pairs.len(), "{family}: tensor count {:?}", g.keys().collect::<Vec<_>>());
    for (gname, hname) in pairs {
        let x = g.get(&gname).unwrap_or_else(|| panic!("{family}: no {gname}"));
        let (shape, vals) = &t[&hname];
        assert_eq!(x.dims(), shape.as_slice(), "{family}: {gname} shape vs {hname}");
        let got = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(got == *vals, "{family}: {gname} differs from {hname}");
    }
}

/// Candle on the f16 file against candle on the safetensors it came from.
fn check_f16_vs_safetensors(family: &str) {
    let s = spec(family);
    let p = prompt();
    let f16 = gguf_fixture(family, "f16");
    let mut st = CandleQwen::load(&checkpoint(family), &s);
    let (want_logits, want) = greedy(|ids, pos| st.forward(ids, pos).pop().unwrap(), &p);
    let mut gg = CandleGguf::load(&f16);
    let (got_logits, got) = greedy(|ids, pos| gg.forward(ids, pos), &p);
    assert_close(&format!("{family} f16 GGUF logits"), &got_logits, &want_logits, 1e-3, 1e-3);
    assert_eq!(got, want, "{family}: greedy ids, f16 GGUF vs safetensors");
    assert_eq!(candle_gguf::greedy(&f16, &p, N), got, "{family}: candle_gguf::greedy");
}

/// Candle's dequantized quantized files stay near the f16 logits.
fn check_quantized(family: &str) {
    let p = prompt();
    let base = candle_gguf::logits(&gguf_fixture(family, "f16"), &p);
    // Measured (relative RMS error of the last logits): q8_0 0.012-0.021, Q4_0 0.17-0.27,
    // Q4_K_M 0.15-0.20 (random Gaussian weights, 2 layers, a 256-wide head). A wrong
    // dequantizer or tensor mapping gives errors of order 1.
    let mut errs = Vec::new();
    for (outtype, limit) in [("q8_0", 0.05), ("Q4_0", 0.45), ("Q4_K_M", 0.45)] {
        let got = candle_gguf::logits(&gguf_fixture(family, outtype), &p);
        let e = rel_rms(&got, &base);
        eprintln!("{family} {outtype}: relative RMS error of the logits vs f16 {e:.4}");
        assert!(e < limit, "{family} {outtype}: relative RMS error {e} >= {limit}");
        errs.push(e);
    }
    assert!(errs[0] * 4.0 < errs[1].min(errs[2]), "{family}: 8-bit error not well below the 4-bit ones: {errs:?}");
}

/// Candle's dequantization (what the reference runs) against gguf-py's, tensor by tensor (the
/// first ROWS rows of the 151936-row tables: numpy is slow on all of them).
fn check_dequantizers(family: &str) {
    const ROWS: usize = 4096;
    for outtype in ["q8_0", "Q4_0", "Q4_K_M"] {
        let path = gguf_fixture(family, outtype);
        let (_, candle) = dequantized(&path);
        let py = gguf_py_dequantize(&path, ROWS);
        let types = tensor_types(&path);
        assert_eq!(py.len(), types.values().filter(|t| **t != GgmlDType::F32).count(), "{family} {outtype}");
        for (name, want) in &py {
            let t = &candle[name];
            let t = if t.dims().len() == 2 { t.narrow(0, 0, t.dims()[0].min(ROWS)).unwrap() } else { t.clone() };
            let got = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_close(&format!("{family} {outtype} {name} ({:?})", types[name]), &got, want, 1e-6, 1e-6);
        }
    }
}

/// llama-quantize's types for these files (rows of 256, 2 layers).
fn check_types(family: &str) {
    let s = spec(family);
    let f16 = tensor_types(&gguf_fixture(family, "f16"));
    for (name, ty) in &f16 {
        let want =
            if name.ends_with("norm.weight") || name.ends_with(".bias") { GgmlDType::F32 } else { GgmlDType::F16 };
        assert_eq!(*ty, want, "{family} f16: {name}");
    }
    let q8 = tensor_types(&gguf_fixture(family, "q8_0"));
    for (name, ty) in &q8 {
        let want =
            if name.ends_with("norm.weight") || name.ends_with(".bias") { GgmlDType::F32 } else { GgmlDType::Q8_0 };
        assert_eq!(*ty, want, "{family} q8_0: {name}");
    }
    let v = if family == "qwen" { "attn_qkv" } else { "attn_v" };
    // (file type, tensor, type): the head gets Q6_K in Q4_K_M (or Q4_0's own Q6_K for an
    // output.weight), a tied table stays as its file type's base, and Q4_K_M gives attn_v and
    // ffn_down Q6_K in its "more bits" layers (here layer 1 of 2).
    let head = if s.tie { "token_embd.weight" } else { "output.weight" };
    let q4km = tensor_types(&gguf_fixture(family, "Q4_K_M"));
    let q40 = tensor_types(&gguf_fixture(family, "Q4_0"));
    let mut report = Vec::new();
    for (file, types) in [("Q4_0", &q40), ("Q4_K_M", &q4km)] {
        let mut names: Vec<String> =
            types.iter().filter(|(_, t)| **t != GgmlDType::F32).map(|(n, t)| format!("{n}:{t:?}")).collect();
        names.sort();
        report.push(format!("{family} {file}: {names:?}"));
    }
    eprintln!("{}", report.join("\n"));
    assert_eq!(q4km[head], GgmlDType::Q6K, "{family} Q4_K_M {head}");
    assert_eq!(q4km[&format!("blk.1.{v}.weight")], GgmlDType::Q6K, "{family} Q4_K_M layer 1 {v}");
    assert_eq!(q4km["blk.1.ffn_down.weight"], GgmlDType::Q6K, "{family} Q4_K_M layer 1 ffn_down");
    assert_eq!(q4km["blk.0.ffn_up.weight"], GgmlDType::Q4K, "{family} Q4_K_M ffn_up");
    assert_eq!(q40["blk.0.ffn_up.weight"], GgmlDType::Q4_0, "{family} Q4_0 ffn_up");
    assert_eq!(q40[head], GgmlDType::Q6K, "{family} Q4_0 {head}");
}

macro_rules! family_tests {
    ($m:ident, $family:literal) => {
        mod $m {
            #[test]
            fn f16_weights_are_the_checkpoint() {
                super::check_layout($family);
            }
            #[test]
            fn f16_matches_safetensors() {
                super::check_f16_vs_safetensors($family);
            }
            #[test]
            fn quantized_files_stay_close() {
                super::check_quantized($family);
            }
            #[test]
            fn quantizer_types() {
                super::check_types($family);
            }
        }
    };
}

/// The dequantizers do not depend on the family: qwen2's files hold Q8_0, Q4_0, Q4_K and Q6_K.
#[test]
fn candle_dequantizes_like_gguf_py() {
    check_dequantizers("qwen2");
}

family_tests!(qwen_v1, "qwen");
family_tests!(qwen2, "qwen2");
family_tests!(qwen3, "qwen3");
