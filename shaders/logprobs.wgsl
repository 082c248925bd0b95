// Log-probabilities of the token a pass chose, one workgroup, run after argmax.wgsl or
// sample.wgsl (with KEYS_APART, so the logits are still the LM head's raw ones). The
// definition (src/sampler.rs): the log-softmax of the raw logits l_0..l_{n-1} (n: the token
// limit), before penalties, bias and temperature; NaN logits take no part.
//
// Only the few numbers that definition needs come back; the host finishes it in f64
// (sampler::logprob_of: logprob(l) = (l - m) - log(s), or -log(s) where l == m):
//   out[0] = the chosen token (next[0]; 0xffffffff when none)
//   out[1] = m, the largest logit (f32 bits; -FLT_MAX when every logit is NaN or -inf)
//   out[2] = s = sum(exp(l_i - m)) (f32 bits; a logit equal to m counts 1, even +inf)
//   out[3] = the chosen token's raw logit (f32 bits; NaN when none)
//   out[4 + 2j], out[5 + 2j] for j < k: the j-th most likely token's id and raw logit
//          (larger first, smaller id among ties; NaN and -inf logits are never listed;
//          id 0xffffffff when fewer than k can be)
//
// One sweep: each thread keeps a running (max, sum) (the online softmax) and its own sorted
// top-k (k <= KMAX) of its strided share; the sums are merged through the maximum, and the
// top-k by k rounds of a workgroup argmax over the threads' heads.
#include "common/reduce.wgsl"

struct Params {
    n: u32,
    k: u32, // <= KMAX
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> next: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const NONE: u32 = 0xffffffffu;
const KMAX: u32 = 20u;
const LOW: f32 = -3.402823e38; // ~ -FLT_MAX (Tint rejects the exact literal)

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn is_neg_inf(v: f32) -> bool {
    return bitcast<u32>(v) == 0xff800000u;
}

// Whether (v, i) ranks before (bv, bi): a real entry before none, then larger, then smaller id.
fn before(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    if (i == NONE) {
        return false;
    }
    return bi == NONE || v > bv || (v == bv && i < bi);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32) {
    let n = p.n;
    let k = min(p.k, KMAX);
    var m = LOW;
    var s = 0.0;
    var tv: array<f32, KMAX>;
    var ti: array<u32, KMAX>;
    var held = 0u;
    for (var i = li; i < n; i += WG) {
        let v = logits[i];
        if (is_nan(v) || is_neg_inf(v)) {
            continue;
        }
        if (v > m) {
            s = s * exp(m - v) + 1.0;
            m = v;
        } else if (v == m) {
            s += 1.0;
        } else {
            s += exp(v - m);
        }
        if (k > 0u && (held < k || before(v, i, tv[k - 1u], ti[k - 1u]))) {
            // Insert (v, i) in order; the last one falls off when the list is full.
            var j = min(held, k - 1u);
            loop {
                if (j == 0u || !before(v, i, tv[j - 1u], ti[j - 1u])) {
                    break;
                }
                tv[j] = tv[j - 1u];
                ti[j] = ti[j - 1u];
                j -= 1u;
            }
            tv[j] = v;
            ti[j] = i;
            held = min(held + 1u, k);
        }
    }
    let big = reduce_max(li, m);
    // A thread's sum counts relative to its own max: rescale to the workgroup's.
    var mine = 0.0;
    if (s > 0.0) {
        mine = select(s * exp(m - big), s, m == big);
    }
    let total = reduce_sum(li, mine);
    if (li == 0u) {
        let t = next[0];
        out[0] = t;
        out[1] = bitcast<u32>(big);
        out[2] = bitcast<u32>(total);
        var chosen = 0x7fc00000u; // NaN
        if (t < n) {
            chosen = bitcast<u32>(logits[t]);
        }
        out[3] = chosen;
    }
    // The top k: each round, the best head among the threads' lists is the next entry.
    var head = 0u;
    for (var r = 0u; r < k; r++) {
        var hv = LOW;
        var hi = NONE;
        if (head < held) {
            hv = tv[head];
            hi = ti[head];
        }
        red[li] = hv;
        red_u[li] = hi;
        workgroupBarrier();
        for (var w = WG / 2u; w > 0u; w >>= 1u) {
            if (li < w && before(red[li + w], red_u[li + w], red[li], red_u[li])) {
                red[li] = red[li + w];
                red_u[li] = red_u[li + w];
            }
            workgroupBarrier();
        }
        let win = red_u[0];
        if (li == 0u) {
            out[4u + 2u * r] = win;
            out[5u + 2u * r] = bitcast<u32>(red[0]);
        }
        if (win != NONE && win == hi) {
            head += 1u;
        }
        workgroupBarrier();
    }
}
