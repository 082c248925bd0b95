// y = W x (+ bias) (+= y): one thread per output row of one row-chunk of W, for TOKENS tokens
// at once (1 for decode; more for short prefills, where each weight is decoded once for all
// of them). A workgroup holds WG rows of one block of TOKENS tokens. The fallback kernel for
// any width, and the one for CPU adapters without subgroups (SwiftShader in browsers), which
// pay for every workgroup barrier: it has none, but for NORM's one (the sums of squares of
// the block's input rows, shared by the workgroup).
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

// Inputs c .. c + 4 of the input row starting at xb, times the norm weight with NORM.
fn xin4(xb: u32, c: u32) -> vec4<f32> {
#ifdef NORM
#ifdef VEC4_IO
    return x4(xb + c) * nw[c / 4u];
#else
    return x4(xb + c) * vec4<f32>(nw[c], nw[c + 1u], nw[c + 2u], nw[c + 3u]);
#endif
#else
    return x4(xb + c);
#endif
}

#ifdef W_QUANT
// Words 4 h .. 4 h + 4 of group grp of row r (q4: h = 0, the whole group; q8: h = 0, 1),
// one 16-byte load with VEC4_IO (a group's words start on a 16-byte boundary: strides are
// whole groups).
fn group_words(r: u32, grp: u32, h: u32) -> vec4<u32> {
#ifdef W_Q4
    let i = r * p.stride + grp * 4u;
#else
    let i = r * p.stride + grp * 8u + 4u * h;
#endif
#ifdef VEC4_IO
    return w[i / 4u];
#else
    return vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
#endif
}
#endif

#ifndef VEC4_IO
// Input c of the input row starting at xb (scalar view: f16 weights).
fn xin(xb: u32, c: u32) -> f32 {
#ifdef NORM
    return x[xb + c] * nw[c];
#else
    return x[xb + c];
#endif
}
#endif

#ifdef NORM
var<workgroup> sum_sq: array<f32, TOKENS * WG>;
#endif

#ifndef MULTI
// w[r, :] · x[xb ..].
fn row_dot(r: u32, xb: u32) -> f32 {
    var acc = 0.0;
#ifdef W_GGML
    for (var k8 = 0u; k8 < p.cols / 8u; k8++) {
        let wv = ggml8(r, k8);
        acc += dot(wv[0], xin4(xb, 8u * k8)) + dot(wv[1], xin4(xb, 8u * k8 + 4u));
    }
#else
#ifdef W_QUANT
    for (var grp = 0u; grp < p.cols / 32u; grp++) {
        let c = grp * 32u;
        var s = 0.0;
#ifdef W_Q4
        let q = group_words(r, grp, 0u);
        s += dot(q4_lo(q.x) - 8.0, xin4(xb, c)) + dot(q4_hi(q.x) - 8.0, xin4(xb, c + 4u))
            + dot(q4_lo(q.y) - 8.0, xin4(xb, c + 8u)) + dot(q4_hi(q.y) - 8.0, xin4(xb, c + 12u))
            + dot(q4_lo(q.z) - 8.0, xin4(xb, c + 16u)) + dot(q4_hi(q.z) - 8.0, xin4(xb, c + 20u))
            + dot(q4_lo(q.w) - 8.0, xin4(xb, c + 24u)) + dot(q4_hi(q.w) - 8.0, xin4(xb, c + 28u));
#else
        let q0 = group_words(r, grp, 0u);
        let q1 = group_words(r, grp, 1u);
        s += dot(q8_quad(q0.x), xin4(xb, c)) + dot(q8_quad(q0.y), xin4(xb, c + 4u))
            + dot(q8_quad(q0.z), xin4(xb, c + 8u)) + dot(q8_quad(q0.w), xin4(xb, c + 12u))
            + dot(q8_quad(q1.x), xin4(xb, c + 16u)) + dot(q8_quad(q1.y), xin4(xb, c + 20u))
            + dot(q8_quad(q1.z), xin4(xb, c + 24u)) + dot(q8_quad(q1.w), xin4(xb, c + 28u));
#endif
        acc += s * w_scale(r, grp);
    }
#else
    let wb = r * p.stride;
    let pairs = p.cols / 2u;
    for (var k = 0u; k < pairs; k++) {
        let f = unpack2x16float(w[wb + k]);
        acc += f.x * xin(xb, 2u * k) + f.y * xin(xb, 2u * k + 1u);
    }
    if ((p.cols & 1u) == 1u) {
        acc += unpack2x16float(w[wb + pairs]).x * xin(xb, p.cols - 1u);
    }
#endif
#endif
    return acc;
}
#endif

