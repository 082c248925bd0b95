//! Weight formats on the GPU and their encoders (CPU, one block of rows at a time).
//!
//! - `f16`: two values per u32 word; rows padded to an even count.
//! - `q8`: groups of 32 along a row, an f16 scale per group, values `round(x / scale)` in
//!   -127..=127 (`scale = max|x| / 127`): 8.5 bits per weight.
//! - `q4`: groups of 32, an f16 scale per group, values `q - 8` with q in 0..=15 (symmetric,
//!   the ggml Q4_0 layout): 4.5 bits per weight, decoded as `(q - 8) * scale`. The scale is
//!   searched per group (see [`q4_scale`]): starting from `m / -8` (`m` the value of largest
//!   magnitude), ten candidate scales around it are each quantized and refitted by least
//!   squares, and the one with the smallest squared error wins. Chosen over scale+offset
//!   (5 bits) so a 4K-context Qwen-1.8B can fit 1.6 GB. Measured in the README (11% less
//!   squared error than `m / -8` on Gaussian groups).
//!
//! Quantized matrices store every row's quantized words first, then every row's scales
//! (f16 pairs), in each row-chunk buffer.

use super::ggml::GgmlType;
use crate::error::{Error, Result};
use half::f16;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F16,
    Q8,
    Q4,
    /// A GGUF file's own block type, uploaded byte for byte and decoded by the kernels
    /// (`common/weights.wgsl`, `W_GGML`): Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K (see
    /// [`WeightFormat::from_ggml`]; Q8_0 and Q4_0 map onto `Q8` and `Q4`). Rows are packed
    /// byte-wise: a matrix's `stride` is then its row length in bytes, not words.
    Ggml(GgmlType),
}

pub const GROUP: usize = 32;

