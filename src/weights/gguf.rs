//! The GGUF container (llama.cpp's model file), versions 2 and 3: a header (magic, version,
//! tensor count, metadata count), typed metadata key/values, tensor infos (name, dims with
//! ne[0] the row length, ggml type, offset into the data section), padding to the alignment,
//! then the tensor data. [`parse_header`] reads only the first bytes of a file (the browser
//! fetches tensors by Range afterwards) and checks every size and offset before any tensor
//! byte is read.
//!
//! Layout (little-endian throughout): `"GGUF"`, u32 version, u64 tensor count, u64 metadata
//! count; each metadata entry is a string key (u64 length + UTF-8 bytes), a u32 value type
//! (0 U8, 1 I8, 2 U16, 3 I16, 4 U32, 5 I32, 6 F32, 7 BOOL, 8 STRING, 9 ARRAY, 10 U64, 11 I64,
//! 12 F64) and the value (an ARRAY is a u32 element type, a u64 count, then the elements
//! without their type); each tensor info is a string name, u32 n_dims, n_dims × u64 ne, u32
//! ggml type, u64 offset from the start of the data section; the data section starts at the
//! end of the tensor infos rounded up to `general.alignment` (a u32, default 32).
//!
//! What llama.cpp's reader (`ggml/src/gguf.cpp`, and gguf-py's `GGUFReader`) does that is easy
//! to get wrong, and what we do:
//!
//! - Version 1 used u32 counts and string lengths; gguf.cpp refuses it, and so do we. Version 2
//!   and 3 have the same layout (3 added big-endian files). A big-endian file keeps the magic
//!   bytes `"GGUF"` (gguf-py packs the magic little-endian always): only the version tells, as
//!   `version & 0xFFFF == 0` (3 reads as `0x03000000`). We refuse those by name.
//! - `general.alignment` must be exactly a u32 (both readers refuse any other type, even a u64
//!   holding 32) and a nonzero power of two.
//! - gguf.cpp pads the end of the tensor infos to the alignment only when there are tensors (a
//!   metadata-only file's data section starts right after its header); gguf-py always pads.
//!   We follow gguf.cpp.
//! - gguf.cpp requires tensor offsets to be exactly consecutive: tensor i at the sum of the
//!   earlier tensors' sizes, each padded to the alignment, in info order. gguf-py does not; we
//!   accept any aligned, non-overlapping layout inside the file.
//! - ne is an int64 in gguf.cpp: it accepts `n_dims` 0 (a scalar) and zero-sized dims, which we
//!   refuse (no weight has them); the element count must fit an int64 there, here a u64, but
//!   the byte range must fit the file anyway.
//! - Tensor names must be shorter than 64 bytes (`GGML_MAX_NAME`) and keys nonempty: gguf.cpp
//!   refuses the file otherwise, and so do we. gguf.cpp does not check UTF-8; we do, in keys,
//!   names and every string (gguf-py decodes keys and names as UTF-8 and fails on bad bytes).
//! - gguf.cpp bounds strings and arrays at 2^30 bytes or elements (gguf-py likewise) and checks
//!   them against the bytes left in the file before allocating. We bound the whole header at [`MAX_HEADER_BYTES`] and the
//!   decoded arrays at [`MAX_DECODED_BYTES`], and check every count against the bytes given.
//! - A BOOL is one byte, any nonzero value true (gguf.cpp); gguf-py writes 0 or 1.
//! - Arrays may be empty (gguf.cpp reads them; gguf-py's writer refuses to write one). Arrays
//!   of arrays: gguf.cpp refuses them as an invalid type, gguf-py reads and writes them; we
//!   read them (kept as their length only, nesting at most [`MAX_NESTING`] deep).
//! - Tensor type ids are `enum ggml_type`: ids 4, 5, 31–33 and 36–38 were removed and never
//!   appear in a valid file; an unknown id is an error here, while a known type we cannot
//!   decode parses (the loader names it).

use super::ggml::GgmlType;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// A metadata value. Arrays of strings and numbers (the tokenizer's vocabulary, merges and
/// token types: 150k+ entries for Qwen) are held as typed vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    /// An array of strings.
    Strings(Vec<String>),
    /// An array of integers of any width (signed and unsigned kept exactly: i128 holds both).
    Ints(Vec<i128>),
    /// An array of f32 or f64.
    Floats(Vec<f64>),
    /// An array of bools.
    Bools(Vec<bool>),
    /// An array of arrays (gguf-py writes them, llama.cpp refuses them; nothing we read uses
    /// them): only its length is kept.
    Nested(usize),
}

impl GgufValue {
    /// An integer scalar of any width, as u64 (None for negatives and non-integers).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(x) => Some(x as u64),
            GgufValue::U16(x) => Some(x as u64),
            GgufValue::U32(x) => Some(x as u64),
            GgufValue::U64(x) => Some(x),
            GgufValue::I8(x) => u64::try_from(x).ok(),
            GgufValue::I16(x) => u64::try_from(x).ok(),
            GgufValue::I32(x) => u64::try_from(x).ok(),
            GgufValue::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }
    /// A float or integer scalar as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(x) => Some(x as f64),
            GgufValue::F64(x) => Some(x),
            GgufValue::I8(x) => Some(x as f64),
            GgufValue::I16(x) => Some(x as f64),
            GgufValue::I32(x) => Some(x as f64),
            GgufValue::I64(x) => Some(x as f64),
            _ => self.as_u64().map(|x| x as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    /// Dimensions as the file lists them: `dims[0]` (ne[0]) is the row length, so a
    /// `[rows, cols]` matrix is `[cols, rows]` here.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte range in the file.
    pub start: u64,
    pub end: u64,
}

/// Everything before the tensor data.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    /// In file order.
    pub tensors: Vec<GgufTensor>,
    /// `general.alignment`, or 32.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// What [`parse_header`] made of a file's first bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Header(GgufHeader),
    /// The header runs past the bytes given: call again with at least this many.
    NeedMore(u64),
}

/// Largest header we read (everything before the data section, the vocabulary included: a
/// Qwen file's is about 6 MB). A longer one is an error, not a request for more bytes.
pub const MAX_HEADER_BYTES: u64 = 64 << 20;

