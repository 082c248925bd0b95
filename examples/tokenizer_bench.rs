//! Tokenizer encode throughput on ~1 MB of mixed-language text, both vocabulary formats.
//!
//!     bash scripts/fetch-vocab.sh
//!     cargo run --release --example tokenizer_bench -- [--mb N] [--dump-text FILE]
//!
//! The text is built deterministically from tests/data/tokenizer_corpus.jsonl, so
//! scripts/bench-tokenizer.sh can time Python tiktoken on exactly the same bytes
//! (`--dump-text` writes them out). The ids' count and FNV-1a hash let the two be compared.

use qwen_webgpu::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("tokenizer_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut mb = 1.0f64;
    let mut dump: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mb" => mb = args.next().ok_or("--mb needs a value")?.parse()?,
            "--dump-text" => dump = Some(args.next().ok_or("--dump-text needs a path")?.into()),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let text = bench_text((mb * 1024.0 * 1024.0) as usize)?;
    if let Some(p) = &dump {
        std::fs::write(p, &text)?;
    }
    let dir = match std::env::var_os("QWEN_VOCAB_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/qwen-webgpu/vocab"),
    };
    println!(
        "text: {} bytes, {} chars, mixed-language (from tests/data/tokenizer_corpus.jsonl)",
        text.len(),
        text.chars().count()
    );
    for name in ["qwen.tiktoken", "tokenizer.json"] {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(format!("missing {}: run scripts/fetch-vocab.sh", path.display()).into());
        }
        let t0 = Instant::now();
        let tok = Tokenizer::from_file(&path)?;
        let load = t0.elapsed().as_secs_f64();
        let mut best = f64::INFINITY;
        let mut ids = Vec::new();
        for _ in 0..3 {
            let t0 = Instant::now();
            ids = tok.encode(&text)?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        let t0 = Instant::now();
        let back = tok.decode(&ids)?;
        let dec = t0.elapsed().as_secs_f64();
        println!(
            "ours   {name:<15} encode {:7.2} MB/s {:>10.0} tokens/s  ({} tokens, hash {:016x}; load {:.0} ms, decode {:.0} MB/s)",
            text.len() as f64 / best / 1e6,
            ids.len() as f64 / best,
            ids.len(),
            fnv1a(&ids),
            load * 1e3,
            back.len() as f64 / dec / 1e6,
        );
    }
    Ok(())
}

/// Corpus texts in a fixed pseudo-random order until `target` bytes.
fn bench_text(target: usize) -> Result<String, Box<dyn std::error::Error>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tokenizer_corpus.jsonl");
    let data = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut texts = Vec::new();
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if let Some(t) = v["text"].as_str().filter(|t| !t.is_empty()) {
            texts.push(t.to_string());
        }
    }
    if texts.is_empty() {
        return Err("empty corpus".into());
    }
    let mut out = String::with_capacity(target + 4096);
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    while out.len() < target {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.push_str(&texts[(r >> 33) as usize % texts.len()]);
        out.push('\n');
    }
    Ok(out)
}

fn fnv1a(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}
