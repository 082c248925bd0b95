// y = W x (+ bias) (+= y) for a few tokens: one thread per (token, output row) of one
// row-chunk of W. Used for decode, where each weight is read once.
#include "common/grid.wgsl"

#include "common/linear.wgsl"

// w[r, :] · x[xb ..], one format-specific loop each.
fn row_dot(r: u32, xb: u32) -> f32 {
    var acc = 0.0;
#ifdef W_QUANT
    for (var g = 0u; g < p.cols / 32u; g++) {
        acc += group_dot(r, g, xb + g * 32u);
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
    store(t, r, row_dot(r, (p.x_row0 + t) * p.cols));
}
