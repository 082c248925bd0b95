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

// Element k of row r, scaled.
fn w_at(r: u32, k: u32) -> f32 {
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
}
