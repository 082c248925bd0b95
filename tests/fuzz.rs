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

// GGUF: llama.cpp's model file header (src/weights/gguf.rs).

use qwen_webgpu::weights::gguf::{parse_header as parse_gguf, Parsed};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts this thread's allocations while `measure` runs: (largest single one, total bytes).
struct CountingAlloc;

thread_local! {
    static ALLOCS: Cell<(bool, usize, usize)> = const { Cell::new((false, 0, 0)) };
}

fn note_alloc(n: usize) {
    let _ = ALLOCS.try_with(|a| {
        let (on, big, total) = a.get();
        if on {
            a.set((on, big.max(n), total.saturating_add(n)));
        }
    });
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note_alloc(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note_alloc(l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note_alloc(new);
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static COUNTING_ALLOC: CountingAlloc = CountingAlloc;

/// Run `f`, returning its result and (largest allocation, total allocated) on this thread.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    ALLOCS.with(|a| a.set((true, 0, 0)));
    let out = f();
    let (_, big, total) = ALLOCS.with(|a| a.replace((false, 0, 0)));
    (out, big, total)
}

/// A small GGUF file: metadata of every value type (arrays of strings, ints, floats, nested),
/// tensors of several ggml types and odd shapes, padded to `align` (general.alignment when it
/// is not the default 32).
fn gguf_seed(version: u32, align: u32, nested: bool) -> Vec<u8> {
    fn string(o: &mut Vec<u8>, s: &str) {
        o.extend((s.len() as u64).to_le_bytes());
        o.extend(s.as_bytes());
    }
    let mut kv: Vec<u8> = Vec::new();
    let mut n_kv = 0u64;
    let mut key = |o: &mut Vec<u8>, k: &str, ty: u32| {
        string(o, k);
        o.extend(ty.to_le_bytes());
        n_kv += 1;
    };
    key(&mut kv, "general.architecture", 8);
    string(&mut kv, "qwen2");
    key(&mut kv, "qwen2.block_count", 4);
    kv.extend(2u32.to_le_bytes());
    key(&mut kv, "qwen2.rope.freq_base", 6);
    kv.extend(1e6f32.to_le_bytes());
    key(&mut kv, "tokenizer.ggml.add_bos_token", 7);
    kv.push(0);
    key(&mut kv, "general.size", 10);
    kv.extend(123456789u64.to_le_bytes());
    key(&mut kv, "general.offset", 11);
    kv.extend((-5i64).to_le_bytes());
    key(&mut kv, "general.eps", 12);
    kv.extend(1e-6f64.to_le_bytes());
    key(&mut kv, "small", 1);
    kv.push(0xfe);
    key(&mut kv, "tokenizer.ggml.tokens", 9);
    kv.extend(8u32.to_le_bytes());
    kv.extend(4u64.to_le_bytes());
    for t in ["a", "Ġb", "<|im_end|>", "世界"] {
        string(&mut kv, t);
    }
    key(&mut kv, "tokenizer.ggml.token_type", 9);
    kv.extend(5u32.to_le_bytes());
    kv.extend(4u64.to_le_bytes());
    for t in [1i32, 1, 3, 1] {
        kv.extend(t.to_le_bytes());
    }
    key(&mut kv, "tokenizer.ggml.scores", 9);
    kv.extend(6u32.to_le_bytes());
    kv.extend(2u64.to_le_bytes());
    kv.extend(0.5f32.to_le_bytes());
    kv.extend((-1f32).to_le_bytes());
    if nested {
        key(&mut kv, "nested", 9);
        kv.extend(9u32.to_le_bytes());
        kv.extend(2u64.to_le_bytes());
        kv.extend(3u32.to_le_bytes());
        kv.extend(1u64.to_le_bytes());
        kv.extend(7i16.to_le_bytes());
        kv.extend(8u32.to_le_bytes());
        kv.extend(1u64.to_le_bytes());
        string(&mut kv, "x");
    }
    if align != 32 {
        key(&mut kv, "general.alignment", 4);
        kv.extend(align.to_le_bytes());
    }
    // (name, dims, type id, bytes)
    let tensors: [(&str, &[u64], u32, u64); 4] = [
        ("token_embd.weight", &[32, 3], 8, 3 * 34),
        ("output_norm.weight", &[5], 0, 20),
        ("blk.0.attn_q.weight", &[3, 2, 1], 1, 12),
        ("blk.0.ffn_down.weight", &[256, 1], 12, 144),
    ];
    let mut out = b"GGUF".to_vec();
    out.extend(version.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(n_kv.to_le_bytes());
    out.extend(kv);
    let mut at = 0u64;
    for (name, dims, ty, bytes) in tensors {
        string(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(at.to_le_bytes());
        at += bytes.next_multiple_of(align as u64);
    }
    out.resize((out.len() as u64).next_multiple_of(align as u64) as usize, 0);
    out.extend((0..at).map(|i| (i * 13 + 5) as u8));
    out
}

/// Parse `bytes` whole and as the browser reads it (a small prefix, then what NeedMore asks
/// for): the same answer both ways, nothing allocated beyond what the bytes justify, and the
/// tensors' ranges inside the file, aligned and disjoint. True when it parsed.
fn gguf_target(bytes: &[u8]) -> bool {
    let len = bytes.len() as u64;
    let (whole, big, total) = measure(|| parse_gguf(bytes, len, "fuzz.gguf"));
    // An i128 per byte of a u8 array is the most the metadata expands (16×); plus small fixed costs.
    let bound = 16 * bytes.len() + (64 << 10);
    assert!(big <= bound && total <= 4 * bound, "allocated {big} at once, {total} in all, for {len} bytes");
    let mut have = bytes.len().min(24);
    let mut steps = 0;
    let stepwise = loop {
        match parse_gguf(&bytes[..have], len, "fuzz.gguf") {
            Ok(Parsed::NeedMore(n)) => {
                assert!(n > have as u64 && n <= len, "asked for {n} with {have} of {len}");
                have = n as usize;
                steps += 1;
                assert!(steps < 64);
            }
            other => break other,
        }
    };
    match (&whole, &stepwise) {
        // Compared as printed: a NaN in the metadata is not equal to itself.
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("whole file: {a:?}, by prefixes: {b:?}"),
    }
    if let Ok(p) = whole {
        let Parsed::Header(h) = p else { panic!("NeedMore with the whole file") };
        assert!(h.alignment.is_power_of_two() && h.data_offset <= len.max(h.data_offset));
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for t in &h.tensors {
            assert!(t.start >= h.data_offset && t.start < t.end && t.end <= len, "{t:?}");
            assert_eq!((t.start - h.data_offset) % h.alignment, 0);
            assert!((1..=4).contains(&t.dims.len()) && t.dims.iter().all(|&d| d > 0));
            let (n, b) = t.ggml_type.block();
            let count: u64 = t.dims.iter().product();
            assert_eq!(t.end - t.start, count / n as u64 * b as u64);
            assert!(t.ggml_type.row_bytes(t.dims[0] as usize).is_ok());
            ranges.push((t.start, t.end));
        }
        ranges.sort();
        assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0));
        return true;
    }
    false
}

/// Overwrite a few 4- and 8-byte fields with values that stress counts, lengths, type ids
/// and offsets (plain mutation rarely finds them).
fn mutate_gguf_ints(rng: &mut Rng, v: &mut [u8]) {
    const WORDS: &[u64] =
        &[0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 31, 32, 33, 64, 255, 256, 0xffff, 1 << 31, u32::MAX as u64];
    const LONGS: &[u64] = &[0, 1, 8, 24, 1 << 30, 1 << 32, 1 << 60, 1 << 63, u64::MAX, u64::MAX - 31];
    for _ in 0..1 + rng.below(3) {
        let n = v.len();
        if n < 8 {
            return;
        }
        let at = rng.below(n - 7);
        if rng.below(2) == 0 {
            v[at..at + 4].copy_from_slice(&(WORDS[rng.below(WORDS.len())] as u32).to_le_bytes());
        } else {
            v[at..at + 8].copy_from_slice(&LONGS[rng.below(LONGS.len())].to_le_bytes());
        }
    }
}

#[test]
fn fuzz_gguf() {
    let seeds = [gguf_seed(3, 32, false), gguf_seed(2, 64, true), gguf_seed(3, 8, true)];
    for s in &seeds {
        let Ok(Parsed::Header(h)) = parse_gguf(s, s.len() as u64, "seed") else { panic!("a seed does not parse") };
        assert_eq!(h.tensors.len(), 4);
        // The counting allocator sees the parser's allocations (the bound below means something).
        let (_, big, total) = measure(|| parse_gguf(s, s.len() as u64, "seed"));
        assert!(big >= 4 * 24 && total > big, "{big} {total}");
        // Every truncation: asks for more as a prefix, an error as a whole (short) file.
        for k in 0..s.len() {
            // As a whole file it parses only when the tensors' bytes are all there.
            let data_end = h.tensors.iter().map(|t| t.end).max().unwrap();
            assert_eq!(gguf_target(&s[..k]), k as u64 >= data_end, "{k}");
            match parse_gguf(&s[..k], s.len() as u64, "seed") {
                Ok(Parsed::NeedMore(n)) => assert!(n > k as u64),
                Ok(Parsed::Header(h2)) => assert_eq!(h2, h),
                Err(e) => panic!("prefix {k}: {e}"),
            }
        }
    }
    // Mutations of the seeds, the same with hostile integers written over fields, and random
    // bytes after a valid magic and version.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let n = iters();
    let t0 = std::time::Instant::now();
    let mut parsed = 0;
    for i in 0..n {
        let seed = &seeds[i % seeds.len()];
        let input = match i % 4 {
            0 | 1 => mutate(&mut rng, seed),
            2 => {
                let mut v = seed.clone();
                mutate_gguf_ints(&mut rng, &mut v);
                if rng.below(4) == 0 {
                    v = mutate(&mut rng, &v);
                }
                v
            }
            _ => {
                let mut v = b"GGUF\x03\0\0\0".to_vec();
                v.extend((0..rng.below(256)).map(|_| rng.next() as u8));
                if rng.below(2) == 0 && v.len() >= 16 {
                    // Small counts, so the random bytes are read as entries.
                    v[8..16].copy_from_slice(&(rng.below(3) as u64).to_le_bytes());
                    if v.len() >= 24 {
                        v[16..24].copy_from_slice(&(rng.below(4) as u64).to_le_bytes());
                    }
                }
                v
            }
        };
        match catch_unwind(AssertUnwindSafe(|| gguf_target(&input))) {
            Ok(ok) => parsed += ok as usize,
            Err(_) => {
                let path = std::env::temp_dir().join(format!("fuzz-gguf-crash-{i}.bin"));
                std::fs::write(&path, &input).unwrap();
                panic!("gguf: input {i} panicked; saved to {}", path.display());
            }
        }
    }
    println!("gguf: {n} inputs ({parsed} parsed), no crash, {:.0} inputs/s", n as f64 / t0.elapsed().as_secs_f64());
}
