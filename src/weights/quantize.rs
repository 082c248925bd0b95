//! `qwen-webgpu quantize`: a plain checkpoint → a pre-quantized model folder, streamed one
//! tensor at a time (never the whole model in memory).
//!
//! The output is an ordinary safetensors folder (`model.safetensors`, or shards named as
//! Hugging Face names them plus `model.safetensors.index.json`) whose header metadata says
//! `qwen_webgpu.format` (`q4`/`q8`), `qwen_webgpu.group` (`32`) and `qwen_webgpu.version`
//! (`1`). Each matrix the format can group becomes `NAME.qweight` (U32, `[rows, words per
//! row]`, the words the GPU holds) and `NAME.scales` (F16, `[rows, cols / 32]`); matrices it
//! cannot group are stored as F16 (what the GPU gets anyway), norms and biases as the source
//! stores them. The encoder is [`quant::encode_rows`], the one load-time quantization uses, so
//! loading the folder puts the same bits on the GPU as quantizing the source while loading.

use super::checkpoint::{check_checkpoint, stored_tensors, Part};
use super::quant::{self, WeightFormat};
use super::safetensors::{self, HeaderEntry};
use super::{FileSource, TensorSource};
use crate::config::QwenConfig;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Files besides the weights that a model folder may hold and the output keeps.
pub const COPIED_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "qwen.tiktoken",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
];

/// Default largest shard (bytes of tensor data): 1 GiB, a size browsers cache comfortably.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// `Q4` or `Q8`.
    pub format: WeightFormat,
    /// Start a new shard before a tensor that would take a shard past this many bytes.
    pub max_shard_bytes: u64,
}

/// What [`quantize_dir`] wrote.
#[derive(Debug, Clone, Default)]
pub struct QuantizeReport {
    /// Weight files written (file name, bytes), in order.
    pub files: Vec<(String, u64)>,
    /// Other files copied.
    pub copied: Vec<String>,
    /// Bytes of the source's tensors that were read (unused ones excluded).
    pub source_bytes: u64,
    /// Bytes of tensor data written.
    pub output_bytes: u64,
    /// Matrices quantized / kept as F16 (width not a multiple of 64) / vectors copied.
    pub quantized: usize,
    pub kept_f16: usize,
    pub vectors: usize,
}

/// One output tensor, planned before anything is written.
struct Out {
    name: String,
    source: String,
    part: Part,
    dtype: String,
    shape: Vec<usize>,
    bytes: u64,
    shard: usize,
}

