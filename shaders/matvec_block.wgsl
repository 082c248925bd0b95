// y = W x (+ bias) (+= y), ROWS rows of one token per workgroup (decode), or with MULTI of
// TOKENS tokens (prefill on adapters where the tiled matmul is slow, such as CPU ones).
// The WG threads stride along the rows a block at a time (q4/q8: one group of 32 weights
// and its scale; f16: 8 weights), with 16-byte loads. Each block of x is loaded once and used
// for all ROWS rows, so x costs 1/ROWS of the loads it would cost one row at a time (and with
// NORM, its sum of squares and norm weight 1/ROWS of the work). The
// partial sums are reduced with subgroupAdd where the adapter has subgroups of one size SG,
// else through workgroup memory; with ONE_SUBGROUP (WG == SG, CPU adapters) subgroupAdd
// alone, with no barrier. Needs cols % 8 == 0 (whole groups for q4/q8), so that rows
// and x rows start on 16-byte boundaries.
#include "common/grid.wgsl"
// (with VEC4_IO set by the caller)
#include "common/linear.wgsl"

// Output rows a workgroup stores: ROWS, or with SWIGLU half as many, each from a gate row
// (its first OUT_ROWS weight rows) and the up row p.up_row further on (its last OUT_ROWS).
#ifdef SWIGLU
const OUT_ROWS: u32 = ROWS / 2u;
#else
const OUT_ROWS: u32 = ROWS;
#endif
// Weight row of the workgroup's r-th row, given its first output row r0; and whether it exists.
fn wrow(r0: u32, r: u32) -> u32 {
#ifdef SWIGLU
    if (r >= OUT_ROWS) {
        return p.up_row + r0 + r - OUT_ROWS;
    }
#endif
    return r0 + r;
}
fn row_ok(r0: u32, r: u32) -> bool {
    return r0 + r % OUT_ROWS < p.rows;
}

// The sums a thread accumulates: ROWS * TOKENS outputs (output r * TOKENS + tt is row r0 + r
// of token t0 + tt), then with NORM each token's sum of squares of x.
const NOUT: u32 = ROWS * TOKENS;
#ifdef NORM
const NACC: u32 = NOUT + TOKENS;
#else
const NACC: u32 = NOUT;
#endif

#ifndef ONE_SUBGROUP
#ifdef SG
const NPART: u32 = WG / SG;
#else
const NPART: u32 = WG;
#endif
var<workgroup> part: array<f32, NACC * NPART>;

// Sum i over what is left of the workgroup's n partial sums.
fn part_total(i: u32, n: u32) -> f32 {
    var total = 0.0;
    for (var k = 0u; k < n; k++) {
        total += part[i * NPART + k];
    }
    return total;
}
#endif
// Outputs a workgroup stores (with SWIGLU, gate output i pairs with up output i + NSTORE).
const NSTORE: u32 = OUT_ROWS * TOKENS;

