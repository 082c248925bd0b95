// RMSNorm, one workgroup per row: out[r, :] = x[in_row0 + r, :] * rsqrt(mean(x^2) + eps) * w.
#include "common/grid.wgsl"
#include "common/reduce.wgsl"

struct Params {
    rows: u32,
    cols: u32,
    in_row0: u32,  // first input row (the final norm reads only the last token)
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [.., cols]
@group(0) @binding(2) var<storage, read> w: array<f32>;          // [cols]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [rows, cols]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row = group_index(wg, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = (p.in_row0 + row) * p.cols;
    var s = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        let v = x[base + c];
        s += v * v;
    }
    let scale = inverseSqrt(reduce_sum(li, s) / f32(p.cols) + p.eps);
    for (var c = li; c < p.cols; c += WG) {
        out[row * p.cols + c] = x[base + c] * scale * w[c];
    }
}