/// Quantize the checkpoint in `model` into a new folder `out`. `progress(tensor, done, total)`
/// is called before each source tensor is read.
pub fn quantize_dir(
    model: &Path,
    out: &Path,
    opts: &QuantizeOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<QuantizeReport> {
    let format = opts.format;
    if format == WeightFormat::F16 {
        return Err(Error::Request("quantize writes q4 or q8 (f16 is what a plain checkpoint loads as)".into()));
    }
    let cfg_path = model.join("config.json");
    let cfg_text = crate::files::read_text_capped(&cfg_path, crate::files::CONFIG_CAP)?;
    let cfg = QwenConfig::from_json(&cfg_text)?;
    let mut src = FileSource::open_dir(model)?;
    if let Some(f) = check_checkpoint(&cfg, src.tensors(), src.metadata())? {
        return Err(Error::Weights(format!(
            "{} is already pre-quantized ({}); quantize reads a plain bf16/f16/f32 checkpoint",
            model.display(),
            f.name()
        )));
    }
    check_out_dir(model, out)?;

    // Plan every output tensor: name, dtype, shape, bytes, shard.
    let infos = src.tensors().clone();
    let mut plan: Vec<Out> = Vec::new();
    for t in stored_tensors(&cfg, Some(format)) {
        let info = &infos[&t.source];
        let numel: usize = t.shape.iter().product();
        let dtype = match t.part {
            Part::QWeight => "U32".to_string(),
            Part::Scales => "F16".to_string(),
            Part::Whole if t.shape.len() == 2 => "F16".to_string(),
            Part::Whole => info.dtype.name().to_string(),
        };
        let size = safetensors::Dtype::parse(&dtype).size().unwrap_or(4);
        plan.push(Out {
            name: t.name,
            source: t.source,
            part: t.part,
            dtype,
            shape: t.shape,
            bytes: (numel * size) as u64,
            shard: 0,
        });
    }
    // Quantized pairs (whole 4-byte multiples: scales per row are even) and F32 tensors
    // first, then the 2-byte ones, so every U32/F32 tensor starts 4-byte aligned; a pair
    // stays adjacent, so each source tensor is read once.
    plan.sort_by(|a, b| {
        let key = |o: &Out| (o.part == Part::Whole && o.dtype != "F32", o.source.clone(), o.part);
        key(a).cmp(&key(b))
    });
    let mut shard = 0;
    let mut in_shard = 0u64;
    for o in &mut plan {
        if in_shard > 0 && in_shard + o.bytes > opts.max_shard_bytes {
            shard += 1;
            in_shard = 0;
        }
        o.shard = shard;
        in_shard += o.bytes;
    }
    let shards = shard + 1;
    let file_name = |s: usize| {
        if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", s + 1, shards)
        }
    };

    std::fs::create_dir_all(out).map_err(|e| Error::write(out.display(), e))?;
    let metadata = quant::checkpoint_metadata(format);
    let mut report = QuantizeReport::default();
    let sources: Vec<String> = {
        let mut seen = Vec::new();
        for o in &plan {
            if seen.last() != Some(&o.source) {
                seen.push(o.source.clone());
            }
        }
        seen
    };
    let mut writer: Option<ShardWriter> = None;
    let mut next = 0; // index into `plan` of the next tensor to write
    for (i, source) in sources.iter().enumerate() {
        progress(source, i, sources.len());
        let info = infos[source].clone();
        let bytes = src.read(source)?;
        report.source_bytes += bytes.len() as u64;
        let produced = produce(&info, source, &bytes, &plan[next..], format)?;
        drop(bytes);
        match produced.len() {
            2 => report.quantized += 1,
            _ if info.shape.len() == 2 => report.kept_f16 += 1,
            _ => report.vectors += 1,
        }
        for data in produced {
            let o = &plan[next];
            if writer.as_ref().map(|w| w.shard) != Some(o.shard) {
                if let Some(w) = writer.take() {
                    report.files.push(w.finish()?);
                }
                let entries: Vec<HeaderEntry> = plan
                    .iter()
                    .filter(|p| p.shard == o.shard)
                    .map(|p| HeaderEntry {
                        name: p.name.clone(),
                        dtype: p.dtype.clone(),
                        shape: p.shape.clone(),
                        bytes: p.bytes,
                    })
                    .collect();
                writer = Some(ShardWriter::create(out, &file_name(o.shard), o.shard, &entries, &metadata)?);
            }
            if data.len() as u64 != o.bytes {
                return Err(Error::Weights(format!(
                    "{}: produced {} bytes, planned {} (internal error)",
                    o.name,
                    data.len(),
                    o.bytes
                )));
            }
            let w = writer.as_mut().expect("opened above");
            w.write(&data)?;
            report.output_bytes += data.len() as u64;
            next += 1;
        }
    }
    if let Some(w) = writer.take() {
        report.files.push(w.finish()?);
    }
    if shards > 1 {
        let mut weight_map = serde_json::Map::new();
        for o in &plan {
            weight_map.insert(o.name.clone(), serde_json::Value::String(file_name(o.shard)));
        }
        let mut meta = serde_json::Map::new();
        meta.insert("total_size".into(), serde_json::Value::from(report.output_bytes));
        for (k, v) in &metadata {
            meta.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        let index = serde_json::json!({ "metadata": meta, "weight_map": weight_map });
        let text = serde_json::to_string_pretty(&index).map_err(|e| Error::Weights(e.to_string()))?;
        let path = out.join("model.safetensors.index.json");
        std::fs::write(&path, text).map_err(|e| Error::write(path.display(), e))?;
    }
    for f in COPIED_FILES {
        let from = model.join(f);
        if from.is_file() {
            let to = out.join(f);
            std::fs::copy(&from, &to).map_err(|e| Error::io(to.display(), e))?;
            report.copied.push(f.to_string());
        }
    }
    Ok(report)
}

/// `out` must not be the source folder and must not already hold a checkpoint (stale shards
/// next to new ones would be read as one model).
fn check_out_dir(model: &Path, out: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (model.canonicalize(), out.canonicalize()) {
        if a == b {
            return Err(Error::Request(format!("--out {} is the source folder; choose another", out.display())));
        }
    }
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("model")
                && (name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json"))
            {
                return Err(Error::Request(format!(
                    "{} already holds a checkpoint ({name}); choose an empty folder or remove it",
                    out.display()
                )));
            }
        }
    }
    Ok(())
}

