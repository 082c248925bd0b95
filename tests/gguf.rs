//! GGUF files made by llama.cpp's own converter and quantizer (tests/common/gguf_fixture.rs)
//! loaded by our engine, against candle-transformers running the same file with every weight
//! dequantized to f32 by candle's GGUF reader (tests/common/candle_gguf.rs; Qwen v1 on candle's
//! qwen2 with c_attn split): last-position logits close, greedy ids identical. Also: the GPU
//! holds a K-quant tensor's bytes exactly as the file stores them, and the weights' GPU bytes
//! equal the file's tensor bytes.

mod common;

use common::candle_gguf;
use common::gguf_fixture::gguf_fixture;
use common::{assert_close, random_ids};
use qwen_webgpu::generate::{generate, GenerateOptions};
use qwen_webgpu::gpu::GpuOptions;
use qwen_webgpu::model::{ModelOptions, Output, Qwen, Want};
use qwen_webgpu::weights::gguf_model::GgufFile;
use qwen_webgpu::weights::quant::WeightFormat;
use qwen_webgpu::weights::TensorSource;
use std::path::Path;

const N: usize = 16;

fn load(path: &Path) -> Qwen {
    let opts = ModelOptions { context: Some(128), max_batch: 32, ..Default::default() };
    pollster::block_on(Qwen::load_dir(path, &GpuOptions::default(), &opts)).expect("load")
}

fn last_logits(m: &mut Qwen, tokens: &[u32]) -> Vec<f32> {
    m.reset();
    match pollster::block_on(m.feed(tokens, Want::AllLogits)).unwrap() {
        Output::Logits(l) => {
            let v = l.len() / tokens.len();
            l[l.len() - v..].to_vec()
        }
        o => panic!("unexpected {o:?}"),
    }
}

fn greedy(m: &mut Qwen, prompt: &[u32], n: usize) -> Vec<u32> {
    m.reset();
    let opts = GenerateOptions { max_new_tokens: n, sampling: Default::default(), stop_ids: vec![], logprobs: None };
    pollster::block_on(generate(m, prompt, &opts, &mut |_| true)).unwrap().tokens
}

/// Ours against candle on one fixture file.
fn check(family: &str, outtype: &str) {
    let path = gguf_fixture(family, outtype);
    let prompt = random_ids(9, 151643, 31);
    let mut ours = load(&path);
    let what = format!("{family} {outtype}");
    let want = candle_gguf::logits(&path, &prompt);
    assert_close(&format!("{what}: last logits"), &last_logits(&mut ours, &prompt), &want, 2e-3, 2e-3);
    let want = candle_gguf::greedy(&path, &prompt, N);
    assert_eq!(greedy(&mut ours, &prompt, N), want, "{what}: greedy ids");

    // GPU bytes: every weight stays in its file type (Q8_0/Q4_0 as q8/q4 of the same size,
    // F32 norms as f32, F16/F32 matrices as f16), so a file without F32 matrices takes exactly
    // its tensor bytes for the matrices.
    let file = GgufFile::open(&path).unwrap();
    let w = &ours.weights;
    let mut gpu: u64 = w.embed.gpu_bytes() + w.lm_head.as_ref().map_or(0, |m| m.gpu_bytes());
    for l in &w.layers {
        gpu += l.qkv.gpu_bytes() + l.o_proj.gpu_bytes() + l.gate_up.gpu_bytes() + l.down.gpu_bytes();
    }
    let matrix_bytes: u64 = file.tensors().values().filter(|t| t.shape.len() == 2).map(|t| t.byte_len() as u64).sum();
    if outtype != "f32" {
        assert_eq!(gpu, matrix_bytes, "{what}: GPU bytes of the matrices equal the file's");
    }
}

#[test]
fn qwen2_gguf_matches_candle() {
    for t in ["f16", "q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"] {
        check("qwen2", t);
    }
}

#[test]
fn qwen3_gguf_matches_candle() {
    for t in ["q8_0", "Q4_K_M"] {
        check("qwen3", t);
    }
}

#[test]
fn qwen_v1_gguf_matches_candle() {
    for t in ["f16", "Q4_0", "Q4_K_M"] {
        check("qwen", t);
    }
}

