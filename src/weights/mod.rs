//! Bytes → host tensors, one tensor at a time. No GPU code here.
//!
//! A [`TensorSource`] lists every tensor of a checkpoint (from the safetensors headers alone)
//! and hands out one tensor's bytes on request, so a loader never holds the whole model in
//! memory: natively the bytes come from files by seek + read, in the browser they will come
//! from the network.

pub mod ggml;
pub mod gguf;
pub mod gguf_model;
pub mod quant;
#[cfg(not(target_arch = "wasm32"))]
pub mod quantize;
pub mod safetensors;

pub mod checkpoint;

use crate::error::{Error, Result};
use half::{bf16, f16};
pub use safetensors::{Dtype, TensorInfo};
use std::collections::BTreeMap;

/// A checkpoint whose tensors can be read one by one.
pub trait TensorSource {
    /// Every tensor in the checkpoint, by name.
    fn tensors(&self) -> &BTreeMap<String, TensorInfo>;
    /// The raw stored bytes of one tensor (its dtype, little-endian).
    fn read(&mut self, name: &str) -> Result<Vec<u8>>;
    /// The safetensors `__metadata__` of the checkpoint (every shard's, merged); a
    /// pre-quantized checkpoint names its format here (see [`quant::stored_format`]).
    fn metadata(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        &EMPTY
    }
}

/// Merge one shard's `__metadata__` into the checkpoint's. Shards of one checkpoint must
/// agree on our `qwen_webgpu.` keys; for other keys the first shard's value is kept.
pub fn merge_metadata(
    all: &mut BTreeMap<String, String>,
    shard: BTreeMap<String, String>,
    shard_name: &str,
) -> Result<()> {
    for (k, v) in shard {
        match all.get(&k) {
            Some(old) if *old != v && k.starts_with("qwen_webgpu.") => {
                return Err(Error::Weights(format!(
                    "{shard_name}: metadata {k} = {v:?}, but an earlier shard says {old:?} (shards of different checkpoints?)"
                )))
            }
            Some(_) => {}
            None => {
                all.insert(k, v);
            }
        }
    }
    Ok(())
}

/// Merge per-shard headers into one table, refusing a tensor stored twice.
fn merge_shard(
    all: &mut BTreeMap<String, TensorInfo>,
    owner: &mut BTreeMap<String, usize>,
    shard: usize,
    tensors: BTreeMap<String, TensorInfo>,
    shard_name: &str,
) -> Result<()> {
    for (name, info) in tensors {
        if all.contains_key(&name) {
            return Err(Error::Weights(format!("tensor {name} is stored twice (again in {shard_name})")));
        }
        owner.insert(name.clone(), shard);
        all.insert(name, info);
    }
    Ok(())
}

/// Checkpoint shards held in memory (tests, and callers that already have the bytes).
pub struct BytesSource {
    shards: Vec<Vec<u8>>,
    tensors: BTreeMap<String, TensorInfo>,
    owner: BTreeMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl BytesSource {
    pub fn new(shards: Vec<Vec<u8>>) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        let mut owner = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (i, bytes) in shards.iter().enumerate() {
            let label = format!("shard {i}");
            let n = safetensors::header_len(bytes, bytes.len() as u64, &label)? as usize;
            let h = safetensors::parse_header_full(&bytes[8..8 + n], bytes.len() as u64, &label)?;
            merge_shard(&mut tensors, &mut owner, i, h.tensors, &label)?;
            merge_metadata(&mut metadata, h.metadata, &label)?;
        }
        Ok(BytesSource { shards, tensors, owner, metadata })
    }
}

