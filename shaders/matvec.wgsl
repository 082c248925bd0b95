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
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [.., cols]
@group(0) @binding(2) var<storage, read> w: array<u32>;          // [rows, stride] f16 pairs
#ifdef BIAS
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // [out_cols]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#else
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#endif

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = group_index(wg, nwg) * WG + li;
    if (i >= p.n_tokens * p.rows) {
        return;
    }
    let t = i / p.rows;
    let r = i % p.rows;
    let xb = (p.x_row0 + t) * p.cols;
    let wb = r * p.stride;
    let pairs = p.cols / 2u;
    var acc = 0.0;
    for (var k = 0u; k < pairs; k++) {
        let f = unpack2x16float(w[wb + k]);
        acc += f.x * x[xb + 2u * k] + f.y * x[xb + 2u * k + 1u];
    }
    if ((p.cols & 1u) == 1u) {
        acc += unpack2x16float(w[wb + pairs]).x * x[xb + p.cols - 1u];
    }
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