/// A K-quant tensor goes to the GPU byte for byte: layer 0's down projection of the Q4_K_M
/// file (Q6_K there: llama.cpp gives some layers' ffn_down more bits) read back from its
/// buffer equals the file's bytes; and the types the GPU holds are the file's.
#[test]
fn k_quant_bytes_on_the_gpu_are_the_files() {
    let path = gguf_fixture("qwen2", "Q4_K_M");
    let m = load(&path);
    let mut file = GgufFile::open(&path).unwrap();
    let name = "model.layers.0.mlp.down_proj.weight";
    let info = file.tensors()[name].clone();
    let stored = file.read(name).unwrap();
    let down = &m.weights.layers[0].down;
    let qwen_webgpu::weights::Dtype::Ggml(t) = info.dtype else { panic!("{name} is {:?}", info.dtype) };
    assert_eq!(down.format, WeightFormat::from_ggml(t).unwrap());
    let mut got = Vec::new();
    for c in &down.chunks {
        let n = c.gpu_bytes(down.cols);
        got.extend(pollster::block_on(m.gpu.read(&c.buffer, 0, n.div_ceil(4) * 4)).unwrap()[..n as usize].to_vec());
    }
    assert_eq!(got, stored, "{name} ({}) on the GPU", t.name());
    // The fused q/k/v and gate/up matrices hold one part per run of tensors of one type.
    for (layer, matrix, parts) in [
        (0, &m.weights.layers[0].qkv, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"].as_slice()),
        (1, &m.weights.layers[1].gate_up, ["mlp.gate_proj", "mlp.up_proj"].as_slice()),
    ] {
        let mut want: Vec<WeightFormat> = Vec::new();
        for p in parts {
            let dtype = &file.tensors()[&format!("model.layers.{layer}.{p}.weight")].dtype;
            let qwen_webgpu::weights::Dtype::Ggml(t) = dtype else { panic!("{p} is {dtype:?}") };
            let f = WeightFormat::from_ggml(*t).unwrap();
            if want.last() != Some(&f) {
                want.push(f);
            }
        }
        let got: Vec<WeightFormat> = matrix.chunks.iter().map(|c| c.format).collect();
        assert_eq!(got, want, "layer {layer} {parts:?}: one part per run of one type");
    }
}

/// Asking for q8/q4 re-encodes a GGUF's tensors (lossy, by choice); the result still runs
/// and stays close to the file's own types.
#[test]
fn a_gguf_can_be_re_encoded_to_q8() {
    let path = gguf_fixture("qwen3", "Q4_K_M");
    let prompt = random_ids(7, 151643, 32);
    let mut own = load(&path);
    let opts = ModelOptions { context: Some(128), max_batch: 32, weights: WeightFormat::Q8, ..Default::default() };
    let mut q8 = pollster::block_on(Qwen::load_dir(&path, &GpuOptions::default(), &opts)).expect("load as q8");
    assert!(q8.weights.layers[0].qkv.chunks.iter().all(|c| c.format == WeightFormat::Q8));
    let (a, b) = (last_logits(&mut own, &prompt), last_logits(&mut q8, &prompt));
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    assert!(dot / (norm(&a) * norm(&b)) > 0.99, "cosine {}", dot / (norm(&a) * norm(&b)));
}

/// The CLI on a .gguf: `generate --print-ids` gives candle's greedy ids, `info` names the
/// file's types, and `--chat` runs with the tokenizer from the file's own vocabulary.
#[test]
fn cli_generates_from_a_gguf() {
    let path = gguf_fixture("qwen2", "Q4_K_M");
    let prompt = random_ids(5, 151643, 33);
    let ids: Vec<String> = prompt.iter().map(|i| i.to_string()).collect();
    let bin = env!("CARGO_BIN_EXE_qwen-webgpu");
    let out = std::process::Command::new(bin)
        .args(["generate", "--model", path.to_str().unwrap(), "--prompt-ids", &ids.join(","), "--print-ids"])
        .args(["--max-new-tokens", "8", "--ignore-eos"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<u32> =
        String::from_utf8(out.stdout).unwrap().trim().split(',').map(|s| s.trim().parse().unwrap()).collect();
    assert_eq!(got, candle_gguf::greedy(&path, &prompt, 8), "CLI ids");
    let out = std::process::Command::new(bin).args(["info", "--model", path.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("stored: GGUF") && text.contains("Q4_K") && text.contains("Q6_K"), "{text}");
    let out = std::process::Command::new(bin)
        .args(["generate", "--model", path.to_str().unwrap(), "--chat", "--prompt", "你好", "--max-new-tokens", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("prompt "), "{}", String::from_utf8_lossy(&out.stderr));
}
