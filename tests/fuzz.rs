//! Mutation fuzzing of every parser that reads untrusted bytes: the safetensors header,
//! config.json, model.safetensors.index.json, tokenizer.json and qwen.tiktoken. Each target
//! starts from valid seeds, applies random mutations (bit flips, byte and range edits,
//! splices of JSON and safetensors tokens) and feeds the result through the public loader,
//! then uses whatever loads (sizes, reads, encode/decode). A panic (or an abort) fails the
//! test and writes the input that caused it next to the test binary.
//!
//! No coverage guidance (cargo-fuzz needs a nightly toolchain, which this project's machines
//! do not have): plain random mutation from seeds. The test command runs a short pass
//! (`FUZZ_ITERS`, default 2,000 inputs a target); a long run is
//! `FUZZ_ITERS=10000000 cargo test --release --test fuzz -- --nocapture` (README).

mod common;

use common::{fixture, Spec};
use qwen_webgpu::config::QwenConfig;
use qwen_webgpu::tokenizer::Tokenizer;
use qwen_webgpu::weights::{BytesSource, TensorSource};
use std::panic::{catch_unwind, AssertUnwindSafe};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens worth splicing into JSON and safetensors headers.
const DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e400",
    b"4294967295",
    b"18446744073709551615",
    b"\"F16\"",
    b"\"BF16\"",
    b"\"U32\"",
    b"\"I64\"",
    b"\"data_offsets\"",
    b"\"shape\"",
    b"\"dtype\"",
    b"\"__metadata__\"",
    b"\"weight_map\"",
    b"\"type\"",
    b"\"Sequence\"",
    b"\"Replace\"",
    b"\\u0000",
    b"\xff\xfe",
    b"=",
    b"\n",
    b" 151643\n",
    b"IQ==",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = v.len();
        match rng.below(7) {
            0 if n > 0 => {
                let i = rng.below(n);
                v[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(n + 1);
                v.insert(i, rng.next() as u8);
            }
            3 if n > 0 => {
                let a = rng.below(n);
                let b = (a + 1 + rng.below(64)).min(n);
                v.drain(a..b);
            }
            4 if n > 0 => {
                let a = rng.below(n);
                let b = (a + 1 + rng.below(64)).min(n);
                let piece = v[a..b].to_vec();
                let at = rng.below(n + 1);
                v.splice(at..at, piece);
            }
            5 => {
                let t = DICT[rng.below(DICT.len())];
                let at = rng.below(n + 1);
                v.splice(at..at, t.iter().copied());
            }
            _ if n > 0 => v.truncate(rng.below(n)),
            _ => {}
        }
    }
    v
}

fn iters() -> usize {
    std::env::var("FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000)
}

/// Run `target` on `iters()` mutations of the seeds; panics name the saved input.
fn fuzz(name: &str, seeds: &[Vec<u8>], target: &dyn Fn(&[u8])) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let n = iters();
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let path = std::env::temp_dir().join(format!("fuzz-{name}-crash-{i}.bin"));
            std::fs::write(&path, &input).unwrap();
            panic!("{name}: input {i} panicked; saved to {}", path.display());
        }
    }
    println!("{name}: {n} inputs, no crash, {:.0} inputs/s", n as f64 / t0.elapsed().as_secs_f64());
}

