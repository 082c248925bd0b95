// y = W x (+ bias) (+= y) for a few tokens: one thread per (token, output row) of one
// row-chunk of W. Used for decode, where each weight is read once.
#include "common/grid.wgsl"

struct Params {
    n_tokens: u32,
    cols: u32,      // input width
    rows: u32,      // rows in this chunk of W
    stride: u32,    // words per W row
    out_cols: u32,  // width of an output row (all chunks)
    row0: u32,      // output column of this chunk's first row
    x_row0: u32,    // first input row to read
    scales: u32,    // word offset of the scales (quantized formats)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [.., cols]
@group(0) @binding(2) var<storage, read> w: array<u32>;          // [rows, stride] values, then scales
#ifdef BIAS
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // [out_cols]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#else
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#endif

#include "common/weights.wgsl"

// w[r, :] · x[xb ..], one format-specific loop each.
fn row_dot(r: u32, xb: u32) -> f32 {
    var acc = 0.0;
#ifdef W_Q8
    for (var g = 0u; g < p.cols / 32u; g++) {
        var s = 0.0;
        for (var j = 0u; j < 8u; j++) {
            let k = g * 32u + 4u * j;
            let xv = vec4<f32>(x[xb + k], x[xb + k + 1u], x[xb + k + 2u], x[xb + k + 3u]);
            s += dot(w_word(r, g * 8u + j), xv);
        }
        acc += s * w_scale(r, g);
    }
#else
#ifdef W_Q4
    for (var g = 0u; g < p.cols / 32u; g++) {
        var s = 0.0;
        for (var j = 0u; j < 4u; j++) {
            let word = w[r * p.stride + g * 4u + j];
            let k = xb + g * 32u + 8u * j;
            let lo = vec4<f32>(f32(word & 15u), f32((word >> 4u) & 15u), f32((word >> 8u) & 15u), f32((word >> 12u) & 15u)) - 8.0;
            let hi = vec4<f32>(f32((word >> 16u) & 15u), f32((word >> 20u) & 15u), f32((word >> 24u) & 15u), f32(word >> 28u)) - 8.0;
            s += dot(lo, vec4<f32>(x[k], x[k + 1u], x[k + 2u], x[k + 3u]));
            s += dot(hi, vec4<f32>(x[k + 4u], x[k + 5u], x[k + 6u], x[k + 7u]));
        }
        acc += s * w_scale(r, g);
    }
#else
    let wb = r * p.stride;
    let pairs = p.cols / 2u;
    for (var k = 0u; k < pairs; k++) {
        let f = unpack2x16float(w[wb + k]);
        acc += f.x * x[xb + 2u * k] + f.y * x[xb + 2u * k + 1u];
    }
    if ((p.cols & 1u) == 1u) {
        acc += unpack2x16float(w[wb + pairs]).x * x[xb + p.cols - 1u];
    }
#endif
#endif
    return acc;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = group_index(wg, nwg) * WG + li;
    if (i >= p.n_tokens * p.rows) {
        return;
    }
    let t = i / p.rows;
    let r = i % p.rows;
    var acc = row_dot(r, (p.x_row0 + t) * p.cols);
#ifdef BIAS
    acc += bias[p.row0 + r];
#endif
    let o = t * p.out_cols + p.row0 + r;
#ifdef ACCUMULATE
    out[o] = out[o] + acc;
#else
    out[o] = acc;
#endif
}
