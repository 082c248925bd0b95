//! Bad input gets a clear error, never a panic.

mod common;

use common::{fixture, random_ids, write_checkpoint, Spec};
use qwen_webgpu::generate::{generate, GenerateOptions};
use qwen_webgpu::gpu::GpuOptions;
use qwen_webgpu::sampler::SamplingParams;
use qwen_webgpu::{Error, ModelOptions, Qwen};
use std::path::Path;

fn load(dir: &Path) -> Result<Qwen, Error> {
    pollster::block_on(Qwen::load_dir(
        dir,
        &GpuOptions::default(),
        &ModelOptions { context: Some(32), max_batch: 8, ..Default::default() },
    ))
}

fn load_err(dir: &Path) -> String {
    match load(dir) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn expect(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} should mention {p:?}");
    }
}

#[test]
fn missing_tensor() {
    let spec = Spec::qwen2(false);
    let (dir, mut t) = fixture("err-missing", &spec, 1);
    t.remove("model.layers.1.mlp.up_proj.weight");
    write_checkpoint(&dir, &spec, &t);
    expect(&load_err(&dir), &["lacks", "model.layers.1.mlp.up_proj.weight"]);
}

#[test]
fn extra_tensor() {
    let spec = Spec::qwen2(false);
    let (dir, mut t) = fixture("err-extra", &spec, 2);
    t.insert("model.layers.7.mlp.up_proj.weight".into(), (vec![2, 2], vec![0.0; 4]));
    write_checkpoint(&dir, &spec, &t);
    expect(&load_err(&dir), &["does not use", "model.layers.7.mlp.up_proj.weight"]);
}

#[test]
fn misshaped_tensor() {
    let spec = Spec::qwen_v1();
    let (dir, mut t) = fixture("err-shape", &spec, 3);
    t.insert("transformer.h.0.attn.c_proj.weight".into(), (vec![64, 60], vec![0.0; 64 * 60]));
    write_checkpoint(&dir, &spec, &t);
    expect(&load_err(&dir), &["transformer.h.0.attn.c_proj.weight", "[64, 60]", "[64, 64]"]);
}

#[test]
fn truncated_file() {
    let spec = Spec::qwen3();
    let (dir, _) = fixture("err-trunc", &spec, 4);
    let f = dir.join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(len - 1000).unwrap();
    expect(&load_err(&dir), &["out of range", "truncated"]);
    file.set_len(5).unwrap();
    expect(&load_err(&dir), &["too short"]);
}

/// Build a safetensors file by hand with the given header and data length.
fn raw_file(dir: &Path, header: &str, data_len: usize) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

#[test]
fn corrupt_headers() {
    let spec = Spec::qwen3();
    let (dir, _) = fixture("err-header", &spec, 5);
    raw_file(&dir, r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, 8);
    expect(&load_err(&dir), &["data_offsets [0, 16] out of range"]);
    raw_file(&dir, r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}"#, 16);
    expect(&load_err(&dir), &["12 bytes stored", "needs 16"]);
    raw_file(
        &dir,
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        16,
    );
    expect(&load_err(&dir), &["overlap"]);
    raw_file(&dir, "{not json", 16);
    expect(&load_err(&dir), &["not valid JSON"]);
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    std::fs::write(dir.join("model.safetensors"), huge).unwrap();
    expect(&load_err(&dir), &["header length"]);
}