/// A small, valid safetensors file (a tiny model in a real layout).
fn safetensors_seed() -> Vec<u8> {
    let spec =
        Spec { hidden: 8, heads: 2, kv_heads: 1, head_dim: 4, ff: 8, layers: 1, vocab: 16, ..Spec::qwen2(false) };
    let (dir, _) = fixture("fuzz-seed", &spec, 1);
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn fuzz_safetensors() {
    let seed = safetensors_seed();
    fuzz("safetensors", &[seed], &|bytes| {
        if let Ok(mut src) = BytesSource::new(vec![bytes.to_vec()]) {
            let names: Vec<String> = src.tensors().keys().cloned().collect();
            for n in names {
                if let Ok(b) = src.read(&n) {
                    let info = src.tensors()[&n].clone();
                    let _ = qwen_webgpu::weights::to_f32(&n, &info.dtype, &b);
                }
            }
        }
    });
}

#[test]
fn fuzz_config() {
    let seeds: Vec<Vec<u8>> =
        [Spec::qwen_v1(), Spec::qwen2(true), Spec::qwen3()].iter().map(|s| s.config_json().into_bytes()).collect();
    fuzz("config", &seeds, &|bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        if let Ok(cfg) = QwenConfig::from_json(text) {
            // What loading computes from a config must not overflow or divide by zero.
            let _ = cfg.parameter_count();
            for w in ["f16", "q8", "q4"] {
                let opts = qwen_webgpu::ModelOptions {
                    weights: qwen_webgpu::weights::quant::WeightFormat::parse_request(w).unwrap().unwrap(),
                    ..Default::default()
                };
                let _ = qwen_webgpu::model::gpu_bytes(&cfg, &opts);
            }
            let _ = qwen_webgpu::weights::checkpoint::expected_tensors(&cfg);
        }
    });
}

#[test]
fn fuzz_index() {
    let spec = Spec::qwen_v1();
    let (dir, _) = fixture("fuzz-index", &spec, 2);
    let index = std::fs::read(dir.join("model.safetensors.index.json")).unwrap();
    let path = dir.join("model.safetensors.index.json");
    fuzz("index", &[index], &|bytes| {
        std::fs::write(&path, bytes).unwrap();
        if let Ok(mut src) = qwen_webgpu::weights::FileSource::open_dir(&dir) {
            let first = src.tensors().keys().next().cloned();
            if let Some(n) = first {
                let _ = src.read(&n);
            }
        }
    });
}

/// A small byte-level BPE tokenizer.json (the layout of Qwen's, 256 byte tokens, a few merges
/// and added tokens).
fn tokenizer_json_seed() -> Vec<u8> {
    // GPT-2's byte-to-unicode map, as byte-level BPE vocabularies spell bytes.
    let mut chars = Vec::new();
    let mut n = 0u32;
    for b in 0u32..256 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        chars.push(if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        });
    }
    let mut vocab = serde_json::Map::new();
    for (i, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), i.into());
    }
    let merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o")];
    for (i, (a, b)) in merges.iter().enumerate() {
        vocab.insert(format!("{a}{b}"), (256 + i).into());
    }
    let added = |id: usize, s: &str| serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    let json = serde_json::json!({
        "version": "1.0",
        "added_tokens": [added(260, "<|endoftext|>"), added(261, "<|im_start|>"), added(262, "<|im_end|>")],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": vocab, "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()},
    });
    serde_json::to_vec(&json).unwrap()
}

fn use_tokenizer(t: &Tokenizer) {
    if let Ok(ids) = t.encode("hello, 世界 <|im_end|>") {
        let _ = t.decode(&ids);
    }
    let _ = t.decode(&[0, 1, 255, 256, 261, 100_000]);
    let _ = t.stop_ids();
}

#[test]
fn fuzz_tokenizer_json() {
    let seed = tokenizer_json_seed();
    let t = Tokenizer::from_bytes(&seed).expect("the seed loads");
    assert_eq!(t.encode("hello").unwrap(), vec![259]);
    fuzz("tokenizer.json", &[seed], &|bytes| {
        if let Ok(t) = Tokenizer::from_bytes(bytes) {
            use_tokenizer(&t);
        }
    });
}

#[test]
fn fuzz_tiktoken() {
    // A small qwen.tiktoken: every byte, then a few merges (base64 token, space, rank).
    let b64 = |b: &[u8]| {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                out.push(if i <= c.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
            }
        }
        out
    };
    let mut seed = String::new();
    for b in 0u8..=255 {
        seed += &format!("{} {}\n", b64(&[b]), b);
    }
    for (i, t) in ["he", "ll", "hell", "hello"].iter().enumerate() {
        seed += &format!("{} {}\n", b64(t.as_bytes()), 256 + i);
    }
    let seed = seed.into_bytes();
    fuzz("qwen.tiktoken", &[seed], &|bytes| {
        if let Ok(t) = Tokenizer::from_bytes(bytes) {
            use_tokenizer(&t);
        }
    });
}
