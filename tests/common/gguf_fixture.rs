//! GGUF fixtures made by llama.cpp's own tools (scripts/gguf-tools.sh: its converter and its
//! quantizer) from tiny random checkpoints with the real Qwen vocabulary size.
//!
//! Each family's checkpoint is `spec(family)` filled by `random_tensors(.., SEED)`, written as
//! safetensors with the real tokenizer files beside it. Checkpoints and GGUF files are cached
//! in `~/.cache/qwen-webgpu/gguf-fixtures/<family>-<key>/`, where the key hashes the spec, the
//! tensors and `scripts/gguf-tools.sh version`: a change to any of them makes new files (and
//! removes the family's older folders); otherwise a second run converts nothing.

use super::{random_tensors, write_checkpoint, FileDtype, Spec, Tensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// The random seed of every GGUF fixture checkpoint.
pub const SEED: u64 = 0x6767_7566;

/// The families llama.cpp's converter handles: `qwen` (v1, QWenLMHeadModel), `qwen2`, `qwen3`.
pub const FAMILIES: [&str; 3] = ["qwen", "qwen2", "qwen3"];

/// The checkpoint of a family: the real vocabulary size (the converter writes every token of
/// the tokenizer, so the embedding needs at least as many rows), rows of 256 so that every
/// matrix can take the K-quants (super-blocks of 256), 2 layers. qwen2 is untied (an
/// `output.weight`), qwen3 tied; v1 is untied by design, in 2 shards like the real ones.
pub fn spec(family: &str) -> Spec {
    let base = Spec {
        model_type: "qwen2",
        hidden: 256,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        ff: 512,
        vocab: 151936,
        tie: false,
        seq_length: 512,
        ntk_logn: false,
        dtype: FileDtype::BF16,
        shards: 1,
    };
    match family {
        "qwen" => Spec { model_type: "qwen", kv_heads: 4, seq_length: 8192, ntk_logn: true, shards: 2, ..base },
        "qwen2" => base,
        "qwen3" => Spec { model_type: "qwen3", tie: true, ..base },
        other => panic!("no GGUF fixture family {other:?} (one of {FAMILIES:?})"),
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_root() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache/qwen-webgpu/gguf-fixtures")
}

/// Run scripts/gguf-tools.sh with `args`; panics with its output when it fails.
pub fn gguf_tools(args: &[&str]) -> String {
    let script = repo_root().join("scripts/gguf-tools.sh");
    let out = Command::new("bash").arg(&script).args(args).output().expect("run scripts/gguf-tools.sh");
    if !out.status.success() {
        panic!(
            "scripts/gguf-tools.sh {}: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// FNV-1a over 64-bit words: a cache key, not a checksum anyone relies on.
struct Fnv(u64);
impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    fn words(&mut self, v: &[f32]) {
        for x in v {
            self.0 = (self.0 ^ x.to_bits() as u64).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
}

fn key(s: &Spec, t: &Tensors, tools: &str) -> String {
    let mut h = Fnv(0xCBF2_9CE4_8422_2325);
    h.bytes(format!("{s:?}").as_bytes());
    h.bytes(s.config_json().as_bytes());
    h.bytes(tools.as_bytes());
    for (name, (shape, vals)) in t {
        h.bytes(name.as_bytes());
        h.bytes(format!("{shape:?}").as_bytes());
        h.words(vals);
    }
    format!("{:016x}", h.0)
}

/// Everything a family's fixtures share, made once per test process.
struct Family {
    dir: PathBuf,
    hf: PathBuf,
}

fn family(name: &str) -> &'static Family {
    static FAMS: OnceLock<Mutex<HashMap<String, &'static Family>>> = OnceLock::new();
    let mut fams = FAMS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = fams.get(name) {
        return f;
    }
    gguf_tools(&["setup"]);
    let s = spec(name);
    let t = random_tensors(&s, SEED);
    let tools = gguf_tools(&["version"]);
    let k = key(&s, &t, &tools);
    let root = cache_root();
    let dir = root.join(format!("{name}-{k}"));
    let hf = dir.join("hf");
    if !hf.join("config.json").is_file() {
        // Older keys of this family: stale, and a few hundred MB each.
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.strip_prefix(name).and_then(|r| r.strip_prefix('-')).is_some_and(|r| r.len() == 16) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let tmp = dir.join(format!("hf.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        write_checkpoint(&tmp, &s, &t);
        if name != "qwen" {
            let vocab = PathBuf::from(gguf_tools(&["path", "vocab_dir"]));
            if !vocab.join("tokenizer.json").is_file() {
                let st = Command::new("bash").arg(repo_root().join("scripts/fetch-vocab.sh")).status();
                assert!(st.is_ok_and(|s| s.success()), "scripts/fetch-vocab.sh failed");
            }
            std::fs::copy(vocab.join("tokenizer.json"), tmp.join("tokenizer.json")).expect("copy tokenizer.json");
            let cfg = gguf_tools(&["path", "tokenizer_config"]);
            std::fs::copy(cfg, tmp.join("tokenizer_config.json")).expect("copy tokenizer_config.json");
        }
        // Another process may have finished first: keep theirs.
        if std::fs::rename(&tmp, &hf).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        assert!(hf.join("config.json").is_file(), "fixture checkpoint {} missing", hf.display());
    }
    let f: &'static Family = Box::leak(Box::new(Family { dir, hf }));
    fams.insert(name.to_string(), f);
    f
}

/// The family's safetensors checkpoint (with its tokenizer files), as the converter read it.
pub fn checkpoint(family_name: &str) -> PathBuf {
    family(family_name).hf.clone()
}

/// A GGUF file of `family` ("qwen", "qwen2", "qwen3") made by llama.cpp's tools: `outtype`
/// "f32", "f16", "bf16" or "q8_0" comes from convert_hf_to_gguf.py; any llama-quantize type
/// ("Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", ...) is quantized from the f16 file. Made once,
/// cached on disk and per test process.
pub fn gguf_fixture(family_name: &str, outtype: &str) -> PathBuf {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let f = family(family_name);
    let path = f.dir.join(format!("{outtype}.gguf"));
    let lock = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(path.clone())
        .or_default()
        .clone();
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    if path.is_file() {
        return path;
    }
    let p = path.to_str().expect("utf-8 cache path");
    if matches!(outtype, "f32" | "f16" | "bf16" | "q8_0") {
        gguf_tools(&["convert", f.hf.to_str().expect("utf-8 cache path"), p, outtype]);
    } else {
        let f16 = gguf_fixture(family_name, "f16");
        gguf_tools(&["quantize", f16.to_str().expect("utf-8 cache path"), p, outtype]);
    }
    assert!(path.is_file(), "{} was not made", path.display());
    path
}

/// The folder all of a family's fixture files are in.
pub fn fixture_dir(family_name: &str) -> &'static Path {
    &family(family_name).dir
}

/// llama.cpp's name of a GGUF tensor type.
pub fn ggml_name(t: candle_core::quantized::GgmlDType) -> &'static str {
    use candle_core::quantized::GgmlDType as T;
    match t {
        T::F32 => "F32",
        T::F16 => "F16",
        T::BF16 => "BF16",
        T::Q4_0 => "Q4_0",
        T::Q4_1 => "Q4_1",
        T::Q5_0 => "Q5_0",
        T::Q5_1 => "Q5_1",
        T::Q8_0 => "Q8_0",
        T::Q8_1 => "Q8_1",
        T::Q2K => "Q2_K",
        T::Q3K => "Q3_K",
        T::Q4K => "Q4_K",
        T::Q5K => "Q5_K",
        T::Q6K => "Q6_K",
        T::Q8K => "Q8_K",
        #[allow(unreachable_patterns)]
        _ => "?",
    }
}

/// The first `max_rows` rows of every non-F32 tensor of a GGUF file, dequantized by gguf-py's
/// `quants.dequantize` (llama.cpp's own Python package: numpy code independent of candle's), as
/// f32 in row-major order: a second opinion on candle's dequantizers, K-quants included. The
/// raw blocks are cut out here (at the offsets of the file's header) and handed over as files:
/// gguf-py's GGUFReader takes seconds to walk the vocabulary arrays.
pub fn gguf_py_dequantize(path: &Path, max_rows: usize) -> HashMap<String, Vec<f32>> {
    use candle_core::quantized::{gguf_file, GgmlDType};
    use std::io::{Read, Seek, SeekFrom};
    gguf_tools(&["setup"]);
    let py = gguf_tools(&["path", "python"]);
    let llama_cpp = gguf_tools(&["path", "llama_cpp"]);
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = super::temp_dir(&format!("gguf-py-dequantize-{n}"));
    let mut f = std::fs::File::open(path).expect("open GGUF");
    let ct = gguf_file::Content::read(&mut f).expect("read GGUF header");
    let mut manifest = String::new();
    for (i, (name, info)) in ct.tensor_infos.iter().enumerate() {
        if info.ggml_dtype == GgmlDType::F32 {
            continue;
        }
        let dims = info.shape.dims();
        let cols = *dims.last().expect("dims");
        let rows = (info.shape.elem_count() / cols).min(max_rows);
        let row_bytes = cols / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let mut buf = vec![0u8; rows * row_bytes];
        f.seek(SeekFrom::Start(ct.tensor_data_offset + info.offset)).expect("seek");
        f.read_exact(&mut buf).expect("read tensor");
        std::fs::write(out.join(format!("{i}.in")), &buf).expect("write blocks");
        manifest.push_str(&format!("{i}\t{}\t{rows}\t{row_bytes}\t{name}\n", ggml_name(info.ggml_dtype)));
    }
    std::fs::write(out.join("manifest.tsv"), &manifest).expect("write manifest");
    let script = r#"
import os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "gguf-py"))
import numpy as np
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize
out = sys.argv[2]
for line in open(os.path.join(out, "manifest.tsv")):
    i, qtype, rows, row_bytes, name = line.rstrip("\n").split("\t")
    qtype = GGMLQuantizationType[qtype]
    raw = np.fromfile(os.path.join(out, i + ".in"), dtype=np.uint8).reshape(int(rows), int(row_bytes))
    dequantize(raw, qtype).astype(np.float32).tofile(os.path.join(out, i + ".out"))
"#;
    let st = Command::new(&py).arg("-c").arg(script).arg(&llama_cpp).arg(&out).output().expect("run gguf-py");
    assert!(st.status.success(), "gguf-py dequantize {}: {}", path.display(), String::from_utf8_lossy(&st.stderr));
    let mut res = HashMap::new();
    for line in manifest.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let bytes = std::fs::read(out.join(format!("{}.out", cols[0]))).expect("read gguf-py output");
        let vals = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        res.insert(cols[4].to_string(), vals);
    }
    let _ = std::fs::remove_dir_all(&out);
    res
}