/// The output tensors of one source tensor, in plan order: a quantized pair, or one tensor.
fn produce(
    info: &super::TensorInfo,
    name: &str,
    bytes: &[u8],
    plan: &[Out],
    format: WeightFormat,
) -> Result<Vec<Vec<u8>>> {
    let mine: Vec<&Out> = plan.iter().take_while(|o| o.source == name).collect();
    match mine.as_slice() {
        [q, s] if q.part == Part::QWeight && s.part == Part::Scales => {
            let (rows, cols) = (info.shape[0], info.shape[1]);
            let mut words = Vec::with_capacity(rows * format.words_per_row(cols) * 4);
            let mut scales = Vec::with_capacity(rows * format.scales_per_row(cols) * 2);
            super::for_row_blocks(name, &info.dtype, bytes, rows, cols, &mut |_, vals| {
                let (w, s) = quant::encode_rows(format, vals, cols, name)?;
                words.extend(w.iter().flat_map(|x| x.to_le_bytes()));
                scales.extend(s.iter().flat_map(|x| x.to_le_bytes()));
                Ok(())
            })?;
            Ok(vec![words, scales])
        }
        [o] if o.part == Part::Whole && o.dtype == "F16" && info.dtype != super::Dtype::F16 => {
            let mut out = Vec::with_capacity(info.numel() * 2);
            let cols = info.shape.get(1).copied().unwrap_or(info.numel()).max(1);
            super::for_row_blocks(name, &info.dtype, bytes, info.numel() / cols, cols, &mut |_, vals| {
                for &x in vals {
                    out.extend(quant::f16_bits(x, name)?.to_le_bytes());
                }
                Ok(())
            })?;
            Ok(vec![out])
        }
        [o] if o.part == Part::Whole => {
            if let Some(i) = super::to_f32(name, &info.dtype, bytes)?.iter().position(|x| !x.is_finite()) {
                return Err(Error::Weights(format!("tensor {name}: non-finite value at [{i}]")));
            }
            Ok(vec![bytes.to_vec()])
        }
        _ => Err(Error::Weights(format!("{name}: no output planned (internal error)"))),
    }
}

/// One output shard being written: header first, then tensor bytes in header order.
struct ShardWriter {
    shard: usize,
    name: String,
    partial: PathBuf,
    path: PathBuf,
    file: BufWriter<File>,
    written: u64,
    expected: u64,
}

impl ShardWriter {
    fn create(
        dir: &Path,
        name: &str,
        shard: usize,
        entries: &[HeaderEntry],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let path = dir.join(name);
        let partial = dir.join(format!("{name}.partial"));
        let f = File::create(&partial).map_err(|e| Error::write(partial.display(), e))?;
        let mut file = BufWriter::with_capacity(1 << 20, f);
        let header = safetensors::serialize_header(entries, metadata)?;
        file.write_all(&header).map_err(|e| Error::write(partial.display(), e))?;
        let expected = header.len() as u64 + entries.iter().map(|e| e.bytes).sum::<u64>();
        Ok(ShardWriter { shard, name: name.to_string(), partial, path, file, written: header.len() as u64, expected })
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(data).map_err(|e| Error::write(self.partial.display(), e))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Flush, check the size and move the file into place: (file name, bytes).
    fn finish(mut self) -> Result<(String, u64)> {
        self.file.flush().map_err(|e| Error::write(self.partial.display(), e))?;
        if self.written != self.expected {
            return Err(Error::Weights(format!(
                "{}: wrote {} bytes, the header promises {} (internal error)",
                self.name, self.written, self.expected
            )));
        }
        drop(self.file);
        std::fs::rename(&self.partial, &self.path).map_err(|e| Error::write(self.path.display(), e))?;
        Ok((self.name, self.written))
    }
}
