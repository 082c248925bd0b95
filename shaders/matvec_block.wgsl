// y = W x (+ bias) (+= y) for a few tokens (decode), ROWS rows of one token per workgroup.
// The WG threads stride along the rows a block at a time (q4/q8: one group of 32 weights
// and its scale; f16: 8 weights), with 16-byte loads. Each block of x is loaded once and used
// for all ROWS rows, so x costs 1/ROWS of the loads it would cost one row at a time. The
// partial sums are reduced with subgroupAdd where the adapter has subgroups of one size SG,
// else through workgroup memory. Needs cols % 8 == 0 (whole groups for q4/q8), so that rows
// and x rows start on 16-byte boundaries.
#include "common/grid.wgsl"
// (with VEC4_IO set by the caller)
#include "common/linear.wgsl"

#ifdef SG
const NPART: u32 = WG / SG;
#else
const NPART: u32 = WG;
#endif
var<workgroup> part: array<f32, ROWS * NPART>;

#ifdef W_QUANT
// Scale of group g of row r (f16 halves at word offset p.scales).
fn scale(r: u32, g: u32) -> f32 {
    let i = r * (p.cols / 32u) + g;
    let word = p.scales + i / 2u;
    return unpack2x16float(w[word / 4u][word % 4u])[i & 1u];
}
#endif
#ifdef W_Q4
// Eight 4-bit values (weights 8j .. 8j + 7 of word j), unsigned 0..15, as two vec4s.
fn nibbles_lo(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
}
fn nibbles_hi(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
}
#endif
#ifdef W_Q8
// Four int8 values of a word, sign-extended.
fn bytes4(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<i32>(bitcast<i32>(word)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
#endif

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SG
        @builtin(subgroup_invocation_id) lane: u32,
#endif
        @builtin(local_invocation_index) li: u32) {
    let blocks = (p.rows + ROWS - 1u) / ROWS;
    let g = group_index(wg, nwg);
    let t = g / blocks;
    if (t >= p.n_tokens) {
        return;
    }
    let r0 = (g % blocks) * ROWS;
    let xb = (p.x_row0 + t) * p.cols / 4u; // in vec4s
    var acc: array<f32, ROWS>;
#ifdef W_QUANT
    // One group of 32 weights a block: 8 vec4s of x.
    for (var b = li; b < p.cols / 32u; b += WG) {
        let xo = xb + 8u * b;
        let x0 = x[xo];
        let x1 = x[xo + 1u];
        let x2 = x[xo + 2u];
        let x3 = x[xo + 3u];
        let x4 = x[xo + 4u];
        let x5 = x[xo + 5u];
        let x6 = x[xo + 6u];
        let x7 = x[xo + 7u];
#ifdef W_Q4
        // (q - 8) · x = q · x - 8 Σx
        let xsum8 = 8.0 * dot(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7, vec4<f32>(1.0));
#endif
        for (var r = 0u; r < ROWS; r++) {
            let row = r0 + r;
            if (row < p.rows) {
#ifdef W_Q4
                let q = w[row * p.stride / 4u + b];
                let s = dot(nibbles_lo(q.x), x0) + dot(nibbles_hi(q.x), x1)
                    + dot(nibbles_lo(q.y), x2) + dot(nibbles_hi(q.y), x3)
                    + dot(nibbles_lo(q.z), x4) + dot(nibbles_hi(q.z), x5)
                    + dot(nibbles_lo(q.w), x6) + dot(nibbles_hi(q.w), x7);
                acc[r] += (s - xsum8) * scale(row, b);
#else
                let wo = row * p.stride / 4u + 2u * b;
                let q0 = w[wo];
                let q1 = w[wo + 1u];
                let s = dot(bytes4(q0.x), x0) + dot(bytes4(q0.y), x1) + dot(bytes4(q0.z), x2) + dot(bytes4(q0.w), x3)
                    + dot(bytes4(q1.x), x4) + dot(bytes4(q1.y), x5) + dot(bytes4(q1.z), x6) + dot(bytes4(q1.w), x7);
                acc[r] += s * scale(row, b);
#endif
            }
        }
    }
#else
    // f16: 8 weights (4 words) a block: 2 vec4s of x.
    for (var b = li; b < p.cols / 8u; b += WG) {
        let x0 = x[xb + 2u * b];
        let x1 = x[xb + 2u * b + 1u];
        for (var r = 0u; r < ROWS; r++) {
            let row = r0 + r;
            if (row < p.rows) {
                let q = w[row * p.stride / 4u + b];
                acc[r] += dot(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), x0)
                    + dot(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)), x1);
            }
        }
    }
#endif

#ifdef SG
    for (var r = 0u; r < ROWS; r++) {
        let s = subgroupAdd(acc[r]);
        if (lane == 0u) {
            part[r * NPART + li / SG] = s;
        }
    }
    workgroupBarrier();
#else
    for (var r = 0u; r < ROWS; r++) {
        part[r * NPART + li] = acc[r];
    }
    workgroupBarrier();
    for (var half = WG / 2u; half >= SUM_UNTIL; half /= 2u) {
        if (li < half) {
            for (var r = 0u; r < ROWS; r++) {
                part[r * NPART + li] += part[r * NPART + li + half];
            }
        }
        workgroupBarrier();
    }
#endif
    if (li < ROWS && r0 + li < p.rows) {
        // What is left: NPART sums (subgroups) or SUM_UNTIL (the tree's last level).
#ifdef SG
        let n: u32 = NPART;
#else
        let n: u32 = SUM_UNTIL;
#endif
        var total = 0.0;
        for (var k = 0u; k < n; k++) {
            total += part[li * NPART + k];
        }
        store(t, r0 + li, total);
    }
}
