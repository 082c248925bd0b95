// The interface shared by the linear-layer kernels (matvec.wgsl, matmul.wgsl): parameters,
// bindings, the weight reader and the output epilogue (bias, residual accumulate).

struct Params {
    n_tokens: u32,
    cols: u32,      // input width
    rows: u32,      // rows in this chunk of W
    stride: u32,    // value words per W row
    out_cols: u32,  // width of an output row (all chunks)
    row0: u32,      // output column of this chunk's first row
    x_row0: u32,    // first input row to read
    scales: u32,    // word offset of the scales (quantized formats)
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef VEC4_IO
// 16-byte views (cols % 8 == 0): x in vec4s, W in quads of words.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;    // [.., cols / 4]
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;    // [rows, stride / 4] values, then scales
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [.., cols]
@group(0) @binding(2) var<storage, read> w: array<u32>;          // [rows, stride] values, then scales
#endif
#ifdef BIAS
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // [out_cols]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#else
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#endif

#include "common/weights.wgsl"

// out[t, row0 + r] (+)= acc (+ bias).
fn store(t: u32, r: u32, acc_in: f32) {
    var acc = acc_in;
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
