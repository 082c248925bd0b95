//! ggml's tensor types (what a GGUF file stores): the id each has in a file, its block size
//! and bytes per block, and the CPU decoder of the ones we load. The layouts follow ggml's
//! `block_*` structs (little-endian, packed):
//!
//! - `Q8_0`: 32 values: f16 `d`, 32 × i8 `q`; value `q·d`.
//! - `Q4_0`: 32 values: f16 `d`, 16 bytes; value j (< 16) in the low nibble of byte j, value
//!   j + 16 in its high nibble; value `(q − 8)·d`.
//! - `Q4_1`: 32 values: f16 `d`, f16 `m`, 16 bytes as Q4_0; value `q·d + m`.
//! - `Q5_0`: 32 values: f16 `d`, u32 `qh` (bit j: the fifth bit of value j), 16 bytes as Q4_0;
//!   value `(q − 16)·d`.
//! - `Q5_1`: 32 values: f16 `d`, f16 `m`, u32 `qh`, 16 bytes; value `q·d + m`.
//! - `Q4_K`: 256 values: f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales and mins (8 sub-blocks of
//!   32), 128 bytes; values 64c .. 64c + 32 are the low nibbles of bytes 32c .. 32c + 32 (sub-block
//!   2c), the next 32 their high nibbles (sub-block 2c + 1); value `d·sc·q − dmin·m`.
//! - `Q5_K`: 256 values: `d`, `dmin`, 12 scale bytes, 32 bytes `qh`, 128 bytes `qs`; as Q4_K with a
//!   fifth bit: value 64c + l (+ 32) takes bit 2c (2c + 1) of `qh[l]`.
//! - `Q6_K`: 256 values: 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits), 16 × i8 scales
//!   (sub-blocks of 16), f16 `d`; value `d·sc·(q − 32)`.

use crate::error::{Error, Result};

/// A ggml tensor type, by its id in GGUF files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    IQ2XXS,
    IQ2XS,
    IQ3XXS,
    IQ1S,
    IQ4NL,
    IQ3S,
    IQ2S,
    IQ4XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    Q2_0,
}

impl GgmlType {
    /// The type with file id `id` (ggml's `enum ggml_type`); None for ids ggml never used or
    /// retired (4, 5: the old Q4_2/Q4_3; 31–33: the removed Q4_0_4_4 family; 36–38: the removed
    /// IQ4_NL_4_4 family) and for ids past the last one (42, Q2_0, in llama.cpp as vendored by
    /// llama-cpp-python 0.3.36).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            16 => IQ2XXS,
            17 => IQ2XS,
            18 => IQ3XXS,
            19 => IQ1S,
            20 => IQ4NL,
            21 => IQ3S,
            22 => IQ2S,
            23 => IQ4XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            40 => NVFP4,
            41 => Q1_0,
            42 => Q2_0,
            _ => return None,
        })
    }

    /// The type's name as gguf-py spells it (`GGMLQuantizationType`) and llama.cpp prints it;
    /// ggml's own `ggml_type_name` is the same in lower case ("q4_K", "bf16").
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            IQ2XXS => "IQ2_XXS",
            IQ2XS => "IQ2_XS",
            IQ3XXS => "IQ3_XXS",
            IQ1S => "IQ1_S",
            IQ4NL => "IQ4_NL",
            IQ3S => "IQ3_S",
            IQ2S => "IQ2_S",
            IQ4XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
            NVFP4 => "NVFP4",
            Q1_0 => "Q1_0",
            Q2_0 => "Q2_0",
        }
    }

    /// (values per block, bytes per block), as ggml's type traits give them.
    pub fn block(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            IQ2XXS => (256, 66),
            IQ2XS => (256, 74),
            IQ3XXS => (256, 98),
            IQ1S => (256, 50),
            IQ4NL => (32, 18),
            IQ3S => (256, 110),
            IQ2S => (256, 82),
            IQ4XS => (256, 136),
            IQ1M => (256, 56),
            TQ1_0 => (256, 54),
            TQ2_0 => (256, 66),
            MXFP4 => (32, 17),
            NVFP4 => (64, 36),
            Q1_0 => (128, 18),
            Q2_0 => (64, 18),
        }
    }

    /// Bytes of a row of `cols` values; an error unless `cols` is whole blocks.
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        let (n, b) = self.block();
        if !cols.is_multiple_of(n) {
            return Err(Error::Weights(format!("a {} row of {cols} values is not whole blocks of {n}", self.name())));
        }
        Ok(cols / n * b)
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block's 12 scale bytes
/// (ggml's `get_scale_min_k4`).
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Decode one block of `t` into `out` (its values per block).
fn decode_block(t: GgmlType, b: &[u8], out: &mut [f32]) {
    use GgmlType::*;
    match t {
        Q8_0 => {
            let d = f16_at(b, 0);
            for (j, o) in out.iter_mut().enumerate() {
                *o = b[2 + j] as i8 as f32 * d;
            }
        }
        Q4_0 | Q4_1 => {
            let d = f16_at(b, 0);
            let (m, qs) = if t == Q4_1 { (f16_at(b, 2), &b[4..20]) } else { (-8.0 * d, &b[2..18]) };
            for j in 0..16 {
                out[j] = (qs[j] & 0xF) as f32 * d + m;
                out[j + 16] = (qs[j] >> 4) as f32 * d + m;
            }
        }
        Q5_0 | Q5_1 => {
            let d = f16_at(b, 0);
            let (m, at) = if t == Q5_1 { (f16_at(b, 2), 4) } else { (-16.0 * d, 2) };
            let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let qs = &b[at + 4..at + 20];
            for j in 0..16 {
                let lo = (qs[j] & 0xF) as u32 | (((qh >> j) & 1) << 4);
                let hi = (qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
                out[j] = lo as f32 * d + m;
                out[j + 16] = hi as f32 * d + m;
            }
        }
        Q4K | Q5K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let (qh, qs) = if t == Q5K { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
            for c in 0..4 {
                for half in 0..2 {
                    let (sc, m) = scale_min_k4(2 * c + half, scales);
                    let (dl, ml) = (d * sc as f32, dmin * m as f32);
                    for l in 0..32 {
                        let byte = qs[32 * c + l];
                        let mut q = if half == 0 { byte & 0xF } else { byte >> 4 } as u32;
                        if t == Q5K {
                            q |= ((qh[l] as u32 >> (2 * c + half)) & 1) << 4;
                        }
                        out[64 * c + 32 * half + l] = dl * q as f32 - ml;
                    }
                }
            }
        }
        Q6K => {
            let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], f16_at(b, 208));
            for n in 0..2 {
                for j in 0..4 {
                    for l in 0..32 {
                        let lo = ql[64 * n + l + 32 * (j & 1)];
                        let lo = if j >= 2 { lo >> 4 } else { lo & 0xF } as i32;
                        let hi = ((qh[32 * n + l] >> (2 * j)) & 3) as i32;
                        let s = sc[8 * n + l / 16 + 2 * j] as i8 as f32;
                        out[128 * n + 32 * j + l] = d * s * ((lo | (hi << 4)) - 32) as f32;
                    }
                }
            }
        }
        F32 => out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        F16 => out[0] = f16_at(b, 0),
        BF16 => out[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        _ => unreachable!("decode_block is only called for decodable types"),
    }
}

