// The one weight decoder: reading a weight matrix chunk `w` in its format (W_Q8, W_Q4, or
// f16 pairs by default), through either view of it (array<u32>, or array<vec4<u32>> with
// VEC4_IO). Needs `p.stride` (value words per row) and, for quantized formats, `p.scales` (word
// offset of the chunk's f16 scales, one per group of 32 along a row) and `p.cols`.
// Layouts (src/weights/quant.rs): q4 holds eight 4-bit q per word, value k of a row in bits
// 4 (k % 8) of word k / 8, decoded (q - 8) * scale; q8 four int8 per word, byte k % 4 of word
// k / 4, decoded q * scale.
#include "common/packing.wgsl"

// Word i of the chunk.
fn w_u32(i: u32) -> u32 {
#ifdef VEC4_IO
    return w[i / 4u][i % 4u];
#else
    return w[i];
#endif
}

#ifdef W_QUANT
// Scale of group g (32 weights) of row r.
fn w_scale(r: u32, g: u32) -> f32 {
    let i = r * (p.cols / 32u) + g;
    return unpack2x16float(w_u32(p.scales + i / 2u))[i & 1u];
}
#endif

// q4: values 0..3 and 4..7 of a word, unsigned 0..15 (subtract 8 for the signed value).
fn q4_lo(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
}
fn q4_hi(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
}

#ifdef W_GGML
// GGUF block formats (W_GGML with one of W_Q4_1, W_Q5_0, W_Q5_1, W_Q4_K, W_Q5_K, W_Q6_K;
// W_KQ also set for Q4_K and Q5_K, which share their scales),
// stored as the file stores them: rows of blocks, `p.stride` bytes a row (not always whole
// words: Q6_K's 210-byte blocks, Q5_0's 22), decoded as ggml does (src/weights/ggml.rs).
#ifdef W_Q4_K
const QK: u32 = 256u;
const BLOCK_BYTES: u32 = 144u;
#endif
#ifdef W_Q5_K
const QK: u32 = 256u;
const BLOCK_BYTES: u32 = 176u;
#endif
#ifdef W_Q6_K
const QK: u32 = 256u;
const BLOCK_BYTES: u32 = 210u;
#endif
#ifdef W_Q4_1
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 20u;
#endif
#ifdef W_Q5_0
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 22u;
#endif
#ifdef W_Q5_1
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 24u;
#endif

// The f16 at byte i of the chunk (i even: it never straddles a word).
fn w_half(i: u32) -> f32 {
    return unpack2x16float(w_u32(i / 4u))[(i / 2u) & 1u];
}
// Bytes i .. i + 4 of the chunk, little-endian, at any alignment.
fn w_bytes4(i: u32) -> u32 {
    let s = (i % 4u) * 8u;
    let lo = w_u32(i / 4u);
    if (s == 0u) {
        return lo;
    }
    return (lo >> s) | (w_u32(i / 4u + 1u) << (32u - s));
}
// Byte i of the chunk.
fn w_byte(i: u32) -> u32 {
    return (w_u32(i / 4u) >> ((i % 4u) * 8u)) & 255u;
}
// Byte j (0..8) of the pair of words (a, b).
fn byte8(a: u32, b: u32, j: u32) -> u32 {
    return (select(a, b, j >= 4u) >> ((j % 4u) * 8u)) & 255u;
}