impl WeightFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f16" => Ok(WeightFormat::F16),
            "q8" => Ok(WeightFormat::Q8),
            "q4" => Ok(WeightFormat::Q4),
            _ => Err(Error::Request(format!("unknown weight format {s:?} (f16, q8 or q4)"))),
        }
    }

    /// A requested format: `auto` (or empty) means "the checkpoint's own" (see
    /// [`resolve_format`]), anything else must be a format.
    pub fn parse_request(s: &str) -> Result<Option<Self>> {
        match s {
            "" | "auto" => Ok(None),
            _ => Self::parse(s)
                .map(Some)
                .map_err(|_| Error::Request(format!("unknown weight format {s:?} (auto, f16, q8 or q4)"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F16 => "f16",
            WeightFormat::Q8 => "q8",
            WeightFormat::Q4 => "q4",
            WeightFormat::Ggml(t) => match t {
                GgmlType::Q4_1 => "q4_1",
                GgmlType::Q5_0 => "q5_0",
                GgmlType::Q5_1 => "q5_1",
                GgmlType::Q4K => "q4_k",
                GgmlType::Q5K => "q5_k",
                GgmlType::Q6K => "q6_k",
                _ => "ggml",
            },
        }
    }

    /// The format a GGUF tensor of type `t` is kept in on the GPU, losslessly: Q8_0 and Q4_0
    /// as our q8/q4 (the same values and scales, repacked), the block types the kernels decode
    /// as they are, and float types as f16 (None: a type we cannot load).
    pub fn from_ggml(t: GgmlType) -> Option<Self> {
        match t {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => Some(WeightFormat::F16),
            GgmlType::Q8_0 => Some(WeightFormat::Q8),
            GgmlType::Q4_0 => Some(WeightFormat::Q4),
            GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
                Some(WeightFormat::Ggml(t))
            }
            _ => None,
        }
    }

    /// A GGUF block format decoded by the kernels as stored.
    pub fn ggml(self) -> Option<GgmlType> {
        match self {
            WeightFormat::Ggml(t) => Some(t),
            _ => None,
        }
    }

    /// The format a `[_, cols]` matrix really gets: quantized rows need whole groups and an
    /// even number of them (scales are written as f16 pairs); others stay f16.
    pub fn for_cols(self, cols: usize) -> Self {
        if let WeightFormat::Ggml(t) = self {
            return if cols.is_multiple_of(t.block().0) { self } else { WeightFormat::F16 };
        }
        if self != WeightFormat::F16 && !cols.is_multiple_of(2 * GROUP) {
            WeightFormat::F16
        } else {
            self
        }
    }

    /// u32 words of values per row (the kernels' row stride); for [`WeightFormat::Ggml`], whose
    /// rows need not be whole words, bytes per row.
    pub fn words_per_row(self, cols: usize) -> usize {
        match self {
            WeightFormat::F16 => cols.div_ceil(2),
            WeightFormat::Q8 => cols / 4,
            WeightFormat::Q4 => cols / 8,
            WeightFormat::Ggml(t) => cols / t.block().0 * t.block().1,
        }
    }

    /// f16 scales per row.
    pub fn scales_per_row(self, cols: usize) -> usize {
        match self {
            WeightFormat::F16 | WeightFormat::Ggml(_) => 0,
            _ => cols / GROUP,
        }
    }

    /// GPU bytes per row, scales included.
    pub fn row_bytes(self, cols: usize) -> u64 {
        match self {
            WeightFormat::Ggml(_) => self.words_per_row(cols) as u64,
            _ => (self.words_per_row(cols) * 4 + self.scales_per_row(cols) * 2) as u64,
        }
    }
}

/// Metadata keys of a pre-quantized checkpoint (`qwen-webgpu quantize`), in every shard's
/// safetensors `__metadata__`.
pub const META_FORMAT: &str = "qwen_webgpu.format";
pub const META_GROUP: &str = "qwen_webgpu.group";
pub const META_VERSION: &str = "qwen_webgpu.version";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// Suffixes of a pre-quantized matrix `NAME`: `NAME.qweight` (U32 `[rows, words_per_row]`)
/// and `NAME.scales` (F16 `[rows, cols / GROUP]`).
pub const QWEIGHT_SUFFIX: &str = ".qweight";
pub const SCALES_SUFFIX: &str = ".scales";

/// The `__metadata__` a pre-quantized checkpoint in `format` carries.
pub fn checkpoint_metadata(format: WeightFormat) -> BTreeMap<String, String> {
    [(META_FORMAT, format.name()), (META_GROUP, "32"), (META_VERSION, FORMAT_VERSION)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The format a checkpoint's metadata declares: `None` for a plain (bf16/f16/f32) one.
/// An unknown format, group size or version is an error, never a guess.
pub fn stored_format(metadata: &BTreeMap<String, String>) -> Result<Option<WeightFormat>> {
    let Some(f) = metadata.get(META_FORMAT) else {
        if let Some(k) = metadata.keys().find(|k| k.starts_with("qwen_webgpu.")) {
            return Err(Error::Weights(format!("safetensors metadata has {k} but no {META_FORMAT}")));
        }
        return Ok(None);
    };
    let format = match f.as_str() {
        "q4" => WeightFormat::Q4,
        "q8" => WeightFormat::Q8,
        _ => {
            return Err(Error::Weights(format!(
                "safetensors metadata says {META_FORMAT} = {f:?}: not a pre-quantized format this build reads (q4, q8)"
            )))
        }
    };
    match metadata.get(META_VERSION).map(String::as_str) {
        Some(FORMAT_VERSION) => {}
        v => {
            return Err(Error::Weights(format!(
                "safetensors metadata says {META_VERSION} = {v:?}: this build reads version {FORMAT_VERSION:?}"
            )))
        }
    }
    let group = GROUP.to_string();
    match metadata.get(META_GROUP) {
        Some(g) if *g == group => {}
        g => {
            return Err(Error::Weights(format!(
                "safetensors metadata says {META_GROUP} = {g:?}: this build reads groups of {GROUP}"
            )))
        }
    }
    Ok(Some(format))
}

/// The format to load a checkpoint in: the requested one for a plain checkpoint (f16 if none
/// was asked for); a pre-quantized checkpoint's own format, which a request must not contradict.
pub fn resolve_format(requested: Option<WeightFormat>, stored: Option<WeightFormat>) -> Result<WeightFormat> {
    match (requested, stored) {
        (r, None) => Ok(r.unwrap_or(WeightFormat::F16)),
        (None, Some(s)) => Ok(s),
        (Some(r), Some(s)) if r == s => Ok(s),
        (Some(r), Some(s)) => Err(Error::Weights(format!(
            "this checkpoint is pre-quantized to {s}; it loads only as {s}, not {r} (ask for {s}, or auto, or quantize the original checkpoint to {r})",
            s = s.name(),
            r = r.name()
        ))),
    }
}

/// `x` as f16 bits, refusing values f16 cannot hold (what the GPU's f16 weights get).
pub fn f16_bits(x: f32, what: &str) -> Result<u16> {
    f16_checked(x, what)
}

fn f16_checked(x: f32, what: &str) -> Result<u16> {
    if !x.is_finite() {
        return Err(Error::Weights(format!("{what}: non-finite value {x}")));
    }
    let h = f16::from_f32(x);
    if h.is_infinite() {
        return Err(Error::Weights(format!("{what}: value {x} is outside the f16 range (|x| > 65504)")));
    }
    Ok(h.to_bits())
}

/// Round to nearest (ties to even) for |v| < 2^22, without a libm call (the search's hot loop).
#[inline(always)]
fn round_fast(v: f32) -> f32 {
    (v + 12582912.0) - 12582912.0
}

/// Candidate levels the largest-magnitude value `m` is mapped to in the q4 scale search
/// (`m / t` is the first guess of each candidate's scale; -8 is plain Q4_0).
const Q4_SEARCH: [f32; 10] = [-9.0, -8.8, -8.6, -8.4, -8.2, -8.0, -7.8, -7.6, -7.4, -7.2];

/// The q4 scale (as f16) of one group that minimises the squared error of what the GPU decodes,
/// `(q - 8) * scale` with `q = clamp(round(x / scale) + 8, 0, 15)`:
/// start from plain Q4_0's `m / -8`; for each candidate `t` quantize with `m / t`, refit the
/// scale by least squares (`sum(x q) / sum(q q)`), round it to f16, and keep the scale whose
/// squared error is smallest, among those whose largest error stays within plain Q4_0's bound
/// (one step, `|m| / 8`). Never worse than `m / -8`. None for non-finite input.
fn q4_scale(group: &[f32], what: &str) -> Result<Option<f16>> {
    let m = group.iter().fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
    if !m.is_finite() || group.iter().any(|x| !x.is_finite()) {
        return Ok(None);
    }
    let d0 = f16::from_bits(f16_checked(m / -8.0, what)?);
    if m == 0.0 {
        return Ok(Some(d0));
    }
    // (squared error, largest error) of what the GPU decodes with scale `d`.
    let eval = |d: f32| -> (f32, f32) {
        let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
        group.iter().fold((0f32, 0f32), |(sq, mx), &x| {
            let e = (x - (x * inv).round().clamp(-8.0, 7.0) * d).abs();
            (sq + e * e, mx.max(e))
        })
    };
    let sxx: f32 = group.iter().map(|x| x * x).sum();
    let (e0, max0) = eval(d0.to_f32());
    // Keep plain Q4_0's worst case: no value off by more than one step of `m / -8`.
    let limit = max0.max(m.abs() / 8.0);
    let mut best = (e0, d0);
    for t in Q4_SEARCH {
        let iscale = t / m;
        let (mut sxl, mut sll) = (0f32, 0f32);
        for &x in group {
            let l = round_fast(x * iscale).clamp(-8.0, 7.0);
            sxl += x * l;
            sll += l * l;
        }
        if sll == 0.0 {
            continue;
        }
        let d = f16::from_f32(sxl / sll);
        if !d.is_finite() {
            continue;
        }
        // The error of the candidate's own levels bounds the final one from above; only a
        // candidate that may win is evaluated exactly.
        let df = d.to_f32();
        if sxx - 2.0 * df * sxl + df * df * sll < best.0 {
            let (e, mx) = eval(df);
            if e < best.0 && mx <= limit {
                best = (e, d);
            }
        }
    }
    Ok(Some(best.1))
}

/// Encode whole rows (`vals.len()` a multiple of `cols`): (value words, scale halves).
/// Natively, large matrices are encoded on every core (the q4 scale search is the slow part
/// of loading a bf16 checkpoint as q4).
pub fn encode_rows(format: WeightFormat, vals: &[f32], cols: usize, what: &str) -> Result<(Vec<u32>, Vec<u16>)> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let rows = vals.len() / cols;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(rows / 64).max(1);
        if format != WeightFormat::F16 && threads > 1 {
            let per = rows.div_ceil(threads) * cols;
            let parts: Vec<Result<(Vec<u32>, Vec<u16>)>> = std::thread::scope(|s| {
                let handles: Vec<_> = vals
                    .chunks(per)
                    .enumerate()
                    .map(|(i, part)| s.spawn(move || encode_rows_here(format, part, cols, i * per / cols, what)))
                    .collect();
                handles.into_iter().map(|h| h.join().expect("an encoder thread panicked")).collect()
            });
            let (mut words, mut scales) = (Vec::new(), Vec::new());
            for part in parts {
                let (w, sc) = part?;
                words.extend_from_slice(&w);
                scales.extend_from_slice(&sc);
            }
            return Ok((words, scales));
        }
    }
    encode_rows_here(format, vals, cols, 0, what)
}

/// [`encode_rows`] on this thread; `row0` numbers the rows in errors.
fn encode_rows_here(
    format: WeightFormat,
    vals: &[f32],
    cols: usize,
    row0: usize,
    what: &str,
) -> Result<(Vec<u32>, Vec<u16>)> {
    if let WeightFormat::Ggml(t) = format {
        return Err(Error::Weights(format!("{what}: this engine does not encode into {}", t.name())));
    }
    let rows = vals.len() / cols;
    let wpr = format.words_per_row(cols);
    let mut words = vec![0u32; rows * wpr];
    let mut scales = Vec::with_capacity(rows * format.scales_per_row(cols));
    for r in 0..rows {
        let row = &vals[r * cols..(r + 1) * cols];
        let out = &mut words[r * wpr..(r + 1) * wpr];
        match format {
            WeightFormat::F16 => {
                for (c, &x) in row.iter().enumerate() {
                    out[c / 2] |= (f16_checked(x, what)? as u32) << (16 * (c % 2));
                }
            }
            WeightFormat::Q8 => {
                for (g, group) in row.chunks(GROUP).enumerate() {
                    let amax = group.iter().fold(0f32, |m, x| m.max(x.abs()));
                    // f32::max skips NaN: check for it too (a NaN used to become a 0).
                    if !amax.is_finite() || group.iter().any(|x| x.is_nan()) {
                        return Err(Error::Weights(format!("{what}: non-finite value in row {}", row0 + r)));
                    }
                    let s = f16::from_bits(f16_checked(amax / 127.0, what)?);
                    scales.push(s.to_bits());
                    let inv = if s.to_f32() > 0.0 { 1.0 / s.to_f32() } else { 0.0 };
                    for (j, &x) in group.iter().enumerate() {
                        let q = (x * inv).round().clamp(-127.0, 127.0) as i8;
                        let k = g * GROUP + j;
                        out[k / 4] |= (q as u8 as u32) << (8 * (k % 4));
                    }
                }
            }
            WeightFormat::Q4 => {
                for (g, group) in row.chunks(GROUP).enumerate() {
                    let s = q4_scale(group, what)?
                        .ok_or_else(|| Error::Weights(format!("{what}: non-finite value in row {}", row0 + r)))?;
                    scales.push(s.to_bits());
                    let inv = if s.to_f32() != 0.0 { 1.0 / s.to_f32() } else { 0.0 };
                    for (j, &x) in group.iter().enumerate() {
                        let q = ((x * inv).round() + 8.0).clamp(0.0, 15.0) as u32;
                        let k = g * GROUP + j;
                        out[k / 8] |= q << (4 * (k % 8));
                    }
                }
            }
            WeightFormat::Ggml(_) => unreachable!("refused above"),
        }
    }
    Ok((words, scales))
}

/// The values the GPU sees for encoded rows (the CPU reference for the kernels).
pub fn decode_rows(format: WeightFormat, words: &[u32], scales: &[u16], rows: usize, cols: usize) -> Vec<f32> {
    let wpr = format.words_per_row(cols);
    let spr = format.scales_per_row(cols);
    if let WeightFormat::Ggml(t) = format {
        // `words` holds the rows' bytes, `wpr` bytes a row.
        let bytes: &[u8] = bytemuck::cast_slice(words);
        return super::ggml::dequantize(t, &bytes[..rows * wpr], "decode_rows").unwrap_or_default();
    }
    let per_word = match format {
        WeightFormat::F16 => 2,
        WeightFormat::Q8 => 4,
        _ => 8,
    };
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for k in 0..cols {
            let w = words[r * wpr + k / per_word];
            let x = match format {
                WeightFormat::F16 => f16::from_bits((w >> (16 * (k % 2))) as u16).to_f32(),
                WeightFormat::Q8 => {
                    let q = (w >> (8 * (k % 4))) as u8 as i8;
                    q as f32 * f16::from_bits(scales[r * spr + k / GROUP]).to_f32()
                }
                WeightFormat::Q4 => {
                    let q = ((w >> (4 * (k % 8))) & 15) as f32 - 8.0;
                    q * f16::from_bits(scales[r * spr + k / GROUP]).to_f32()
                }
                WeightFormat::Ggml(_) => unreachable!("decoded above"),
            };
            out.push(x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_half_a_step() {
        let cols = 128;
        let vals: Vec<f32> = (0..cols * 3).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        // q8: half a step. q4: half a step, or one step for values of the other sign than the
        // group's extreme beyond 7/8 of it (levels run -8..=7).
        for (f, max_err) in [(WeightFormat::Q8, 0.5 / 127.0), (WeightFormat::Q4, 1.0 / 8.0)] {
            let (w, s) = encode_rows(f, &vals, cols, "t").unwrap();
            let back = decode_rows(f, &w, &s, 3, cols);
            for (a, b) in vals.iter().zip(&back) {
                assert!((a - b).abs() <= max_err * 1.01 + 1e-3, "{f:?}: {a} vs {b}");
            }
        }
        let (w, s) = encode_rows(WeightFormat::F16, &vals, cols, "t").unwrap();
        assert_eq!(
            decode_rows(WeightFormat::F16, &w, &s, 3, cols),
            vals.iter().map(|&x| f16::from_f32(x).to_f32()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn q4_keeps_the_extreme_value_exact() {
        let mut vals = vec![0.01f32; 64];
        vals[3] = -0.8;
        let (w, s) = encode_rows(WeightFormat::Q4, &vals, 64, "t").unwrap();
        let back = decode_rows(WeightFormat::Q4, &w, &s, 1, 64);
        assert!((back[3] + 0.8).abs() < 1e-3);
    }

    #[test]
    fn odd_widths_stay_f16() {
        assert_eq!(WeightFormat::Q4.for_cols(96), WeightFormat::F16);
        assert_eq!(WeightFormat::Q4.for_cols(5504), WeightFormat::Q4);
        assert_eq!(WeightFormat::Q8.for_cols(35), WeightFormat::F16);
    }
}
