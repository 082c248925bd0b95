//! Loading a Qwen-1.8B-shaped bf16 checkpoint: where the time goes, per weight format and
//! encoder (the CPU reference, or the GPU kernels of `shaders/quantize.wgsl`).
//!
//! ```text
//! cargo run --release --example load_bench -- [--layers N] [--vocab V] [--formats q4,q8] [--encoders cpu,gpu]
//! cargo run --release --example load_bench -- --write DIR [--layers N]   # the folder, for the browser
//! ```
//! The weights are the benchmark's synthesised ones (`bench::RandomSource`, bf16, the same for
//! any reading order). Natively they are made in memory, tensor by tensor, and the time to make
//! them is left out; `--write DIR` writes them as `config.json` + `model.safetensors` (3.7 GB
//! at full size) for serving to the browser (`MODELS=DIR scripts/serve.sh`).
//! Phases: `put` = CPU time handing tensors to the uploader (convert + encode on the CPU, or
//! copy to the staging buffer and record the GPU encoder); `gpu wait` = until the GPU has
//! finished every upload and encode and reported no bad value; `first pass` = compiling the
//! forward pass's kernels and running one token.

use qwen_webgpu::bench::{qwen_1_8b, RandomSource};
use qwen_webgpu::gpu::{Gpu, GpuOptions};
use qwen_webgpu::model::weights::{Encoder, Uploader};
use qwen_webgpu::weights::quant::WeightFormat;
use qwen_webgpu::weights::safetensors::{serialize_header, HeaderEntry};
use qwen_webgpu::weights::TensorSource;
use qwen_webgpu::{ModelOptions, Qwen, Want};
use std::io::Write;
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> qwen_webgpu::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let layers = arg(&args, "--layers").map(|v| v.parse().expect("--layers N"));
    let mut cfg = qwen_1_8b(layers);
    if let Some(v) = arg(&args, "--vocab") {
        cfg.vocab_size = v.parse().expect("--vocab V");
    }
    if let Some(dir) = arg(&args, "--write") {
        return write(&cfg, std::path::Path::new(&dir));
    }
    let formats = arg(&args, "--formats").unwrap_or("q4,q8".into());
    let encoders = arg(&args, "--encoders").unwrap_or("cpu,gpu".into());
    let gpu = pollster::block_on(Gpu::new(&GpuOptions::default()))?;
    println!("adapter: {}", gpu.describe());
    println!("model: Qwen-1.8B shape, {} layers, vocab {}", cfg.num_hidden_layers, cfg.vocab_size);
    println!("| weights | encoder | bf16 read | put (s) | gpu wait (s) | first pass (s) | ready (s) |");
    println!("|---|---|---|---|---|---|---|");
    drop(gpu);
    for f in formats.split(',') {
        let format = WeightFormat::parse(f)?;
        for e in encoders.split(',') {
            let encoder = Encoder::parse(e)?;
            let gpu = pollster::block_on(Gpu::new(&GpuOptions::default()))?;
            let mut src = RandomSource::new(&cfg, 1);
            let mut up = Uploader::new(gpu, &cfg, src.tensors(), format)?;
            up.set_encoder(encoder);
            let (mut put_s, mut bytes) = (0.0, 0u64);
            for (name, _) in up.wanted() {
                let data = src.read(&name)?;
                bytes += data.len() as u64;
                let t = Instant::now();
                up.put(&name, &data)?;
                put_s += t.elapsed().as_secs_f64();
            }
            let t = Instant::now();
            let (gpu, weights) = up.finish()?;
            let wait_s = t.elapsed().as_secs_f64();
            let opts = ModelOptions { context: Some(64), weights: format, ..Default::default() };
            let mut model = Qwen::from_weights(gpu, cfg.clone(), weights, &opts)?;
            let t = Instant::now();
            pollster::block_on(model.feed(&[1], Want::Token))?;
            let pass_s = t.elapsed().as_secs_f64();
            println!(
                "| {f} | {} | {:.2} GB | {put_s:.2} | {wait_s:.2} | {pass_s:.2} | {:.2} |",
                encoder.name(),
                bytes as f64 / 1e9,
                put_s + wait_s + pass_s
            );
            model.gpu.device.destroy();
        }
    }
    Ok(())
}

/// `config.json` (Qwen v1, as Qwen-1.8B's own) and `model.safetensors` of the synthesised
/// weights, one tensor in memory at a time.
fn write(cfg: &qwen_webgpu::QwenConfig, dir: &std::path::Path) -> qwen_webgpu::Result<()> {
    let io = |e: std::io::Error| qwen_webgpu::Error::write(dir.display(), e);
    std::fs::create_dir_all(dir).map_err(io)?;
    let config = serde_json::json!({
        "architectures": ["QWenLMHeadModel"],
        "model_type": "qwen",
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "kv_channels": cfg.head_dim,
        "intermediate_size": cfg.intermediate_size * 2,
        "vocab_size": cfg.vocab_size,
        "rotary_emb_base": 10000,
        "rotary_pct": 1.0,
        "seq_length": 8192,
        "max_position_embeddings": 8192,
        "use_dynamic_ntk": true,
        "use_logn_attn": true,
        "layer_norm_epsilon": 1e-6,
        "tie_word_embeddings": false,
        "no_bias": true,
        "bf16": true
    });
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(io)?;
    let mut src = RandomSource::new(cfg, 1);
    let mut names: Vec<(String, u64)> = src.tensors().iter().map(|(n, t)| (n.clone(), t.start)).collect();
    names.sort_by_key(|(_, at)| *at);
    let entries: Vec<HeaderEntry> = names
        .iter()
        .map(|(n, _)| {
            let t = &src.tensors()[n];
            HeaderEntry { name: n.clone(), dtype: "BF16".into(), shape: t.shape.clone(), bytes: t.byte_len() as u64 }
        })
        .collect();
    let header = serialize_header(&entries, &Default::default())?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("model.safetensors")).map_err(io)?);
    out.write_all(&header).map_err(io)?;
    for (n, _) in &names {
        out.write_all(&src.read(n)?).map_err(io)?;
    }
    out.flush().map_err(io)?;
    println!("wrote {} ({} tensors)", dir.display(), names.len());
    Ok(())
}