// Sum each of the NACC sums over the workgroup's threads and store the outputs (scaled by
// their token's norm scale with NORM; silu(gate) * up with SWIGLU).
fn reduce_store(acc: array<f32, NACC>, li: u32,
#ifdef SG
                lane: u32,
#endif
                r0: u32, t0: u32) {
#ifdef ONE_SUBGROUP
    // WG == SG (CPU adapters: one SIMD vector a workgroup): the subgroup's sums are the
    // totals, and no barrier is needed.
    var scale: array<f32, TOKENS>;
    for (var tt = 0u; tt < TOKENS; tt++) {
#ifdef NORM
        scale[tt] = norm_scale(subgroupAdd(acc[NOUT + tt]));
#else
        scale[tt] = 1.0;
#endif
    }
#ifdef SWIGLU
    var tot: array<f32, NOUT>;
    for (var i = 0u; i < NOUT; i++) {
        tot[i] = subgroupAdd(acc[i]) * scale[i % TOKENS];
    }
#endif
    for (var i = 0u; i < NSTORE; i++) {
        let r = i / TOKENS;
        let t = t0 + i % TOKENS;
#ifdef SWIGLU
        let s = swiglu(tot[i], tot[i + NSTORE]);
#else
        let s = subgroupAdd(acc[i]) * scale[i % TOKENS];
#endif
        if (lane == i % SG && r0 + r < p.rows && t < p.n_tokens) {
            store(t, r0 + r, s);
        }
    }
#else
#ifdef SG
    for (var i = 0u; i < NACC; i++) {
        let s = subgroupAdd(acc[i]);
        if (lane == 0u) {
            part[i * NPART + li / SG] = s;
        }
    }
    workgroupBarrier();
    let n: u32 = NPART; // what is left: one sum per subgroup
#else
    for (var i = 0u; i < NACC; i++) {
        part[i * NPART + li] = acc[i];
    }
    workgroupBarrier();
    for (var half = WG / 2u; half >= SUM_UNTIL; half /= 2u) {
        if (li < half) {
            for (var i = 0u; i < NACC; i++) {
                part[i * NPART + li] += part[i * NPART + li + half];
            }
        }
        workgroupBarrier();
    }
    let n: u32 = SUM_UNTIL; // what is left: the tree's last level
#endif
    for (var o = li; o < NSTORE; o += WG) {
        let r = o / TOKENS;
        let t = t0 + o % TOKENS;
        if (r0 + r < p.rows && t < p.n_tokens) {
            var scale = 1.0;
#ifdef NORM
            scale = norm_scale(part_total(NOUT + o % TOKENS, n));
#endif
#ifdef SWIGLU
            store(t, r0 + r, swiglu(part_total(o, n) * scale, part_total(o + NSTORE, n) * scale));
#else
            store(t, r0 + r, part_total(o, n) * scale);
#endif
        }
    }
#endif
}

// x values v of input column block c4 (vec4 index within the row): times the norm weight with
// NORM, and their share of the row's sum of squares (0 without NORM).
fn normed(v: vec4<f32>, c4: u32) -> vec4<f32> {
#ifdef NORM
    return v * nw[c4];
#else
    return v;
#endif
}
fn sq(v: vec4<f32>) -> f32 {
#ifdef NORM
    return dot(v, v);
#else
    return 0.0;
#endif
}

// Weights 8 k8 .. 8 k8 + 7 of row r, scaled, as two vec4s.
fn weights8(r: u32, k8: u32) -> array<vec4<f32>, 2> {
#ifdef W_GGML
    return ggml8(r, k8);
#else
#ifdef W_Q4
    let word = w[r * p.stride / 4u + k8 / 4u][k8 % 4u];
    let s = w_scale(r, k8 / 4u);
    return array<vec4<f32>, 2>((q4_lo(word) - 8.0) * s, (q4_hi(word) - 8.0) * s);
#else
#ifdef W_Q8
    let q = w[r * p.stride / 4u + k8 / 2u];
    let s = w_scale(r, k8 / 4u);
    if ((k8 & 1u) == 0u) {
        return array<vec4<f32>, 2>(q8_quad(q.x) * s, q8_quad(q.y) * s);
    }
    return array<vec4<f32>, 2>(q8_quad(q.z) * s, q8_quad(q.w) * s);
#else
    let q = w[r * p.stride / 4u + k8];
    return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)),
                               vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)));
#endif
#endif
#endif
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SG
        @builtin(subgroup_invocation_id) lane: u32,
#endif
        @builtin(local_invocation_index) li: u32) {
    let blocks = (p.rows + OUT_ROWS - 1u) / OUT_ROWS;
    let g = group_index(wg, nwg);
    let t0 = (g / blocks) * TOKENS;
    if (t0 >= p.n_tokens) {
        return;
    }
    let r0 = (g % blocks) * OUT_ROWS; // first output row
    var acc: array<f32, NACC>;
    var sum_sq: array<f32, TOKENS>;
#ifdef MULTI
    // TOKENS tokens a workgroup (prefill): each weight is loaded once for all of them.
    for (var k8 = li; k8 < p.cols / 8u; k8 += WG) {
        var wr: array<array<vec4<f32>, 2>, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            if (row_ok(r0, r)) {
                wr[r] = weights8(wrow(r0, r), k8);
            }
        }
        for (var tt = 0u; tt < TOKENS; tt++) {
            if (t0 + tt < p.n_tokens) {
                let xo = (p.x_row0 + t0 + tt) * p.cols / 4u + 2u * k8;
                let x0 = x[xo];
                let x1 = x[xo + 1u];
                sum_sq[tt] += sq(x0) + sq(x1);
                let n0 = normed(x0, 2u * k8);
                let n1 = normed(x1, 2u * k8 + 1u);
                for (var r = 0u; r < ROWS; r++) {
                    acc[r * TOKENS + tt] += dot(wr[r][0], n0) + dot(wr[r][1], n1);
                }
            }
        }
    }
