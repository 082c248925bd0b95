//! The safetensors container: an 8-byte little-endian header length, a JSON header naming
//! each tensor's dtype, shape and byte range, then the raw bytes.
//!
//! [`parse_header`] checks everything it can before any tensor byte is read: a truncated file,
//! offsets out of range, overlapping tensors or sizes that disagree with the shape all come
//! back as [`Error::Weights`].

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Element type of a stored tensor. Only the float types can be loaded as weights; the rest
/// are kept so the error can name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    /// A GGUF block type (Q8_0, Q4_K, ...): see [`super::ggml`].
    Ggml(super::ggml::GgmlType),
    Other(String),
}

impl Dtype {
    pub fn parse(s: &str) -> Dtype {
        match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            other => Dtype::Other(other.to_string()),
        }
    }
    /// Bytes per element, when known.
    pub fn size(&self) -> Option<usize> {
        match self {
            Dtype::F32 => Some(4),
            Dtype::F16 | Dtype::BF16 => Some(2),
            Dtype::Ggml(_) => None,
            Dtype::Other(s) => match s.as_str() {
                "F64" | "I64" | "U64" => Some(8),
                "I32" | "U32" => Some(4),
                "I16" | "U16" => Some(2),
                "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => Some(1),
                _ => None,
            },
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::Ggml(t) => t.name(),
            Dtype::Other(s) => s,
        }
    }
}

/// Where one tensor lives in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file (header included in the offset).
    pub start: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn byte_len(&self) -> usize {
        (self.end - self.start) as usize
    }
}

/// A parsed header: the tensors and the `__metadata__` strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

/// Largest header we accept (the real Qwen-1.8B header is ~30 KB).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Length of the JSON header from the first 8 bytes, checked against the file size.
pub fn header_len(prefix: &[u8], file_len: u64, file: &str) -> Result<u64> {
    if prefix.len() < 8 || file_len < 8 {
        return Err(Error::Weights(format!("{file}: too short to be a safetensors file ({file_len} bytes)")));
    }
    let n = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES || n > file_len - 8 {
        return Err(Error::Weights(format!(
            "{file}: header length {n} does not fit a {file_len}-byte file (truncated or not safetensors)"
        )));
    }
    Ok(n)
}

/// Parse the JSON header (the `header_len` bytes after the 8-byte prefix) of a file of
/// `file_len` bytes: its tensors.
pub fn parse_header(json: &[u8], file_len: u64, file: &str) -> Result<BTreeMap<String, TensorInfo>> {
    Ok(parse_header_full(json, file_len, file)?.tensors)
}

/// [`parse_header`], keeping the `__metadata__` too (string values; the format says
/// `Dict[str, str]`, so a non-string value under our `qwen_webgpu.` keys is an error and
/// anywhere else is skipped).
pub fn parse_header_full(json: &[u8], file_len: u64, file: &str) -> Result<Header> {
    let bad = |msg: String| Error::Weights(format!("{file}: {msg}"));
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("header is not a JSON object".into()))?;
    let data_start = 8 + json.len() as u64;
    let data_len = file_len - data_start;
    let mut out = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            let m = entry.as_object().ok_or_else(|| bad("__metadata__ is not a JSON object".into()))?;
            for (k, v) in m {
                match v.as_str() {
                    Some(v) => {
                        metadata.insert(k.clone(), v.to_string());
                    }
                    None if k.starts_with("qwen_webgpu.") => {
                        return Err(bad(format!("__metadata__ {k} is not a string: {v}")))
                    }
                    None => {}
                }
            }
            continue;
        }
        let dtype = entry
            .get("dtype")
            .and_then(|d| d.as_str())
            .map(Dtype::parse)
            .ok_or_else(|| bad(format!("tensor {name}: missing dtype")))?;
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect())
            .ok_or_else(|| bad(format!("tensor {name}: missing or invalid shape")))?;
        let offs: Vec<u64> = entry
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|x| x.as_u64()).collect())
            .filter(|o: &Vec<u64>| o.len() == 2)
            .ok_or_else(|| bad(format!("tensor {name}: missing or invalid data_offsets")))?;
        let (a, b) = (offs[0], offs[1]);
        if a > b || b > data_len {
            return Err(bad(format!(
                "tensor {name}: data_offsets [{a}, {b}] out of range (data section is {data_len} bytes; file truncated?)"
            )));
        }
        let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if let (Some(numel), Some(size)) = (numel, dtype.size()) {
            if numel.checked_mul(size) != Some((b - a) as usize) {
                return Err(bad(format!(
                    "tensor {name}: {} bytes stored, but shape {shape:?} of {} needs {}",
                    b - a,
                    dtype.name(),
                    numel.saturating_mul(size)
                )));
            }
        } else if numel.is_none() {
            return Err(bad(format!("tensor {name}: shape {shape:?} overflows")));
        }
        out.insert(name.clone(), TensorInfo { dtype, shape, start: data_start + a, end: data_start + b });
    }
    // Tensors must not overlap one another.
    let mut ranges: Vec<(&String, u64, u64)> = out.iter().map(|(n, t)| (n, t.start, t.end)).collect();
    ranges.sort_by_key(|r| (r.1, r.2));
    for w in ranges.windows(2) {
        if w[1].1 < w[0].2 {
            return Err(bad(format!("tensors {} and {} overlap", w[0].0, w[1].0)));
        }
    }
    Ok(Header { tensors: out, metadata })
}

/// One tensor of a header to write: stored contiguously, in the order given.
#[derive(Debug, Clone)]
pub struct HeaderEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: u64,
}

/// The first bytes of a safetensors file holding `entries` back to back: the 8-byte length,
/// then the JSON header padded with spaces to a multiple of 8 (as the reference writer does).
pub fn serialize_header(entries: &[HeaderEntry], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut obj = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        obj.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut at = 0u64;
    for e in entries {
        if obj.contains_key(&e.name) {
            return Err(Error::Weights(format!("tensor {} written twice", e.name)));
        }
        let numel: usize = e.shape.iter().product();
        if Dtype::parse(&e.dtype).size().map(|s| (s * numel) as u64) != Some(e.bytes) {
            return Err(Error::Weights(format!(
                "tensor {}: {} bytes do not fit {:?} {}",
                e.name, e.bytes, e.shape, e.dtype
            )));
        }
        obj.insert(
            e.name.clone(),
            serde_json::json!({ "dtype": e.dtype, "shape": e.shape, "data_offsets": [at, at + e.bytes] }),
        );
        at += e.bytes;
    }
    // serde_json keeps keys sorted; the data order is the offsets', not the keys'.
    let mut json = serde_json::to_vec(&serde_json::Value::Object(obj)).map_err(|e| Error::Weights(e.to_string()))?;
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    Ok(out)
}
