// The weight encoders on the GPU: rows of a checkpoint tensor as stored (SRC_F32, SRC_F16 or
// bf16 by default) -> the GPU weight format (OUT_Q4, OUT_Q8 or f16 pairs by default), bit for
// bit what src/weights/quant.rs's CPU encoder writes. Every float operation goes through
// common/softfloat.wgsl, in the CPU encoder's order, so that rounding is the CPU's.
// One thread per output word (f16) or per pair of groups of 32 (q4, q8: the pair shares one
// word of f16 scales). A bad value (non-finite, or a scale past f16) is reported in
// `err[p.err_slot]` as the smallest `tensor_row * 4 + kind` (kind 1: non-finite, 2: f16
// range), i.e. the first row the CPU would have stopped at.
#include "common/grid.wgsl"
#include "common/softfloat.wgsl"

struct Params {
    rows: u32,         // rows in this dispatch
    cols: u32,
    src_row0: u32,     // row of `src` that is this dispatch's row 0
    dst_word0: u32,    // word of `dst` where row 0's values start
    stride: u32,       // value words per row in `dst`
    scales_word0: u32, // word of `dst` where row 0's f16 scales start (quantized formats)
    err_slot: u32,
    err_row0: u32,     // tensor row of this dispatch's row 0, for errors
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<storage, read_write> err: array<atomic<u32>>;

const F_ZERO: u32 = 0u;
const F_ONE: u32 = 0x3f800000u;
const F_TWO: u32 = 0x40000000u;
const F_EIGHT: u32 = 0x41000000u;
const F_MINUS_EIGHT: u32 = 0xc1000000u;
const F_SEVEN: u32 = 0x40e00000u;
const F_FIFTEEN: u32 = 0x41700000u;
const F_127: u32 = 0x42fe0000u;
const F_MINUS_127: u32 = 0xc2fe0000u;
// 1.5 * 2^23: (v + C) - C rounds v to an integer, ties to even (quant.rs's round_fast).
const F_ROUND: u32 = 0x4b400000u;

// Element k of row r of this dispatch, as f32 bits (exact).
fn load(r: u32, k: u32) -> u32 {
    let i = (p.src_row0 + r) * p.cols + k;
#ifdef SRC_F32
    return src[i];
#else
    let h = (src[i / 2u] >> ((i & 1u) * 16u)) & 0xffffu;
#ifdef SRC_F16
    return sf_from_f16(h);
#else
    return h << 16u;
#endif
#endif
}

fn report(r: u32, kind: u32) {
    atomicMin(&err[p.err_slot], (p.err_row0 + r) * 4u + kind);
}

fn f16_is_finite(h: u32) -> bool {
    return (h & 0x7c00u) != 0x7c00u;
}

#ifdef OUT_F16
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let t = group_index(wg, nwg) * 64u + li;
    if (t >= p.rows * p.stride) {
        return;
    }
    let r = t / p.stride;
    let w = t % p.stride;
    var word = 0u;
    for (var j = 0u; j < 2u; j = j + 1u) {
        let k = 2u * w + j;
        if (k < p.cols) {
            let x = load(r, k);
            let h = sf_to_f16(x);
            if (!sf_is_finite(x)) {
                report(r, 1u);
            } else if (!f16_is_finite(h)) {
                report(r, 2u);
            }
            word = word | (h << (16u * j));
        }
    }
    dst[p.dst_word0 + r * p.stride + w] = word;
}
#else

var<private> xs: array<u32, 32>;

#ifdef OUT_Q4
// quant.rs's Q4_SEARCH, as f32 bits.
const Q4_SEARCH = array<u32, 10>(0xc1100000u, 0xc10ccccdu, 0xc109999au, 0xc1066666u, 0xc1033333u,
                                 0xc1000000u, 0xc0f9999au, 0xc0f33333u, 0xc0eccccdu, 0xc0e66666u);

// (squared error, largest error) of decoding the group with scale d (quant.rs's `eval`).
fn q4_eval(d: u32) -> vec2<u32> {
    var inv = F_ZERO;
    if (!sf_is_zero(d)) {
        inv = sf_div(F_ONE, d);
    }
    var sq = F_ZERO;
    var mx = F_ZERO;
    for (var j = 0u; j < 32u; j = j + 1u) {
        let x = xs[j];
        let q = sf_clamp(sf_round_away(sf_mul(x, inv)), F_MINUS_EIGHT, F_SEVEN);
        let e = sf_abs(sf_sub(x, sf_mul(q, d)));
        sq = sf_add(sq, sf_mul(e, e));
        mx = sf_max(mx, e);
    }
    return vec2<u32>(sq, mx);
}