/// Most memory the metadata arrays may take once decoded, checked before each is allocated:
/// an array of 64 MiB of u8 would be 1 GiB as i128 (a Qwen file's arrays take about 12 MB).
pub const MAX_DECODED_BYTES: u64 = 128 << 20;

/// Deepest nesting of arrays of arrays we walk.
pub const MAX_NESTING: u32 = 8;

/// The fewest bytes [`Parsed::NeedMore`] asks for (fewer round trips for small prefixes).
const MIN_FETCH: u64 = 64 << 10;

/// Smallest metadata entry: an 8-byte key length, the u32 type, a 1-byte value (an empty key
/// is refused, but by name).
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest tensor info: the name length, n_dims, one dim, the type, the offset.
const MIN_TENSOR_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// `GGML_MAX_NAME`: gguf.cpp refuses a tensor name of this many bytes or more.
const MAX_TENSOR_NAME: usize = 64;

/// Parse a GGUF header from the file's first bytes `prefix` of a file of `file_len` bytes.
/// `label` names the file in errors.
///
/// Returns [`Parsed::NeedMore`] when the header runs past `prefix` (with at least the bytes the
/// next step needs, usually more: twice `prefix`, at least 64 KiB, at most `file_len`), and an
/// error for everything wrong with the file, a truncated one included (the header needs bytes
/// past `file_len`). Never allocates more than the bytes given justify.
pub fn parse_header(prefix: &[u8], file_len: u64, label: &str) -> Result<Parsed> {
    let given = prefix.len() as u64;
    if given > file_len {
        return Err(Error::Weights(format!("{label}: {given} bytes given of a {file_len}-byte file")));
    }
    let mut r = Reader { buf: prefix, pos: 0, file_len, decoded: 0 };
    match parse(&mut r) {
        Ok(h) => Ok(Parsed::Header(h)),
        Err(Stop::Short(need)) => {
            // `need` is past `prefix` and within both the file and the header cap (`take`
            // checks those first), so this is progress and never an impossible request.
            let n = need.max(given.saturating_mul(2)).max(MIN_FETCH).min(file_len).min(MAX_HEADER_BYTES).max(need);
            Ok(Parsed::NeedMore(n))
        }
        Err(Stop::Bad(msg)) => Err(Error::Weights(format!("{label}: {msg}"))),
    }
}

/// Why parsing stopped: more bytes needed (up to this absolute offset), or a bad file.
#[derive(Debug)]
enum Stop {
    Short(u64),
    Bad(String),
}

type R<T> = std::result::Result<T, Stop>;

fn bad<T>(msg: impl Into<String>) -> R<T> {
    Err(Stop::Bad(msg.into()))
}

/// Prefix the error in `r`, if any, with `what` (where in the file it happened).
fn within<T>(what: impl FnOnce() -> String, r: R<T>) -> R<T> {
    r.map_err(|e| match e {
        Stop::Bad(m) => Stop::Bad(format!("{}: {m}", what())),
        short => short,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: u64,
    file_len: u64,
    /// Bytes of decoded metadata arrays so far.
    decoded: u64,
}

impl<'a> Reader<'a> {
    /// Check that `count` items of at least `each` bytes can follow: an error past the header
    /// cap or the file, `Short` past the prefix. Call before allocating for `count` items.
    fn room(&self, count: u64, each: u64) -> R<()> {
        let end = count.checked_mul(each).and_then(|n| n.checked_add(self.pos));
        match end {
            Some(end) => self.reach(end),
            None => bad(format!("{count} items of {each}+ bytes cannot fit any file")),
        }
    }

    /// Whether the header may extend to absolute offset `end`.
    fn reach(&self, end: u64) -> R<()> {
        if end > MAX_HEADER_BYTES {
            return bad(format!("the header would run to byte {end}, past the {} MiB we read", MAX_HEADER_BYTES >> 20));
        }
        if end > self.file_len {
            return bad(format!(
                "the header would run to byte {end}, past the end of the {}-byte file (truncated?)",
                self.file_len
            ));
        }
        if end > self.buf.len() as u64 {
            return Err(Stop::Short(end));
        }
        Ok(())
    }

    fn take(&mut self, n: u64) -> R<&'a [u8]> {
        let end = match self.pos.checked_add(n) {
            Some(end) => end,
            None => return bad(format!("{n} bytes cannot fit any file")),
        };
        self.reach(end)?;
        // `reach` checked end <= buf.len(), so both fit usize.
        let out = &self.buf[self.pos as usize..end as usize];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> R<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }

    fn u32(&mut self) -> R<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> R<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A string: u64 length, UTF-8 bytes.
    fn string(&mut self) -> R<String> {
        let n = self.u64()?;
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => bad(format!("a {n}-byte string is not UTF-8 ({e})")),
        }
    }

    /// Count `count` decoded items of `each` bytes against [`MAX_DECODED_BYTES`].
    fn charge(&mut self, count: u64, each: usize) -> R<()> {
        let total = count.checked_mul(each as u64).and_then(|b| b.checked_add(self.decoded));
        match total {
            Some(t) if t <= MAX_DECODED_BYTES => {
                self.decoded = t;
                Ok(())
            }
            _ => bad(format!("metadata arrays would take more than {} MiB of memory decoded", MAX_DECODED_BYTES >> 20)),
        }
    }

    /// A value of type `ty` (without the type itself).
    fn value(&mut self, ty: u32) -> R<GgufValue> {
        use GgufValue as V;
        Ok(match ty {
            0 => V::U8(self.array::<1>()?[0]),
            1 => V::I8(self.array::<1>()?[0] as i8),
            2 => V::U16(u16::from_le_bytes(self.array()?)),
            3 => V::I16(i16::from_le_bytes(self.array()?)),
            4 => V::U32(self.u32()?),
            5 => V::I32(i32::from_le_bytes(self.array()?)),
            6 => V::F32(f32::from_le_bytes(self.array()?)),
            7 => V::Bool(self.array::<1>()?[0] != 0),
            8 => V::String(self.string()?),
            9 => self.array_value()?,
            10 => V::U64(self.u64()?),
            11 => V::I64(i64::from_le_bytes(self.array()?)),
            12 => V::F64(f64::from_le_bytes(self.array()?)),
            _ => return bad(format!("unknown value type {ty}")),
        })
    }

    /// An ARRAY value: element type, count, elements.
    fn array_value(&mut self) -> R<GgufValue> {
        use GgufValue as V;
        let elem = self.u32()?;
        let count = self.u64()?;
        if elem == 9 {
            self.room(count, 12)?;
            for _ in 0..count {
                self.skip_array(1)?;
            }
            // `room` bounded count by the header cap, far below usize::MAX on every target.
            return Ok(V::Nested(count as usize));
        }
        let Some(size) = scalar_size(elem) else {
            if elem == 8 {
                return self.strings(count).map(V::Strings);
            }
            return bad(format!("array of unknown value type {elem}"));
        };
        self.room(count, size)?;
        // `room` checked that the bytes are in the prefix: count fits usize from here.
        let bytes = self.take(count * size)?;
        let n = count as usize;
        Ok(match elem {
            6 | 12 => {
                self.charge(count, size_of::<f64>())?;
                let mut out = Vec::with_capacity(n);
                if elem == 6 {
                    out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64));
                } else {
                    out.extend(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())));
                }
                V::Floats(out)
            }
            7 => {
                self.charge(count, 1)?;
                V::Bools(bytes.iter().map(|&b| b != 0).collect())
            }
            _ => {
                self.charge(count, size_of::<i128>())?;
                let mut out = Vec::with_capacity(n);
                let s = size as usize;
                out.extend(bytes.chunks_exact(s).map(|c| int_at(elem, c)));
                V::Ints(out)
            }
        })
    }

    /// `count` strings.
    fn strings(&mut self, count: u64) -> R<Vec<String>> {
        self.room(count, 8)?;
        self.charge(count, size_of::<String>())?;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            out.push(within(|| format!("string {i} of {count}"), self.string())?);
        }
        Ok(out)
    }

    /// Walk past one array inside an array (its element type, count and elements), checking
    /// it as [`Reader::array_value`] would but keeping nothing.
    fn skip_array(&mut self, depth: u32) -> R<()> {
        if depth >= MAX_NESTING {
            return bad(format!("arrays nested more than {MAX_NESTING} deep"));
        }
        let elem = self.u32()?;
        let count = self.u64()?;
        match (elem, scalar_size(elem)) {
            (_, Some(size)) => {
                self.room(count, size)?;
                self.take(count * size)?;
            }
            (8, None) => {
                self.room(count, 8)?;
                for _ in 0..count {
                    self.string()?;
                }
            }
            (9, None) => {
                self.room(count, 12)?;
                for _ in 0..count {
                    self.skip_array(depth + 1)?;
                }
            }
            _ => return bad(format!("array of unknown value type {elem}")),
        }
        Ok(())
    }
}