impl GgmlType {
    /// Whether we can decode this type (on the CPU, and on the GPU directly or after a
    /// lossless repack).
    pub fn decodable(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q4K | Q5K | Q6K)
    }

    /// The error for a type we cannot load, naming the tensor.
    pub fn unsupported(self, tensor: &str) -> Error {
        Error::Weights(format!(
            "tensor {tensor} is {}, a GGUF type this engine does not load (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)",
            self.name()
        ))
    }
}

/// Decode `bytes` (whole blocks of `t`) to f32 values. `what` names the tensor in errors.
pub fn dequantize(t: GgmlType, bytes: &[u8], what: &str) -> Result<Vec<f32>> {
    if !t.decodable() {
        return Err(t.unsupported(what));
    }
    let (n, size) = t.block();
    if !bytes.len().is_multiple_of(size) {
        return Err(Error::Weights(format!("tensor {what}: {} bytes are not whole {} blocks", bytes.len(), t.name())));
    }
    let mut out = vec![0f32; bytes.len() / size * n];
    for (b, o) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(n)) {
        decode_block(t, b, o);
    }
    Ok(out)
}

/// Q8_0 rows → our q8 layout (`quant.rs`): value words then f16 scales, bit for bit the same
/// values (ggml's block is the f16 scale then the 32 int8; ours keeps them apart).
/// Returns (words, scales) as little-endian bytes.
pub fn repack_q8_0(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut words = Vec::with_capacity(bytes.len() / 34 * 32);
    let mut scales = Vec::with_capacity(bytes.len() / 34 * 2);
    for b in bytes.chunks_exact(34) {
        scales.extend_from_slice(&b[0..2]);
        words.extend_from_slice(&b[2..34]);
    }
    (words, scales)
}

/// Q4_0 rows → our q4 layout: value k of a group in bits 4 (k % 8) of word k / 8 (ggml keeps
/// value j in the low nibble of byte j and value j + 16 in its high nibble), the same f16
/// scale and the same `(q − 8)·d`. Returns (words, scales) as little-endian bytes.
pub fn repack_q4_0(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut words = Vec::with_capacity(bytes.len() / 18 * 16);
    let mut scales = Vec::with_capacity(bytes.len() / 18 * 2);
    for b in bytes.chunks_exact(18) {
        scales.extend_from_slice(&b[0..2]);
        let qs = &b[2..18];
        let q = |k: usize| if k < 16 { qs[k] & 0xF } else { qs[k - 16] >> 4 };
        for w in 0..4 {
            let mut word = 0u32;
            for i in 0..8 {
                word |= (q(8 * w + i) as u32) << (4 * i);
            }
            words.extend_from_slice(&word.to_le_bytes());
        }
    }
    (words, scales)
}