// The group's f16 scale (quant.rs's `q4_scale`); `kind` gets 1 or 2 on a bad value.
fn q4_scale(kind: ptr<function, u32>) -> u32 {
    var m = F_ZERO;
    for (var j = 0u; j < 32u; j = j + 1u) {
        if (!sf_is_finite(xs[j])) {
            *kind = 1u;
            return 0u;
        }
        if (sf_gt(sf_abs(xs[j]), sf_abs(m))) {
            m = xs[j];
        }
    }
    let d0 = sf_to_f16(sf_div(m, F_MINUS_EIGHT));
    if (!f16_is_finite(d0)) {
        *kind = 2u;
        return 0u;
    }
    if (sf_is_zero(m)) {
        return d0;
    }
    var sxx = F_ZERO;
    for (var j = 0u; j < 32u; j = j + 1u) {
        sxx = sf_add(sxx, sf_mul(xs[j], xs[j]));
    }
    let first = q4_eval(sf_from_f16(d0));
    let limit = sf_max(first.y, sf_div(sf_abs(m), F_EIGHT));
    var best_e = first.x;
    var best_d = d0;
    for (var c = 0u; c < 10u; c = c + 1u) {
        let iscale = sf_div(Q4_SEARCH[c], m);
        var sxl = F_ZERO;
        var sll = F_ZERO;
        for (var j = 0u; j < 32u; j = j + 1u) {
            let x = xs[j];
            let l = sf_clamp(sf_sub(sf_add(sf_mul(x, iscale), F_ROUND), F_ROUND), F_MINUS_EIGHT, F_SEVEN);
            sxl = sf_add(sxl, sf_mul(x, l));
            sll = sf_add(sll, sf_mul(l, l));
        }
        if (sf_is_zero(sll)) {
            continue;
        }
        let d = sf_to_f16(sf_div(sxl, sll));
        if (!f16_is_finite(d)) {
            continue;
        }
        let df = sf_from_f16(d);
        // The candidate's own levels bound its error from above (as on the CPU).
        let bound = sf_add(sf_sub(sxx, sf_mul(sf_mul(F_TWO, df), sxl)), sf_mul(sf_mul(df, df), sll));
        if (sf_lt(bound, best_e)) {
            let ev = q4_eval(df);
            if (sf_lt(ev.x, best_e) && !sf_gt(ev.y, limit)) {
                best_e = ev.x;
                best_d = d;
            }
        }
    }
    return best_d;
}
#endif

// Encode group xs into its value words at `word0`; returns its f16 scale, or sets `kind`.
fn encode_group(word0: u32, kind: ptr<function, u32>) -> u32 {
#ifdef OUT_Q4
    let s = q4_scale(kind);
    if (*kind != 0u) {
        return 0u;
    }
    let sf = sf_from_f16(s);
    var inv = F_ZERO;
    if (!sf_is_zero(sf)) {
        inv = sf_div(F_ONE, sf);
    }
    for (var w = 0u; w < 4u; w = w + 1u) {
        var word = 0u;
        for (var j = 0u; j < 8u; j = j + 1u) {
            let x = xs[w * 8u + j];
            let q = sf_clamp(sf_add(sf_round_away(sf_mul(x, inv)), F_EIGHT), F_ZERO, F_FIFTEEN);
            word = word | (u32(sf_to_i32(q)) << (4u * j));
        }
        dst[word0 + w] = word;
    }
    return s;
#else
    // q8: scale max|x| / 127.
    var amax = F_ZERO;
    for (var j = 0u; j < 32u; j = j + 1u) {
        if (!sf_is_finite(xs[j])) {
            *kind = 1u;
            return 0u;
        }
        amax = sf_max(amax, sf_abs(xs[j]));
    }
    let s = sf_to_f16(sf_div(amax, F_127));
    if (!f16_is_finite(s)) {
        *kind = 2u;
        return 0u;
    }
    let sf = sf_from_f16(s);
    var inv = F_ZERO;
    if (sf_gt(sf, F_ZERO)) {
        inv = sf_div(F_ONE, sf);
    }
    for (var w = 0u; w < 8u; w = w + 1u) {
        var word = 0u;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let x = xs[w * 4u + j];
            let q = sf_clamp(sf_round_away(sf_mul(x, inv)), F_MINUS_127, F_127);
            word = word | ((u32(sf_to_i32(q)) & 0xffu) << (8u * j));
        }
        dst[word0 + w] = word;
    }
    return s;
#endif
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let pairs = p.cols / 64u;
    let t = group_index(wg, nwg) * 64u + li;
    if (t >= p.rows * pairs) {
        return;
    }
    let r = t / pairs;
    let pair = t % pairs;
#ifdef OUT_Q4
    let words_per_group = 4u;
#else
    let words_per_group = 8u;
#endif
    var scales = 0u;
    for (var h = 0u; h < 2u; h = h + 1u) {
        let g = 2u * pair + h;
        for (var j = 0u; j < 32u; j = j + 1u) {
            xs[j] = load(r, g * 32u + j);
        }
        var kind = 0u;
        let s = encode_group(p.dst_word0 + r * p.stride + g * words_per_group, &kind);
        if (kind != 0u) {
            report(r, kind);
        }
        scales = scales | (s << (16u * h));
    }
    dst[p.scales_word0 + r * pairs + pair] = scales;
}
#endif