/// Bytes of a fixed-size value type; None for strings, arrays and unknown types.
fn scalar_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// The integer of type `ty` in little-endian bytes `c` (exactly its size).
fn int_at(ty: u32, c: &[u8]) -> i128 {
    let mut b = [0u8; 8];
    b[..c.len()].copy_from_slice(c);
    let u = u64::from_le_bytes(b);
    match ty {
        1 => u as u8 as i8 as i128,
        3 => u as u16 as i16 as i128,
        5 => u as u32 as i32 as i128,
        11 => u as i64 as i128,
        _ => u as i128,
    }
}

/// The name of a value's type (for errors).
fn type_name(v: &GgufValue) -> &'static str {
    use GgufValue as V;
    match v {
        V::U8(_) => "u8",
        V::I8(_) => "i8",
        V::U16(_) => "u16",
        V::I16(_) => "i16",
        V::U32(_) => "u32",
        V::I32(_) => "i32",
        V::U64(_) => "u64",
        V::I64(_) => "i64",
        V::F32(_) => "f32",
        V::F64(_) => "f64",
        V::Bool(_) => "bool",
        V::String(_) => "string",
        _ => "array",
    }
}

fn parse(r: &mut Reader) -> R<GgufHeader> {
    let file_len = r.file_len;
    let magic = within(|| "the magic".into(), r.take(4))?;
    if magic != b"GGUF" {
        return bad(format!("not a GGUF file (it starts with {:?}, not \"GGUF\")", String::from_utf8_lossy(magic)));
    }
    let version = within(|| "the version".into(), r.u32())?;
    match version {
        2 | 3 => {}
        0 => return bad("GGUF version 0 is not valid"),
        1 => {
            return bad("GGUF version 1 (from 2023, 32-bit counts) is not supported, as in llama.cpp: \
                        convert the model again (versions 2 and 3 are read)")
        }
        v if v & 0xFFFF == 0 => {
            return bad(format!(
                "a big-endian GGUF file (its version reads {v:#010x}, version {} byte-swapped): only \
                 little-endian files are supported",
                v.swap_bytes()
            ))
        }
        v => return bad(format!("GGUF version {v} is newer than this reader (versions 2 and 3)")),
    }
    let (n_tensors, n_kv) = within(|| "the counts".into(), r.u64().and_then(|t| Ok((t, r.u64()?))))?;
    // Both counts against the bytes they need at the least: a count of 2^60 stops here, and a
    // short prefix learns roughly how long the header is.
    let least = n_kv.checked_mul(MIN_KV_BYTES).zip(n_tensors.checked_mul(MIN_TENSOR_BYTES));
    match least.and_then(|(a, b)| a.checked_add(b)) {
        Some(least) => within(
            || format!("{n_kv} metadata entries and {n_tensors} tensors (at least {least} bytes)"),
            r.room(1, least),
        )?,
        None => return bad(format!("{n_kv} metadata entries and {n_tensors} tensors cannot fit any file")),
    }

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = within(|| format!("metadata entry {i}"), r.string())?;
        if key.is_empty() {
            return bad(format!("metadata entry {i} has an empty key"));
        }
        if metadata.contains_key(&key) {
            return bad(format!("metadata key {key:?} appears twice"));
        }
        let value = within(|| format!("metadata {key:?}"), r.u32().and_then(|ty| r.value(ty)))?;
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(GgufValue::U32(a)) if a.is_power_of_two() => *a as u64,
        Some(GgufValue::U32(a)) => return bad(format!("general.alignment {a} is not a power of two")),
        Some(v) => return bad(format!("general.alignment is a {}, not a u32", type_name(v))),
    };

    // room() above checked n_tensors against the prefix: the capacity is backed by bytes.
    let mut infos = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = within(|| format!("tensor info {i}"), r.string())?;
        let info = within(|| format!("tensor {name:?}"), tensor_info(r, alignment))?;
        if name.len() >= MAX_TENSOR_NAME {
            return bad(format!(
                "tensor name {name:?} is {} bytes, llama.cpp's limit is {}",
                name.len(),
                MAX_TENSOR_NAME - 1
            ));
        }
        infos.push((name, info));
    }

    let header_end = r.pos;
    let data_offset = if n_tensors > 0 { header_end.next_multiple_of(alignment) } else { header_end };
    let mut tensors = Vec::with_capacity(infos.len());
    let mut names = std::collections::HashSet::with_capacity(infos.len());
    for (name, (dims, ggml_type, offset, bytes)) in infos {
        if !names.insert(name.clone()) {
            return bad(format!("tensor {name:?} appears twice"));
        }
        let start = data_offset.checked_add(offset);
        let end = start.and_then(|s| s.checked_add(bytes));
        let (Some(start), Some(end)) = (start, end) else {
            return bad(format!("tensor {name:?}: offset {offset} + {bytes} bytes overflow"));
        };
        if end > file_len {
            return bad(format!(
                "tensor {name:?} ({} {dims:?}, {bytes} bytes) at bytes {start}..{end} runs past the end of \
                 the {file_len}-byte file (truncated?)",
                ggml_type.name()
            ));
        }
        tensors.push(GgufTensor { name, dims, ggml_type, start, end });
    }
    let mut by_start: Vec<&GgufTensor> = tensors.iter().collect();
    by_start.sort_by_key(|t| t.start);
    for w in by_start.windows(2) {
        if w[0].end > w[1].start {
            return bad(format!(
                "tensors {:?} (bytes {}..{}) and {:?} (bytes {}..{}) overlap",
                w[0].name, w[0].start, w[0].end, w[1].name, w[1].start, w[1].end
            ));
        }
    }
    Ok(GgufHeader { version, metadata, tensors, alignment, data_offset })
}