impl TensorSource for BytesSource {
    fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }
    fn read(&mut self, name: &str) -> Result<Vec<u8>> {
        let info = self.tensors.get(name).ok_or_else(|| Error::Weights(format!("no tensor {name}")))?;
        let shard = &self.shards[self.owner[name]];
        Ok(shard[info.start as usize..info.end as usize].to_vec())
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::FileSource;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom};
    use std::path::{Path, PathBuf};

    /// Safetensors files on disk: headers read at open, tensor bytes read on demand.
    pub struct FileSource {
        files: Vec<(PathBuf, File)>,
        tensors: BTreeMap<String, TensorInfo>,
        owner: BTreeMap<String, usize>,
        metadata: BTreeMap<String, String>,
    }

    impl FileSource {
        /// Open a model folder: `model.safetensors`, or the shards that
        /// `model.safetensors.index.json` names.
        pub fn open_dir(dir: &Path) -> Result<Self> {
            let index = dir.join("model.safetensors.index.json");
            let single = dir.join("model.safetensors");
            if index.exists() {
                let text = crate::files::read_text_capped(&index, crate::files::INDEX_CAP)?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| Error::Weights(format!("{}: not valid JSON: {e}", index.display())))?;
                let map = v
                    .get("weight_map")
                    .and_then(|m| m.as_object())
                    .ok_or_else(|| Error::Weights(format!("{}: missing `weight_map`", index.display())))?;
                let mut shards: Vec<String> = Vec::new();
                for (name, file) in map {
                    let file = file.as_str().ok_or_else(|| {
                        Error::Weights(format!("{}: shard of {name} is not a string", index.display()))
                    })?;
                    if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                        return Err(Error::Weights(format!("{}: bad shard name {file:?}", index.display())));
                    }
                    if !shards.iter().any(|s| s == file) {
                        shards.push(file.to_string());
                    }
                }
                shards.sort();
                let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
                let src = Self::open_files(&paths)?;
                for (name, file) in map {
                    let at = src.owner.get(name).map(|&i| &src.files[i].0);
                    if at.map(|p| p.file_name().and_then(|f| f.to_str()) != file.as_str()).unwrap_or(true) {
                        return Err(Error::Weights(format!(
                            "{}: {name} should be in {file}, but that shard does not hold it",
                            index.display()
                        )));
                    }
                }
                Ok(src)
            } else if single.exists() {
                Self::open_files(&[single])
            } else {
                Err(Error::Weights(format!("{}: no model.safetensors or model.safetensors.index.json", dir.display())))
            }
        }

        /// Open explicit safetensors files, reading only their headers.
        pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
            let mut files = Vec::new();
            let mut tensors = BTreeMap::new();
            let mut owner = BTreeMap::new();
            let mut metadata = BTreeMap::new();
            for (i, path) in paths.iter().enumerate() {
                let label = path.display().to_string();
                crate::files::check_regular(path)?;
                let mut f = File::open(path).map_err(|e| Error::io(&label, e))?;
                let len = f.metadata().map_err(|e| Error::io(&label, e))?.len();
                let mut prefix = [0u8; 8];
                let got = read_up_to(&mut f, &mut prefix).map_err(|e| Error::io(&label, e))?;
                let n = safetensors::header_len(&prefix[..got], len, &label)?;
                let mut json = vec![0u8; n as usize];
                f.read_exact(&mut json).map_err(|e| Error::io(&label, e))?;
                let h = safetensors::parse_header_full(&json, len, &label)?;
                merge_shard(&mut tensors, &mut owner, i, h.tensors, &label)?;
                merge_metadata(&mut metadata, h.metadata, &label)?;
                files.push((path.clone(), f));
            }
            Ok(FileSource { files, tensors, owner, metadata })
        }
    }

    fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..])? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    }

    impl TensorSource for FileSource {
        fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
            &self.tensors
        }
        fn read(&mut self, name: &str) -> Result<Vec<u8>> {
            let info = self.tensors.get(name).ok_or_else(|| Error::Weights(format!("no tensor {name}")))?;
            let (path, f) = &mut self.files[self.owner[name]];
            let label = path.display().to_string();
            let mut buf = vec![0u8; info.byte_len()];
            f.seek(SeekFrom::Start(info.start)).map_err(|e| Error::io(&label, e))?;
            f.read_exact(&mut buf).map_err(|e| Error::io(&label, e))?;
            Ok(buf)
        }
        fn metadata(&self) -> &BTreeMap<String, String> {
            &self.metadata
        }
    }
}

/// Bytes per value of a float dtype a checkpoint may store weights in (F32, F16, BF16); any
/// other dtype is an error naming tensor `name`.
pub fn float_size(name: &str, dtype: &Dtype) -> Result<usize> {
    match dtype {
        Dtype::F32 => Ok(4),
        Dtype::F16 | Dtype::BF16 => Ok(2),
        Dtype::Ggml(t) => Err(Error::Weights(format!("tensor {name} is {}, not a float type", t.name()))),
        Dtype::Other(d) => Err(Error::Weights(format!(
            "tensor {name} has dtype {d}; only F32, F16 and BF16 checkpoints are supported"
        ))),
    }
}

fn elements<'a>(name: &str, dtype: &Dtype, bytes: &'a [u8]) -> Result<Box<dyn Iterator<Item = f32> + 'a>> {
    if let Dtype::Ggml(t) = dtype {
        return Ok(Box::new(ggml::dequantize(*t, bytes, name)?.into_iter()));
    }
    float_size(name, dtype)?;
    Ok(match dtype {
        Dtype::F32 => Box::new(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        Dtype::F16 => Box::new(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
        Dtype::BF16 | Dtype::Ggml(_) | Dtype::Other(_) => {
            Box::new(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()))
        }
    })
}

/// Stored bytes → f32 values (for small vectors: norms, biases).
pub fn to_f32(name: &str, dtype: &Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(elements(name, dtype, bytes)?.collect())
}

/// Convert a `[rows, cols]` matrix's stored bytes to f32 a block of rows at a time (a few MB
/// of f32, never the whole matrix), calling `f(first_row, values)` per block. The loader and
/// `quantize` both encode through this, so they see the same rows.
pub fn for_row_blocks(
    name: &str,
    dtype: &Dtype,
    bytes: &[u8],
    rows: usize,
    cols: usize,
    f: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    let row_bytes = bytes.len() / rows.max(1);
    if row_bytes * rows != bytes.len() {
        return Err(Error::Weights(format!("tensor {name}: {} bytes are not {rows} whole rows", bytes.len())));
    }
    let block = (1 << 22) / cols.max(1) + 1;
    for r in (0..rows).step_by(block) {
        let n = block.min(rows - r);
        let vals = to_f32(name, dtype, &bytes[r * row_bytes..(r + n) * row_bytes])?;
        f(r, &vals)?;
    }
    Ok(())
}
