// Reading one weight matrix chunk `w` in its format (W_Q8, W_Q4, or f16 by default).
// Needs `p.stride` (value words per row) and, for quantized formats, `p.scales` (word offset
// of the chunk's f16 scales, one per group of 32 along a row) and `p.cols`.
#include "common/f16.wgsl"

#ifdef W_Q8
// Scale of group g of row r.
fn w_scale(r: u32, g: u32) -> f32 {
    let i = r * (p.cols / 32u) + g;
    return unpack2x16float(w[p.scales + i / 2u])[i & 1u];
}
// Element k of row r.
fn w_at(r: u32, k: u32) -> f32 {
    let q = extractBits(i32(w[r * p.stride + k / 4u]), (k & 3u) * 8u, 8u);
    return f32(q) * w_scale(r, k / 32u);
}
// The four values of word j of row r (unscaled).
fn w_word(r: u32, j: u32) -> vec4<f32> {
    let v = i32(w[r * p.stride + j]);
    return vec4<f32>(f32(extractBits(v, 0u, 8u)), f32(extractBits(v, 8u, 8u)),
                     f32(extractBits(v, 16u, 8u)), f32(extractBits(v, 24u, 8u)));
}
#else
#ifdef W_Q4
fn w_scale(r: u32, g: u32) -> f32 {
    let i = r * (p.cols / 32u) + g;
    return unpack2x16float(w[p.scales + i / 2u])[i & 1u];
}
fn w_at(r: u32, k: u32) -> f32 {
    let q = extractBits(w[r * p.stride + k / 8u], (k & 7u) * 4u, 4u);
    return (f32(q) - 8.0) * w_scale(r, k / 32u);
}
#else
fn w_at(r: u32, k: u32) -> f32 {
    return half_of(w[r * p.stride + k / 2u], k);
}
#endif
#endif