#[test]
fn unsupported_dtype() {
    let spec = Spec::qwen3();
    let (dir, t) = fixture("err-dtype", &spec, 6);
    // Rewrite one tensor as I32 with the right shape.
    let views: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = t
        .iter()
        .map(|(n, (shape, v))| {
            if n == "model.norm.weight" {
                (n.clone(), shape.clone(), safetensors::Dtype::I32, vec![0u8; v.len() * 4])
            } else {
                (n.clone(), shape.clone(), safetensors::Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
        })
        .collect();
    let tv: Vec<(String, safetensors::tensor::TensorView)> = views
        .iter()
        .map(|(n, s, d, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(tv, None, &dir.join("model.safetensors")).unwrap();
    expect(&load_err(&dir), &["model.norm.weight", "dtype I32"]);
}

#[test]
fn bad_configs() {
    let spec = Spec::qwen3();
    let (dir, _) = fixture("err-config", &spec, 7);
    let cases = [
        (r#"{"model_type":"llama","hidden_size":64}"#, "unsupported model_type \"llama\""),
        (r#"{"hidden_size":64}"#, "missing `model_type`"),
        ("[1,2", "not valid JSON"),
        (
            r#"{"model_type":"qwen2","hidden_size":64,"num_attention_heads":4,"num_key_value_heads":3,"num_hidden_layers":1,"intermediate_size":8,"vocab_size":10,"max_position_embeddings":16}"#,
            "not a multiple",
        ),
        (r#"{"model_type":"qwen2","hidden_size":-4}"#, "`hidden_size` must be a positive integer"),
        (
            r#"{"model_type":"qwen2","hidden_size":4000000000,"num_attention_heads":4,"num_hidden_layers":1,"intermediate_size":8,"vocab_size":10,"max_position_embeddings":16}"#,
            "implausibly large",
        ),
        // Qwen3 without head_dim and a hidden size below the head count: head_dim would be 0
        // (it divided by zero in the mat-vec set-up and the q4 encoder before).
        (
            r#"{"model_type":"qwen3","hidden_size":2,"num_attention_heads":4,"num_hidden_layers":1,"intermediate_size":8,"vocab_size":10,"max_position_embeddings":16}"#,
            "head_dim 0 must be even, positive",
        ),
        // Scaled RoPE we do not implement is refused, not silently ignored.
        (
            r#"{"model_type":"qwen2","hidden_size":64,"num_attention_heads":4,"num_hidden_layers":1,"intermediate_size":8,"vocab_size":10,"max_position_embeddings":16,"rope_scaling":{"type":"yarn","factor":4.0}}"#,
            "rope_scaling",
        ),
    ];
    for (json, want) in cases {
        std::fs::write(dir.join("config.json"), json).unwrap();
        expect(&load_err(&dir), &[want]);
    }
    std::fs::remove_file(dir.join("config.json")).unwrap();
    expect(&load_err(&dir), &["config.json"]);
}

#[test]
fn missing_weights_and_bad_index() {
    let spec = Spec::qwen_v1(); // two shards with an index
    let (dir, _) = fixture("err-index", &spec, 8);
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    expect(&load_err(&dir), &["model-00002-of-00002.safetensors"]);
    std::fs::write(dir.join("model.safetensors.index.json"), r#"{"weight_map":{"a":"../../etc/passwd"}}"#).unwrap();
    expect(&load_err(&dir), &["bad shard name"]);
    let empty = common::temp_dir("err-empty");
    std::fs::write(empty.join("config.json"), spec.config_json()).unwrap();
    expect(&load_err(&empty), &["no model.safetensors"]);
}

#[test]
fn requests_out_of_range() {
    let spec = Spec::qwen2(true);
    let (dir, _) = fixture("err-request", &spec, 9);
    let mut m = load(&dir).unwrap();
    let opts = GenerateOptions { max_new_tokens: 4, sampling: Default::default(), stop_ids: vec![], logprobs: None };
    // Prompt longer than the context of 32.
    let long = random_ids(40, spec.vocab, 1);
    let e = pollster::block_on(generate(&mut m, &long, &opts, &mut |_| true)).unwrap_err();
    assert!(matches!(e, Error::ContextFull(_)), "{e}");
    expect(&e.to_string(), &["40 tokens", "context of 32"]);
    // A token id past the vocabulary.
    let e = pollster::block_on(generate(&mut m, &[1, spec.vocab as u32], &opts, &mut |_| true)).unwrap_err();
    expect(&e.to_string(), &["token id 301 is out of range"]);
    // Bad sampling parameters.
    let bad = GenerateOptions { sampling: SamplingParams { top_p: 0.0, ..Default::default() }, ..opts.clone() };
    let e = pollster::block_on(generate(&mut m, &[1, 2], &bad, &mut |_| true)).unwrap_err();
    expect(&e.to_string(), &["top_p"]);
    // Generation that reaches the end of the context stops cleanly.
    m.reset();
    let opts = GenerateOptions { max_new_tokens: 100, ..opts };
    let g = pollster::block_on(generate(&mut m, &random_ids(30, spec.vocab, 2), &opts, &mut |_| true)).unwrap();
    assert_eq!(g.finish, qwen_webgpu::generate::FinishReason::ContextFull);
    assert_eq!(g.tokens.len(), 3);
    // After all that the model still works.
    m.reset();
    let g =
        pollster::block_on(generate(&mut m, &[1, 2, 3], &GenerateOptions { max_new_tokens: 5, ..opts }, &mut |_| true))
            .unwrap();
    assert_eq!(g.tokens.len(), 5);
}

/// A lost device is its own error kind (JS gives it the code `gpu_lost`): after
/// `destroy()`, every call fails with [`Error::GpuLost`], and loading on a new device works.
#[test]
fn device_loss_is_gpu_lost() {
    let spec = Spec::qwen2(true);
    let (dir, _) = fixture("err-lost", &spec, 11);
    let mut m = load(&dir).unwrap();
    let opts = GenerateOptions { max_new_tokens: 3, sampling: Default::default(), stop_ids: vec![], logprobs: None };
    pollster::block_on(generate(&mut m, &[1, 2, 3], &opts, &mut |_| true)).unwrap();
    m.gpu.device.destroy();
    let e = pollster::block_on(generate(&mut m, &[1, 2, 3], &opts, &mut |_| true)).unwrap_err();
    assert!(matches!(e, Error::GpuLost(_)), "{e}");
    assert!(m.gpu.is_lost());
    let mut again = load(&dir).unwrap();
    pollster::block_on(generate(&mut again, &[1, 2, 3], &opts, &mut |_| true)).unwrap();
}