#else
    // One token (TOKENS = 1).
    let xb = (p.x_row0 + t0) * p.cols / 4u; // in vec4s
#ifdef W_QUANT
    // One group of 32 weights a block: 8 vec4s of x.
    for (var b = li; b < p.cols / 32u; b += WG) {
        let xo = xb + 8u * b;
        var x0 = x[xo];
        var x1 = x[xo + 1u];
        var x2 = x[xo + 2u];
        var x3 = x[xo + 3u];
        var x4 = x[xo + 4u];
        var x5 = x[xo + 5u];
        var x6 = x[xo + 6u];
        var x7 = x[xo + 7u];
        sum_sq[0] += sq(x0) + sq(x1) + sq(x2) + sq(x3) + sq(x4) + sq(x5) + sq(x6) + sq(x7);
        x0 = normed(x0, 8u * b);
        x1 = normed(x1, 8u * b + 1u);
        x2 = normed(x2, 8u * b + 2u);
        x3 = normed(x3, 8u * b + 3u);
        x4 = normed(x4, 8u * b + 4u);
        x5 = normed(x5, 8u * b + 5u);
        x6 = normed(x6, 8u * b + 6u);
        x7 = normed(x7, 8u * b + 7u);
#ifdef W_Q4
        // (q - 8) · x = q · x - 8 Σx
        let xsum8 = 8.0 * dot(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7, vec4<f32>(1.0));
#endif
        for (var r = 0u; r < ROWS; r++) {
            let row = wrow(r0, r);
            if (row_ok(r0, r)) {
#ifdef W_Q4
                let q = w[row * p.stride / 4u + b];
                let s = dot(q4_lo(q.x), x0) + dot(q4_hi(q.x), x1)
                    + dot(q4_lo(q.y), x2) + dot(q4_hi(q.y), x3)
                    + dot(q4_lo(q.z), x4) + dot(q4_hi(q.z), x5)
                    + dot(q4_lo(q.w), x6) + dot(q4_hi(q.w), x7);
                acc[r] += (s - xsum8) * w_scale(row, b);
#else
                let wo = row * p.stride / 4u + 2u * b;
                let q0 = w[wo];
                let q1 = w[wo + 1u];
                let s = dot(q8_quad(q0.x), x0) + dot(q8_quad(q0.y), x1) + dot(q8_quad(q0.z), x2) + dot(q8_quad(q0.w), x3)
                    + dot(q8_quad(q1.x), x4) + dot(q8_quad(q1.y), x5) + dot(q8_quad(q1.z), x6) + dot(q8_quad(q1.w), x7);
                acc[r] += s * w_scale(row, b);
#endif
            }
        }
    }
#else
    // f16: 8 weights (4 words) a block: 2 vec4s of x.
    for (var b = li; b < p.cols / 8u; b += WG) {
        let x0 = x[xb + 2u * b];
        let x1 = x[xb + 2u * b + 1u];
        sum_sq[0] += sq(x0) + sq(x1);
        let n0 = normed(x0, 2u * b);
        let n1 = normed(x1, 2u * b + 1u);
        for (var r = 0u; r < ROWS; r++) {
            let row = wrow(r0, r);
            if (row_ok(r0, r)) {
                let wv = weights8(row, b);
                acc[r] += dot(wv[0], n0) + dot(wv[1], n1);
            }
        }
    }
#endif
#endif
#ifdef NORM
    for (var tt = 0u; tt < TOKENS; tt++) {
        acc[NOUT + tt] = sum_sq[tt];
    }
#endif
    reduce_store(acc, li,
#ifdef SG
                 lane,
#endif
                 r0, t0);
}