/// The rest of a tensor info after its name: dims, type, offset, checked; with the byte length.
fn tensor_info(r: &mut Reader, alignment: u64) -> R<(Vec<u64>, GgmlType, u64, u64)> {
    let n_dims = r.u32()?;
    if !(1..=4).contains(&n_dims) {
        return bad(format!("{n_dims} dimensions (1 to 4 are allowed)"));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(r.u64()?);
    }
    let id = r.u32()?;
    let offset = r.u64()?;
    if dims.contains(&0) {
        return bad(format!("dimensions {dims:?} include a zero"));
    }
    let Some(count) = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)) else {
        return bad(format!("dimensions {dims:?} overflow a 64-bit element count"));
    };
    let Some(t) = GgmlType::from_id(id) else {
        return bad(format!("unknown ggml type id {id}"));
    };
    let (block, block_bytes) = t.block();
    let block = block as u64;
    if !dims[0].is_multiple_of(block) {
        return bad(format!("{} rows of {} values are not whole blocks of {block}", t.name(), dims[0]));
    }
    let Some(bytes) = (count / block).checked_mul(block_bytes as u64) else {
        return bad(format!("{} {dims:?} overflows a 64-bit byte count", t.name()));
    };
    if !offset.is_multiple_of(alignment) {
        return bad(format!("offset {offset} is not a multiple of the alignment {alignment}"));
    }
    Ok((dims, t, offset, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A metadata value as written (typed, so every GGUF type can be produced, bad ones too).
    #[derive(Clone, Debug)]
    enum V {
        U8(u8),
        I8(i8),
        U16(u16),
        I16(i16),
        U32(u32),
        I32(i32),
        F32(f32),
        Bool(u8),
        Str(Vec<u8>),
        /// Element type, elements (written without their types).
        Arr(u32, Vec<V>),
        U64(u64),
        I64(i64),
        F64(f64),
    }

    impl V {
        fn s(s: &str) -> V {
            V::Str(s.as_bytes().to_vec())
        }
        fn ty(&self) -> u32 {
            match self {
                V::U8(_) => 0,
                V::I8(_) => 1,
                V::U16(_) => 2,
                V::I16(_) => 3,
                V::U32(_) => 4,
                V::I32(_) => 5,
                V::F32(_) => 6,
                V::Bool(_) => 7,
                V::Str(_) => 8,
                V::Arr(..) => 9,
                V::U64(_) => 10,
                V::I64(_) => 11,
                V::F64(_) => 12,
            }
        }
        fn put(&self, o: &mut Vec<u8>) {
            match self {
                V::U8(x) => o.push(*x),
                V::I8(x) => o.push(*x as u8),
                V::U16(x) => o.extend(x.to_le_bytes()),
                V::I16(x) => o.extend(x.to_le_bytes()),
                V::U32(x) => o.extend(x.to_le_bytes()),
                V::I32(x) => o.extend(x.to_le_bytes()),
                V::F32(x) => o.extend(x.to_le_bytes()),
                V::Bool(x) => o.push(*x),
                V::Str(b) => put_str(o, b),
                V::Arr(t, items) => {
                    o.extend(t.to_le_bytes());
                    o.extend((items.len() as u64).to_le_bytes());
                    for i in items {
                        i.put(o);
                    }
                }
                V::U64(x) => o.extend(x.to_le_bytes()),
                V::I64(x) => o.extend(x.to_le_bytes()),
                V::F64(x) => o.extend(x.to_le_bytes()),
            }
        }
    }

    fn put_str(o: &mut Vec<u8>, b: &[u8]) {
        o.extend((b.len() as u64).to_le_bytes());
        o.extend(b);
    }

    struct T {
        name: Vec<u8>,
        dims: Vec<u64>,
        ty: u32,
        offset: u64,
    }

    /// A GGUF file to write: what `build` lays out, every field open to spoiling.
    struct File {
        version: u32,
        kvs: Vec<(Vec<u8>, V)>,
        tensors: Vec<T>,
        /// The alignment `build` pads to (set general.alignment too to change the file's).
        align: u64,
        /// Bytes of the data section (`layout` sets it).
        data: u64,
    }

    impl File {
        fn new() -> File {
            File { version: 3, kvs: Vec::new(), tensors: Vec::new(), align: 32, data: 0 }
        }
        fn kv(mut self, k: &str, v: V) -> File {
            self.kvs.push((k.as_bytes().to_vec(), v));
            self
        }
        fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType) -> File {
            let id = (0..64).find(|&i| GgmlType::from_id(i) == Some(ty)).unwrap();
            self.tensors.push(T { name: name.as_bytes().to_vec(), dims: dims.to_vec(), ty: id, offset: 0 });
            self.layout()
        }
        /// Tensors one after the other, each padded to the alignment (as llama.cpp writes).
        fn layout(mut self) -> File {
            let mut at = 0;
            for t in &mut self.tensors {
                t.offset = at;
                let ty = GgmlType::from_id(t.ty).unwrap();
                let (n, b) = ty.block();
                at += (t.dims.iter().product::<u64>() / n as u64 * b as u64).next_multiple_of(self.align);
            }
            self.data = at;
            self
        }
        /// The header bytes (through the tensor infos, no padding).
        fn header(&self) -> Vec<u8> {
            let mut o = b"GGUF".to_vec();
            o.extend(self.version.to_le_bytes());
            o.extend((self.tensors.len() as u64).to_le_bytes());
            o.extend((self.kvs.len() as u64).to_le_bytes());
            for (k, v) in &self.kvs {
                put_str(&mut o, k);
                o.extend(v.ty().to_le_bytes());
                v.put(&mut o);
            }
            for t in &self.tensors {
                put_str(&mut o, &t.name);
                o.extend((t.dims.len() as u32).to_le_bytes());
                for d in &t.dims {
                    o.extend(d.to_le_bytes());
                }
                o.extend(t.ty.to_le_bytes());
                o.extend(t.offset.to_le_bytes());
            }
            o
        }
        fn build(&self) -> Vec<u8> {
            let mut o = self.header();
            if !self.tensors.is_empty() {
                o.resize((o.len() as u64).next_multiple_of(self.align) as usize, 0);
            }
            let n = o.len();
            o.extend((0..self.data).map(|i| (i * 7 + 1) as u8));
            assert_eq!(o.len(), n + self.data as usize);
            o
        }
    }

    fn parse(bytes: &[u8]) -> Result<GgufHeader> {
        match parse_header(bytes, bytes.len() as u64, "test.gguf")? {
            Parsed::Header(h) => Ok(h),
            Parsed::NeedMore(n) => panic!("asked for {n} of the {} bytes given", bytes.len()),
        }
    }

    fn err(bytes: &[u8]) -> String {
        match parse_header(bytes, bytes.len() as u64, "test.gguf") {
            Err(e) => {
                let s = e.to_string();
                assert!(s.starts_with("weights: test.gguf: "), "{s}");
                s
            }
            Ok(p) => panic!("parsed: {p:?}"),
        }
    }

    /// Assert the error for `bytes` says `what`.
    fn refuses(bytes: &[u8], what: &str) {
        let e = err(bytes);
        assert!(e.contains(what), "expected {what:?} in {e:?}");
    }

    fn small() -> File {
        File::new()
            .kv("general.architecture", V::s("qwen2"))
            .kv("qwen2.block_count", V::U32(2))
            .kv("tokenizer.ggml.tokens", V::Arr(8, vec![V::s("a"), V::s("Ġb"), V::s("<|im_end|>")]))
            .kv("tokenizer.ggml.token_type", V::Arr(5, vec![V::I32(1), V::I32(1), V::I32(3)]))
            .tensor("token_embd.weight", &[64, 3], GgmlType::Q8_0)
            .tensor("output_norm.weight", &[64], GgmlType::F32)
            .tensor("blk.0.attn_q.weight", &[32, 5], GgmlType::F16)
    }

    #[test]
    fn every_value_type_round_trips() {
        let scalars = [
            ("u8", V::U8(200), GgufValue::U8(200)),
            ("i8", V::I8(-100), GgufValue::I8(-100)),
            ("u16", V::U16(65000), GgufValue::U16(65000)),
            ("i16", V::I16(-32000), GgufValue::I16(-32000)),
            ("u32", V::U32(4_000_000_000), GgufValue::U32(4_000_000_000)),
            ("i32", V::I32(-2_000_000_000), GgufValue::I32(-2_000_000_000)),
            ("f32", V::F32(-1.5e-7), GgufValue::F32(-1.5e-7)),
            ("bool0", V::Bool(0), GgufValue::Bool(false)),
            ("bool1", V::Bool(1), GgufValue::Bool(true)),
            ("bool2", V::Bool(2), GgufValue::Bool(true)),
            ("str", V::s("héllo 世界"), GgufValue::String("héllo 世界".into())),
            ("empty_str", V::s(""), GgufValue::String(String::new())),
            ("u64", V::U64(u64::MAX), GgufValue::U64(u64::MAX)),
            ("i64", V::I64(i64::MIN), GgufValue::I64(i64::MIN)),
            ("f64", V::F64(std::f64::consts::PI), GgufValue::F64(std::f64::consts::PI)),
        ];
        let arrays = [
            ("a_u8", V::Arr(0, vec![V::U8(0), V::U8(255)]), GgufValue::Ints(vec![0, 255])),
            ("a_i8", V::Arr(1, vec![V::I8(-128), V::I8(127)]), GgufValue::Ints(vec![-128, 127])),
            ("a_u16", V::Arr(2, vec![V::U16(65535)]), GgufValue::Ints(vec![65535])),
            ("a_i16", V::Arr(3, vec![V::I16(-32768), V::I16(5)]), GgufValue::Ints(vec![-32768, 5])),
            ("a_u32", V::Arr(4, vec![V::U32(u32::MAX)]), GgufValue::Ints(vec![u32::MAX as i128])),
            ("a_i32", V::Arr(5, vec![V::I32(i32::MIN), V::I32(-1)]), GgufValue::Ints(vec![i32::MIN as i128, -1])),
            ("a_f32", V::Arr(6, vec![V::F32(0.1), V::F32(-2.0)]), GgufValue::Floats(vec![0.1f32 as f64, -2.0])),
            ("a_bool", V::Arr(7, vec![V::Bool(1), V::Bool(0)]), GgufValue::Bools(vec![true, false])),
            (
                "a_str",
                V::Arr(8, vec![V::s("x"), V::s(""), V::s("ÿ")]),
                GgufValue::Strings(vec!["x".into(), "".into(), "ÿ".into()]),
            ),
            ("a_u64", V::Arr(10, vec![V::U64(u64::MAX)]), GgufValue::Ints(vec![u64::MAX as i128])),
            ("a_i64", V::Arr(11, vec![V::I64(i64::MIN)]), GgufValue::Ints(vec![i64::MIN as i128])),
            ("a_f64", V::Arr(12, vec![V::F64(1e300)]), GgufValue::Floats(vec![1e300])),
            ("a_empty_i32", V::Arr(5, vec![]), GgufValue::Ints(vec![])),
            ("a_empty_str", V::Arr(8, vec![]), GgufValue::Strings(vec![])),
            (
                "a_nested",
                V::Arr(
                    9,
                    vec![V::Arr(5, vec![V::I32(1)]), V::Arr(8, vec![V::s("s")]), V::Arr(9, vec![V::Arr(0, vec![])])],
                ),
                GgufValue::Nested(3),
            ),
        ];
        let mut f = File::new();
        for (k, v, _) in scalars.iter().chain(&arrays) {
            f = f.kv(k, v.clone());
        }
        let h = parse(&f.build()).unwrap();
        assert_eq!(h.metadata.len(), scalars.len() + arrays.len());
        for (k, _, want) in scalars.iter().chain(&arrays) {
            assert_eq!(&h.metadata[*k], want, "{k}");
        }
        assert!(h.tensors.is_empty());
        // No tensors: the data section starts right after the header, unpadded (gguf.cpp).
        assert_eq!(h.data_offset, f.header().len() as u64);
        assert_eq!(h.metadata["u64"].as_u64(), Some(u64::MAX));
        assert_eq!(h.metadata["i8"].as_u64(), None);
        assert_eq!(h.metadata["i8"].as_f64(), Some(-100.0));
        assert_eq!(h.metadata["str"].as_str(), Some("héllo 世界"));
        assert_eq!(h.metadata["bool1"].as_bool(), Some(true));
    }

    #[test]
    fn tensors_and_versions() {
        for version in [2, 3] {
            let mut f = small();
            f.version = version;
            let bytes = f.build();
            let h = parse(&bytes).unwrap();
            assert_eq!(h.version, version);
            assert_eq!(h.alignment, 32);
            assert_eq!(h.data_offset, (f.header().len() as u64).next_multiple_of(32));
            assert!(h.data_offset.is_multiple_of(32));
            let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight"]);
            let t = &h.tensors[0];
            assert_eq!((t.dims.as_slice(), t.ggml_type), ([64, 3].as_slice(), GgmlType::Q8_0));
            assert_eq!((t.start, t.end), (h.data_offset, h.data_offset + 6 * 34));
            let t = &h.tensors[1];
            assert_eq!((t.start, t.end), (h.data_offset + 224, h.data_offset + 224 + 256));
            let t = &h.tensors[2];
            assert_eq!((t.start, t.end - t.start), (h.data_offset + 480, 320));
            assert_eq!(t.end, bytes.len() as u64);
            assert_eq!(h.metadata["qwen2.block_count"], GgufValue::U32(2));
            assert_eq!(h.metadata["tokenizer.ggml.token_type"], GgufValue::Ints(vec![1, 1, 3]));
        }
    }

    #[test]
    fn custom_alignment() {
        for align in [1u32, 8, 64, 4096] {
            let mut f = small().kv("general.alignment", V::U32(align));
            f.align = align as u64;
            let f = f.layout();
            let bytes = f.build();
            let h = parse(&bytes).unwrap();
            assert_eq!(h.alignment, align as u64);
            assert_eq!(h.data_offset, (f.header().len() as u64).next_multiple_of(align as u64));
            for (t, w) in h.tensors.iter().zip(&f.tensors) {
                assert_eq!(t.start, h.data_offset + w.offset);
                assert!((t.start - h.data_offset).is_multiple_of(align as u64));
            }
            // Each tensor padded to the alignment, the last one too (as gguf-py writes).
            assert_eq!(h.tensors[2].end.next_multiple_of(align as u64), bytes.len() as u64);
        }
        // Gaps and any order are fine as long as offsets are aligned and ranges disjoint.
        let mut f = small();
        f.tensors.swap(0, 2);
        f = f.layout();
        for t in &mut f.tensors {
            t.offset += 64;
        }
        f.data += 64;
        let h = parse(&f.build()).unwrap();
        assert_eq!(h.tensors[0].name, "blk.0.attn_q.weight");
        assert_eq!(h.tensors[0].start, h.data_offset + 64);
    }

    #[test]
    fn known_types_we_cannot_decode_still_parse() {
        let f = File::new()
            .tensor("a", &[256, 2], GgmlType::IQ2XXS)
            .tensor("b", &[256], GgmlType::Q4K)
            .tensor("c", &[3, 2], GgmlType::I64)
            .tensor("d", &[64], GgmlType::NVFP4)
            .tensor("e", &[32, 1, 1, 2], GgmlType::MXFP4);
        let h = parse(&f.build()).unwrap();
        let sizes: Vec<u64> = h.tensors.iter().map(|t| t.end - t.start).collect();
        assert_eq!(sizes, [132, 144, 48, 36, 34]);
    }

    /// Every prefix shorter than the header asks for more (and for progress); following the
    /// requests reaches the header; every longer prefix parses.
    #[test]
    fn need_more_at_every_truncation() {
        let mut f = small().kv("general.alignment", V::U32(64));
        f.align = 64;
        let f = f.layout();
        let bytes = f.build();
        let full = parse(&bytes).unwrap();
        let len = bytes.len() as u64;
        // The byte just past the last tensor info: the header ends there.
        let header = f.header().len();
        for k in 0..bytes.len() {
            match parse_header(&bytes[..k], len, "t") {
                Ok(Parsed::NeedMore(n)) => {
                    assert!(k < header, "{k}: asked for more past the header");
                    assert!(n > k as u64 && n <= len, "{k}: asked for {n}");
                    let mut have = n as usize;
                    let mut trips = 0;
                    loop {
                        match parse_header(&bytes[..have], len, "t").unwrap() {
                            Parsed::Header(h) => break assert_eq!(h, full),
                            Parsed::NeedMore(n) => {
                                assert!(n as usize > have);
                                have = n as usize;
                            }
                        }
                        trips += 1;
                        assert!(trips < 64);
                    }
                }
                Ok(Parsed::Header(h)) => {
                    assert!(k >= header, "{k}: parsed a header from a prefix of {header}");
                    assert_eq!(h, full);
                }
                Err(e) => panic!("{k}: {e}"),
            }
        }
        // A file that really ends early is an error, wherever it ends.
        for k in 0..header {
            let e = parse_header(&bytes[..k], k as u64, "t").unwrap_err().to_string();
            assert!(e.contains("past the end of") || e.contains("not a GGUF"), "{k}: {e}");
        }
        // The tensor data may be cut short in the prefix, not in the file.
        refuses(&bytes[..bytes.len() - 1], "runs past the end of the");
    }

    /// A big vocabulary in a 10 MB header is read in a few round trips from a small prefix.
    #[test]
    fn need_more_estimates_ahead() {
        let tokens: Vec<V> = (0..200_000).map(|i| V::s(&format!("token{i}"))).collect();
        let f = File::new()
            .kv("general.architecture", V::s("qwen2"))
            .kv("tokenizer.ggml.tokens", V::Arr(8, tokens))
            .kv("tokenizer.ggml.scores", V::Arr(6, (0..200_000).map(|i| V::F32(i as f32)).collect()))
            .tensor("output_norm.weight", &[8], GgmlType::F32);
        let bytes = f.build();
        let len = bytes.len() as u64;
        let mut have = 16;
        let mut trips = 0;
        let h = loop {
            match parse_header(&bytes[..have], len, "t").unwrap() {
                Parsed::Header(h) => break h,
                Parsed::NeedMore(n) => {
                    assert!(n as usize > have);
                    have = n as usize;
                    trips += 1;
                }
            }
        };
        assert!(trips <= 8, "{trips} round trips");
        assert!(have < bytes.len() * 2);
        assert_eq!(h.metadata["tokenizer.ggml.tokens"].clone(), {
            GgufValue::Strings((0..200_000).map(|i| format!("token{i}")).collect())
        });
    }

    #[test]
    fn refuses_bad_headers() {
        let good = small().build();
        refuses(b"", "past the end of the 0-byte file");
        refuses(b"GGU", "past the end of the 3-byte file");
        refuses(b"GGML\x03\0\0\0", "not a GGUF file");
        refuses(b"PK\x03\x04 this is a zip", "not a GGUF file");
        let mut b = good.clone();
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        refuses(&b, "GGUF version 1");
        b[4..8].copy_from_slice(&0u32.to_le_bytes());
        refuses(&b, "version 0");
        b[4..8].copy_from_slice(&4u32.to_le_bytes());
        refuses(&b, "version 4 is newer");
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        refuses(&b, "big-endian");
        b[4..8].copy_from_slice(&2u32.to_be_bytes());
        refuses(&b, "version 2 byte-swapped");
        let big = 1u64 << 60;
        let mut b = good.clone();
        b[8..16].copy_from_slice(&big.to_le_bytes());
        refuses(&b, "1152921504606846976 tensors");
        let mut b = good.clone();
        b[16..24].copy_from_slice(&big.to_le_bytes());
        refuses(&b, "1152921504606846976 metadata entries");
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        refuses(&b, "cannot fit any file");
        // More bytes given than the file has.
        assert!(parse_header(&good, good.len() as u64 - 1, "t").is_err());
    }

    #[test]
    fn refuses_bad_metadata() {
        let one = |k: &[u8], v: V| {
            let mut f = File::new();
            f.kvs.push((k.to_vec(), v));
            f.build()
        };
        refuses(&one(b"\xff\xfe", V::U8(1)), "metadata entry 0: a 2-byte string is not UTF-8");
        refuses(&one(b"", V::U8(1)), "empty key");
        refuses(&one(b"k", V::Str(b"ok \xc3".to_vec())), "metadata \"k\": a 4-byte string is not UTF-8");
        refuses(&one(b"k", V::Arr(8, vec![V::s("ok"), V::Str(b"\xc0\x80".to_vec())])), "string 1 of 2");
        refuses(&one(b"k", V::Arr(9, vec![V::Arr(8, vec![V::Str(b"\x80".to_vec())])])), "not UTF-8");
        let f = File::new().kv("a", V::U8(1)).kv("b", V::U8(2)).kv("a", V::U8(3));
        refuses(&f.build(), "metadata key \"a\" appears twice");
        // Unknown value types, as a value and as an array's element.
        let mut b = one(b"k", V::U32(7));
        let at = b.len() - 8;
        b[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
        refuses(&b, "metadata \"k\": unknown value type 13");
        let mut b = one(b"k", V::Arr(4, vec![V::U32(1)]));
        let at = b.len() - 16;
        b[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
        refuses(&b, "array of unknown value type 99");
        // Huge counts and lengths stop before allocating.
        for (ty, what) in [(0u32, "items of 1+ bytes"), (8, "items of 8+ bytes"), (9, "items of 12+ bytes")] {
            let mut b = one(b"k", V::Arr(ty, vec![]));
            let at = b.len() - 8;
            b[at..].copy_from_slice(&(1u64 << 60).to_le_bytes());
            b.extend([0u8; 64]);
            let e = err(&b);
            assert!(e.contains("past the 64 MiB") || e.contains(what), "{e}");
            b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
            refuses(&b, "cannot fit any file");
        }
        let mut b = one(b"k", V::s("x"));
        let at = b.len() - 9;
        b[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        refuses(&b, "past the 64 MiB");
        // A header past the cap: the error says so instead of asking for more.
        let mut b = one(b"k", V::s("x"));
        b[at..at + 8].copy_from_slice(&(MAX_HEADER_BYTES).to_le_bytes());
        assert!(matches!(parse_header(&b, 1 << 40, "t"), Err(e) if e.to_string().contains("past the 64 MiB")));
        // Arrays nested too deep.
        let mut v = V::Arr(0, vec![]);
        for _ in 0..MAX_NESTING {
            v = V::Arr(9, vec![v]);
        }
        refuses(&one(b"k", v.clone()), "nested more than 8 deep");
        let V::Arr(_, inner) = v else { unreachable!() };
        assert_eq!(parse(&one(b"k", inner[0].clone())).unwrap().metadata["k"], GgufValue::Nested(1));
        // general.alignment: a u32 power of two.
        for (v, what) in [
            (V::U32(0), "alignment 0 is not a power of two"),
            (V::U32(48), "alignment 48 is not a power of two"),
            (V::U64(32), "general.alignment is a u64, not a u32"),
            (V::s("32"), "general.alignment is a string"),
        ] {
            refuses(&small().kv("general.alignment", v).build(), what);
        }
    }

    #[test]
    fn decoded_arrays_are_capped() {
        // 12 MiB of u8 would be 192 MiB as i128: refused before allocating.
        let mut f = File::new();
        f.kvs.push((b"k".to_vec(), V::Arr(0, vec![])));
        let mut b = f.build();
        let at = b.len() - 8;
        b[at..].copy_from_slice(&(12u64 << 20).to_le_bytes());
        b.resize(b.len() + (12 << 20), 0);
        refuses(&b, "more than 128 MiB of memory decoded");
    }

    #[test]
    fn refuses_bad_tensors() {
        let with = |edit: &dyn Fn(&mut File)| {
            let mut f = small();
            edit(&mut f);
            f.build()
        };
        refuses(&with(&|f| f.tensors[1].name = b"token_embd.weight".to_vec()), "\"token_embd.weight\" appears twice");
        refuses(&with(&|f| f.tensors[1].name = b"bad\xff".to_vec()), "tensor info 1: a 4-byte string is not UTF-8");
        refuses(&with(&|f| f.tensors[1].name = vec![b'x'; 64]), "is 64 bytes, llama.cpp's limit is 63");
        assert!(parse(&with(&|f| f.tensors[1].name = vec![b'x'; 63])).is_ok());
        refuses(&with(&|f| f.tensors[1].dims = vec![]), "tensor \"output_norm.weight\": 0 dimensions");
        refuses(&with(&|f| f.tensors[1].dims = vec![64, 1, 1, 1, 1]), "5 dimensions");
        refuses(&with(&|f| f.tensors[1].dims = vec![64, 0]), "include a zero");
        refuses(&with(&|f| f.tensors[1].dims = vec![1 << 32, 1 << 32]), "overflow a 64-bit element count");
        refuses(&with(&|f| f.tensors[0].dims = vec![33, 3]), "Q8_0 rows of 33 values are not whole blocks of 32");
        refuses(&with(&|f| f.tensors[1].dims = vec![1 << 62]), "overflows a 64-bit byte count");
        refuses(&with(&|f| f.tensors[1].dims = vec![1 << 40]), "runs past the end of the");
        for id in [4u32, 5, 31, 36, 38, 43, 1000, u32::MAX] {
            refuses(
                &with(&|f| f.tensors[2].ty = id),
                &format!("tensor \"blk.0.attn_q.weight\": unknown ggml type id {id}"),
            );
        }
        refuses(&with(&|f| f.tensors[1].offset += 16), "offset 240 is not a multiple of the alignment 32");
        refuses(&with(&|f| f.tensors[1].offset -= 32), "overlap");
        refuses(&with(&|f| f.tensors[2].offset = 0), "overlap");
        refuses(&with(&|f| f.tensors[2].offset += 32), "runs past the end of the");
        refuses(&with(&|f| f.tensors[2].offset = u64::MAX - 31), "overflow");
        // The data section's padding is there too: it must fit the file.
        let mut f = small();
        f.data = 0;
        f.tensors.truncate(0);
        f.tensors.push(T { name: b"t".to_vec(), dims: vec![1], ty: 24, offset: 0 });
        let b = f.build();
        refuses(&b, "runs past the end of the");
    }

    /// Reads the GGUF file named by GGUF_CROSSCHECK (by prefixes, as the browser would) and
    /// prints its header as one JSON line for scripts/gguf-crosscheck.py to compare with gguf-py.
    #[test]
    #[ignore]
    fn crosscheck_dump() {
        use serde_json::{json, Value};
        let Ok(path) = std::env::var("GGUF_CROSSCHECK") else { return };
        let bytes = std::fs::read(&path).unwrap();
        let len = bytes.len() as u64;
        let (mut have, mut trips) = (64, 0);
        let h = loop {
            match parse_header(&bytes[..have.min(bytes.len())], len, &path).unwrap() {
                Parsed::Header(h) => break h,
                Parsed::NeedMore(n) => (have, trips) = (n as usize, trips + 1),
            }
        };
        let int = |x: &i128| i64::try_from(*x).map(Value::from).unwrap_or_else(|_| Value::from(*x as u64));
        let metadata: serde_json::Map<String, Value> = h
            .metadata
            .iter()
            .map(|(k, v)| {
                let (ty, value) = match v {
                    GgufValue::String(s) => ("string", json!(s)),
                    GgufValue::Strings(v) => ("strings", json!(v)),
                    GgufValue::Ints(v) => ("ints", Value::Array(v.iter().map(int).collect())),
                    GgufValue::Floats(v) => ("floats", json!(v)),
                    GgufValue::Bools(v) => ("bools", json!(v)),
                    GgufValue::Nested(n) => ("nested", json!(n)),
                    GgufValue::Bool(b) => ("bool", json!(b)),
                    GgufValue::F32(x) => ("f32", json!(x)),
                    GgufValue::F64(x) => ("f64", json!(x)),
                    GgufValue::I64(x) => ("i64", json!(x)),
                    GgufValue::U64(x) => ("u64", json!(x)),
                    other => (type_name(other), json!(other.as_f64().map(|x| x as i64))),
                };
                (k.clone(), json!({"type": ty, "value": value}))
            })
            .collect();
        let tensors: Vec<Value> = h
            .tensors
            .iter()
            .map(
                |t| json!({"name": t.name, "dims": t.dims, "type": t.ggml_type.name(), "start": t.start, "end": t.end}),
            )
            .collect();
        let out = json!({
            "version": h.version, "alignment": h.alignment, "data_offset": h.data_offset,
            "round_trips": trips, "tensors": tensors, "metadata": metadata,
        });
        println!("CROSSCHECK_JSON {out}");
    }
}