// Values 8 k8 .. 8 k8 + 8 of row r, as two vec4s (every 8 values of a row lie in one
// sub-block, so they share a scale).
fn ggml8(r: u32, k8: u32) -> array<vec4<f32>, 2> {
    let k = 8u * k8;
    let blk = r * p.stride + (k / QK) * BLOCK_BYTES; // the block's first byte
    let j = k % QK; // the first value's index in the block
    var q: array<f32, 8>;
    var d: f32;
    var m: f32;
#ifdef W_Q6_K
    // 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales, f16 d.
    let n = j / 128u;
    let quarter = (j % 128u) / 32u;
    let l0 = j % 32u;
    let lo_at = blk + 64u * n + l0 + 32u * (quarter & 1u);
    let ql0 = w_bytes4(lo_at);
    let ql1 = w_bytes4(lo_at + 4u);
    let qh0 = w_bytes4(blk + 128u + 32u * n + l0);
    let qh1 = w_bytes4(blk + 132u + 32u * n + l0);
    let sc = bitcast<i32>(w_byte(blk + 192u + 8u * n + l0 / 16u + 2u * quarter) << 24u) >> 24u;
    d = w_half(blk + 208u) * f32(sc);
    m = -32.0 * d;
    for (var i = 0u; i < 8u; i++) {
        let lo = (byte8(ql0, ql1, i) >> (4u * (quarter / 2u))) & 15u;
        let hi = (byte8(qh0, qh1, i) >> (2u * quarter)) & 3u;
        q[i] = f32(lo | (hi << 4u));
    }
#endif
#ifdef W_KQ
    // f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, (Q5_K: 32 bytes qh,) 128 bytes qs.
    let c = j / 64u;
    let hi_half = (j % 64u) / 32u;
    let l0 = j % 32u;
    let sb = 2u * c + hi_half; // sub-block of 32
    // The sub-block's 6-bit scale and min (ggml's get_scale_min_k4): scale byte j is byte
    // 4 + j of the block; two or three bytes are read, never the whole 12.
    var sc: u32;
    var mn: u32;
    if (sb < 4u) {
        sc = w_byte(blk + 4u + sb) & 63u;
        mn = w_byte(blk + 8u + sb) & 63u;
    } else {
        let hi = w_byte(blk + 8u + sb); // scale byte sb + 4
        sc = (hi & 15u) | ((w_byte(blk + sb) >> 6u) << 4u); // scale byte sb - 4
        mn = (hi >> 4u) | ((w_byte(blk + 4u + sb) >> 6u) << 4u); // scale byte sb
    }
    d = w_half(blk) * f32(sc);
    m = -w_half(blk + 2u) * f32(mn);
#ifdef W_Q5_K
    let qs_at = blk + 48u + 32u * c + l0;
    let qh0 = w_bytes4(blk + 16u + l0);
    let qh1 = w_bytes4(blk + 20u + l0);
#else
    let qs_at = blk + 16u + 32u * c + l0;
#endif
    let q0 = w_bytes4(qs_at);
    let q1 = w_bytes4(qs_at + 4u);
    for (var i = 0u; i < 8u; i++) {
        var v = (byte8(q0, q1, i) >> (4u * hi_half)) & 15u;
#ifdef W_Q5_K
        v |= ((byte8(qh0, qh1, i) >> sb) & 1u) << 4u;
#endif
        q[i] = f32(v);
    }
#endif
#ifndef W_KQ
#ifndef W_Q6_K
    // Blocks of 32: f16 d, (Q4_1/Q5_1: f16 m,) (Q5: u32 qh,) 16 bytes qs: value v < 16 in the
    // low nibble of byte v, value v + 16 in its high nibble; Q5's fifth bit of value v is bit
    // v of qh.
    d = w_half(blk);
#ifdef W_Q4_1
    m = w_half(blk + 2u);
    let qs_at = blk + 4u;
#endif
#ifdef W_Q5_0
    m = -16.0 * d;
    let qh = w_bytes4(blk + 2u);
    let qs_at = blk + 6u;
#endif
#ifdef W_Q5_1
    m = w_half(blk + 2u);
    let qh = w_bytes4(blk + 4u);
    let qs_at = blk + 8u;
#endif
    let q0 = w_bytes4(qs_at + j % 16u);
    let q1 = w_bytes4(qs_at + j % 16u + 4u);
    for (var i = 0u; i < 8u; i++) {
        var v = (byte8(q0, q1, i) >> (4u * (j / 16u))) & 15u;
#ifndef W_Q4_1
        v |= ((qh >> (j + i)) & 1u) << 4u;
#endif
        q[i] = f32(v);
    }
#endif
#endif
    return array<vec4<f32>, 2>(vec4<f32>(q[0], q[1], q[2], q[3]) * d + m, vec4<f32>(q[4], q[5], q[6], q[7]) * d + m);
}
#endif

// Element k of row r, scaled.
fn w_at(r: u32, k: u32) -> f32 {
#ifdef W_GGML
    var v = ggml8(r, k / 8u);
    return v[(k % 8u) / 4u][k % 4u];
#else
#ifdef W_Q8
    return q8_quad(w_u32(r * p.stride + k / 4u))[k & 3u] * w_scale(r, k / 32u);
#else
#ifdef W_Q4
    let q = extractBits(w_u32(r * p.stride + k / 8u), (k & 7u) * 4u, 4u);
    return (f32(q) - 8.0) * w_scale(r, k / 32u);
#else
    return half_of(w_u32(r * p.stride + k / 2u), k);
#endif
#endif
#endif
}
