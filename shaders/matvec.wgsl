// y = W x (+ bias) (+= y) for a few tokens: one thread per (token, output row) of one
// row-chunk of W. Used for decode, where each weight is read once.
#include "common/grid.wgsl"

#include "common/linear.wgsl"

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
    store(t, r, row_dot(r, (p.x_row0 + t) * p.cols));
}
