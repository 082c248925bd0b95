// y = W x (+ bias) (+= y): one thread per output row of one row-chunk of W, for TOKENS tokens
// at once (1 for decode; more for short prefills, where each weight is decoded once for all
// of them). A workgroup holds WG rows of one block of TOKENS tokens. The fallback kernel for
// any width, and the one for CPU adapters without subgroups (SwiftShader in browsers), which
// pay for every workgroup barrier: it has none.
#include "common/grid.wgsl"

#include "common/linear.wgsl"

// x[k .. k + 4] (k % 4 == 0 with VEC4_IO: quantized widths are whole groups of 32).
fn x4(k: u32) -> vec4<f32> {
#ifdef VEC4_IO
    return x[k / 4u];
#else
    return vec4<f32>(x[k], x[k + 1u], x[k + 2u], x[k + 3u]);
#endif
}

#ifndef MULTI
// w[r, :] · x[xb ..].
fn row_dot(r: u32, xb: u32) -> f32 {
    var acc = 0.0;
#ifdef W_QUANT
    for (var grp = 0u; grp < p.cols / 32u; grp++) {
        let xk = xb + grp * 32u;
        var s = 0.0;
#ifdef W_Q4
        for (var j = 0u; j < 4u; j++) {
            let word = w_u32(r * p.stride + grp * 4u + j);
            let k = xk + 8u * j;
            s += dot(q4_lo(word) - 8.0, x4(k));
            s += dot(q4_hi(word) - 8.0, x4(k + 4u));
        }
#else
        for (var j = 0u; j < 8u; j++) {
            let k = xk + 4u * j;
            s += dot(q8_quad(w_u32(r * p.stride + grp * 8u + j)), x4(k));
        }
#endif
        acc += s * w_scale(r, grp);
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
#endif

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row_groups = (p.rows + WG - 1u) / WG;
    let g = group_index(wg, nwg);
    let t0 = (g / row_groups) * TOKENS;
    let r = (g % row_groups) * WG + li;
    if (t0 >= p.n_tokens || r >= p.rows) {
        return;
    }
#ifdef MULTI
    let nt = min(TOKENS, p.n_tokens - t0);
    let xb = (p.x_row0 + t0) * p.cols; // token t0's first input
    var acc: array<f32, TOKENS>;
#ifdef W_QUANT
    // One group of 32 weights at a time, decoded once, then dotted with each token's x.
    for (var grp = 0u; grp < p.cols / 32u; grp++) {
        var wq: array<vec4<f32>, 8>;
#ifdef W_Q4
        for (var j = 0u; j < 4u; j++) {
            let word = w_u32(r * p.stride + grp * 4u + j);
            wq[2u * j] = q4_lo(word) - 8.0;
            wq[2u * j + 1u] = q4_hi(word) - 8.0;
        }
#else
        for (var j = 0u; j < 8u; j++) {
            wq[j] = q8_quad(w_u32(r * p.stride + grp * 8u + j));
        }
#endif
        let scale = w_scale(r, grp);
        for (var tt = 0u; tt < nt; tt++) {
            let k = xb + tt * p.cols + grp * 32u;
            var s = 0.0;
            for (var j = 0u; j < 8u; j++) {
                let kj = k + 4u * j;
                s += dot(wq[j], x4(kj));
            }
            acc[tt] += s * scale;
        }
    }
#else
    let wb = r * p.stride;
    let pairs = p.cols / 2u;
    for (var k = 0u; k < pairs; k++) {
        let f = unpack2x16float(w[wb + k]);
        for (var tt = 0u; tt < nt; tt++) {
            let xk = xb + tt * p.cols + 2u * k;
            acc[tt] += f.x * x[xk] + f.y * x[xk + 1u];
        }
    }
    if ((p.cols & 1u) == 1u) {
        let f = unpack2x16float(w[wb + pairs]).x;
        for (var tt = 0u; tt < nt; tt++) {
            acc[tt] += f * x[xb + tt * p.cols + p.cols - 1u];
        }
    }
#endif
    for (var tt = 0u; tt < nt; tt++) {
        store(t0 + tt, r, acc[tt]);
    }
#else
    // One token (decode): the same sums without the token loop, which CPU compilers keep in
    // memory rather than registers.
    store(t0, r, row_dot(r, (p.x_row0 + t0) * p.cols));
#endif
}
