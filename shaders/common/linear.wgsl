// The interface shared by the linear-layer kernels (matvec.wgsl, matvec_block.wgsl,
// matmul.wgsl): parameters, bindings, the weight reader, the RMSNorm prologue's scale and
// the output epilogue (bias, residual accumulate).

struct Params {
    n_tokens: u32,
    cols: u32,      // input width
    rows: u32,      // rows in this chunk of W
    stride: u32,    // value words per W row
    out_cols: u32,  // width of an output row (all chunks)
    row0: u32,      // output column of this chunk's first row
    x_row0: u32,    // first input row to read
    scales: u32,    // word offset of the scales (quantized formats)
    eps: f32,       // NORM: the RMSNorm epsilon
    up_row: u32,    // SWIGLU: row of the up projection's row 0, in this chunk
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef VEC4_IO
alias XVEC = vec4<f32>;
// 16-byte views (cols % 8 == 0): x in vec4s, W in quads of words.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;    // [.., cols / 4]
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;    // [rows, stride / 4] values, then scales
#else
alias XVEC = f32;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [.., cols]
@group(0) @binding(2) var<storage, read> w: array<u32>;          // [rows, stride] values, then scales
#endif
// Then, in this order: bias (BIAS), the RMSNorm weight (NORM), out.
#ifdef BIAS
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // [out_cols]
#ifdef NORM
@group(0) @binding(4) var<storage, read> nw: array<XVEC>;        // [cols], viewed as x is
@group(0) @binding(5) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#else
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#endif
#else
#ifdef NORM
@group(0) @binding(3) var<storage, read> nw: array<XVEC>;        // [cols], viewed as x is
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#else
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#endif
#endif

#ifdef NORM
// NORM: the input rows are RMS-normalised on the fly (the norm folded into this kernel): each
// x value is multiplied by the norm weight as it is loaded, and each output by the row's
// scale, 1 / sqrt(mean(x^2) + eps), from the sum of the row's squares.
fn norm_scale(sum_sq: f32) -> f32 {
    return inverseSqrt(sum_sq / f32(p.cols) + p.eps);
}
#endif

#include "common/weights.wgsl"

#ifdef SWIGLU
// SWIGLU: the kernel computes each output from two rows of W, gate row r and up row
// p.up_row + r (the fused gate/up projection, in one chunk), and stores silu(gate) * up.
fn swiglu(gate: f32, up: f32) -> f32 {
    return gate / (1.0 + exp(-gate)) * up;
}
#endif

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