#ifdef MULTI
// w[r, :] · x[xb + tt * cols ..] for the nt tokens tt < nt.
fn multi_dot(r: u32, xb: u32, nt: u32) -> array<f32, TOKENS> {
    var acc: array<f32, TOKENS>;
#ifdef W_GGML
    // 8 weights at a time, decoded once, then dotted with each token's x.
    for (var k8 = 0u; k8 < p.cols / 8u; k8++) {
        let wv = ggml8(r, k8);
        for (var tt = 0u; tt < nt; tt++) {
            let xt = xb + tt * p.cols;
            acc[tt] += dot(wv[0], xin4(xt, 8u * k8)) + dot(wv[1], xin4(xt, 8u * k8 + 4u));
        }
    }
#else
#ifdef W_QUANT
    // One group of 32 weights at a time, decoded once, then dotted with each token's x.
    for (var grp = 0u; grp < p.cols / 32u; grp++) {
        var wq: array<vec4<f32>, 8>;
#ifdef W_Q4
        let q = group_words(r, grp, 0u);
        wq = array<vec4<f32>, 8>(q4_lo(q.x) - 8.0, q4_hi(q.x) - 8.0, q4_lo(q.y) - 8.0, q4_hi(q.y) - 8.0,
                                 q4_lo(q.z) - 8.0, q4_hi(q.z) - 8.0, q4_lo(q.w) - 8.0, q4_hi(q.w) - 8.0);
#else
        let q0 = group_words(r, grp, 0u);
        let q1 = group_words(r, grp, 1u);
        wq = array<vec4<f32>, 8>(q8_quad(q0.x), q8_quad(q0.y), q8_quad(q0.z), q8_quad(q0.w),
                                 q8_quad(q1.x), q8_quad(q1.y), q8_quad(q1.z), q8_quad(q1.w));
#endif
        let ws = w_scale(r, grp);
        for (var tt = 0u; tt < nt; tt++) {
            let xt = xb + tt * p.cols;
            var s = 0.0;
            for (var j = 0u; j < 8u; j++) {
                s += dot(wq[j], xin4(xt, grp * 32u + 4u * j));
            }
            acc[tt] += s * ws;
        }
    }
#else
    let wb = r * p.stride;
    let pairs = p.cols / 2u;
    for (var k = 0u; k < pairs; k++) {
        let f = unpack2x16float(w[wb + k]);
        for (var tt = 0u; tt < nt; tt++) {
            let xt = xb + tt * p.cols;
            acc[tt] += f.x * xin(xt, 2u * k) + f.y * xin(xt, 2u * k + 1u);
        }
    }
    if ((p.cols & 1u) == 1u) {
        let f = unpack2x16float(w[wb + pairs]).x;
        for (var tt = 0u; tt < nt; tt++) {
            acc[tt] += f * xin(xb + tt * p.cols, p.cols - 1u);
        }
    }
#endif
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
    if (t0 >= p.n_tokens) {
        return;
    }
    let nt = min(TOKENS, p.n_tokens - t0);
    let xb = (p.x_row0 + t0) * p.cols; // token t0's first input
    // Each output is scaled by its token's norm scale (1 without NORM).
    var scale: array<f32, TOKENS>;
    for (var tt = 0u; tt < TOKENS; tt++) {
        scale[tt] = 1.0;
    }
#ifdef NORM
    // The workgroup sums each token's squares once, a slice a thread.
    for (var tt = 0u; tt < nt; tt++) {
        var s = 0.0;
#ifdef VEC4_IO
        for (var c = li; c < p.cols / 4u; c += WG) {
            let v = x[(xb + tt * p.cols) / 4u + c];
            s += dot(v, v);
        }
#else
        for (var c = li; c < p.cols; c += WG) {
            let v = x[xb + tt * p.cols + c];
            s += v * v;
        }
#endif
        sum_sq[tt * WG + li] = s;
    }
    workgroupBarrier();
    for (var tt = 0u; tt < nt; tt++) {
        var s = 0.0;
        for (var i = 0u; i < WG; i++) {
            s += sum_sq[tt * WG + i];
        }
        scale[tt] = norm_scale(s);
    }
#endif
    if (r >= p.rows) {
        return;
    }
#ifdef MULTI
    let acc = multi_dot(r, xb, nt);
#ifdef SWIGLU
    let up = multi_dot(p.up_row + r, xb, nt);
#endif
    for (var tt = 0u; tt < nt; tt++) {
#ifdef SWIGLU
        store(t0 + tt, r, swiglu(acc[tt] * scale[tt], up[tt] * scale[tt]));
#else
        store(t0 + tt, r, acc[tt] * scale[tt]);
#endif
    }
#else
    // One token (decode): the same sums without the token loop, which CPU compilers keep in
    // memory rather than registers.
#ifdef SWIGLU
    store(t0, r, swiglu(row_dot(r, xb) * scale[0], row_dot(p.up_row + r, xb) * scale[0]));
#else
    store(t0, r, row_dot(r, xb) * scale[0]);
#endif
#endif
}
