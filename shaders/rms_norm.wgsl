// RMSNorm, one workgroup per row: out[r, :] = x[in_row0 + r, :] * rsqrt(mean(x^2) + eps) * w.
// With VEC4 (cols % 4 == 0) in 16-byte loads: on a GPU a row is a single round of loads for
// the whole workgroup, rather than a chain of dependent ones.
#include "common/grid.wgsl"
#include "common/reduce.wgsl"

struct Params {
    rows: u32,
    cols: u32,
    in_row0: u32,  // first input row (the final norm reads only the last token)
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef VEC4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;          // [.., cols / 4]
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;          // [cols / 4]
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;  // [rows, cols / 4]
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [.., cols]
@group(0) @binding(2) var<storage, read> w: array<f32>;          // [cols]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [rows, cols]
#endif

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row = group_index(wg, nwg);
    if (row >= p.rows) {
        return;
    }
#ifdef VEC4
    let n = p.cols / 4u;
#else
    let n = p.cols;
#endif
    let base = (p.in_row0 + row) * n;
    var s = 0.0;
    for (var c = li; c < n; c += WG) {
        let v = x[base + c];
#ifdef VEC4
        s += dot(v, v);
#else
        s += v * v;
#endif
    }
    let scale = inverseSqrt(reduce_sum(li, s) / f32(p.cols) + p.eps);
    for (var c = li; c < n; c += WG) {
        out[row * n + c] = x[base + c] * scale * w[c];
    }
}
