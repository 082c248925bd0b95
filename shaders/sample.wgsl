// Sampling on the GPU, one workgroup: the next token from the LM head's logits, with the
// definition src/sampler.rs implements on the CPU (the tests compare the two token for token):
//
//   l'_i = l_i, or for a token in `seen` with penalty r: l_i * (1/r) if l_i > 0 else l_i * r
//   with COUNTS (frequency/presence penalties, OpenAI's): c_i = times token i was generated
//          in this generation (`counts`, bumped by each pass for its token; the prompt does
//          not count): l'_i -= c_i * frequency + presence when c_i > 0
//   with BIAS (OpenAI's logit_bias, a dense table): l'_i += bias_i
//   greedy (temperature 0): the first i of the largest l'_i
//   s_i  = l'_i * (1 / temperature)
//   top-k: keep s_i >= the k-th largest s (values tied with it are kept too)
//   top-p: of those, keep s_i >= v, v the largest kept value with
//          sum(exp(s_j - max s) for kept s_j >= v) >= top_p * sum(exp(s_j - max s), kept)
//   token = the first i of the largest s_i + g_i among the kept, g_i = -log(-log(u_i)),
//           u_i a uniform in (0, 1) hashed from (seed, step, i)
//
// The last line is the Gumbel-max trick: it draws i with probability exp(s_i) / sum(exp(s_j))
// over the kept set, with one pass and no sort or prefix sum. NaN logits are never chosen;
// with nothing to choose (all NaN or -inf) out[0] = 0xffffffff. The chosen token's bit is set
// in `seen` (and with COUNTS its count bumped), so the next pass (queued before this one is
// read back) penalises it.
//
// Without top-k and top-p (greedy, or the page's plain temperature) that is one sweep over the
// logits. Otherwise the logits are rewritten as order-preserving u32 keys of s (0 for NaN) into
// KEYS: the logits buffer itself, or with KEYS_APART a scratch buffer, which leaves the raw
// logits for logprobs.wgsl after this pass. top-k is a radix select on them (8 bits a round, 4
// rounds, the first in that same sweep), after which the kept (key, index) pairs are copied to
// workgroup memory when at most CAP. top-p is solved exactly on pairs in workgroup memory (each
// pair's mass above it, O(m^2)): those top-k kept, or else those within 2, 4, 8 or 16 of the
// largest s, the nearest window that holds the top-p mass and fits; failing both it bisects
// the keys in global memory 16 ways a round (at most 8 rounds) by their mass. The draw sweeps
// the kept ones.
#include "common/reduce.wgsl"

struct Params {
    n: u32,
    top_k: u32,           // 0: off
    seed_lo: u32,
    seed_hi: u32,
    step: u32,            // the sampling step, a new uniform stream each
    inv_temperature: f32, // 0: greedy
    top_p: f32,           // 1: off
    penalty: f32,         // repetition penalty; 1: off
    inv_penalty: f32,     // 1 / penalty (both, so each side is one correctly rounded multiply)
    frequency: f32,       // frequency penalty (COUNTS)
    presence: f32,        // presence penalty (COUNTS)
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<u32>; // f32 bits in (keys out unless KEYS_APART)
@group(0) @binding(2) var<storage, read_write> seen: array<u32>;   // bit per token id
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
#ifdef COUNTS
@group(0) @binding(B_COUNTS) var<storage, read_write> counts: array<u32>; // per token id
#endif
#ifdef BIAS
@group(0) @binding(B_BIAS) var<storage, read> bias: array<f32>;           // per token id
#endif
#ifdef KEYS_APART
@group(0) @binding(B_KEYS) var<storage, read_write> keys: array<u32>;     // [n] scratch
#endif

const NONE: u32 = 0xffffffffu;
const BINS: u32 = 16u;
// Most pairs kept in workgroup memory after top-k (more, from ties: the sweeps stay global).
const CAP: u32 = 1024u;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> bin_mass: array<f32, BINS>;
var<workgroup> pick: vec3<u32>; // thread 0's decisions, read back by all
var<workgroup> kept_key: array<u32, CAP>;
var<workgroup> kept_idx: array<u32, CAP>;
var<workgroup> kept_mass: array<f32, CAP>; // exp(s - max s), for top-p
var<workgroup> kept_n: atomic<u32>;

// Order-preserving key of an f32 (larger value, larger key); 0 for NaN.
fn key_of(s: f32) -> u32 {
    let b = bitcast<u32>(s);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return 0u;
    }
    if ((b & 0x80000000u) != 0u) {
        return ~b;
    }
    return b | 0x80000000u;
}

fn value_of(k: u32) -> f32 {
    if ((k & 0x80000000u) != 0u) {
        return bitcast<f32>(k & 0x7fffffffu);
    }
    return bitcast<f32>(~k);
}

// The PCG hash (Jarzynski and Olano): a permutation of u32.
fn pcg(x: u32) -> u32 {
    let s = x * 747796405u + 2891336453u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

// s_i: the logit after the penalties, the bias and the temperature.
fn score(i: u32) -> f32 {
    var l = bitcast<f32>(logits[i]);
    if (p.penalty != 1.0 && (seen[i >> 5u] & (1u << (i & 31u))) != 0u) {
        l = select(l * p.penalty, l * p.inv_penalty, l > 0.0);
    }
#ifdef COUNTS
    let c = counts[i];
    if (c > 0u) {
        l = l - (f32(c) * p.frequency + p.presence);
    }
#endif
#ifdef BIAS
    l = l + bias[i];
#endif
    return select(l * p.inv_temperature, l, p.inv_temperature == 0.0);
}

// g_i for this step (`base` hashes the seed and the step).
fn gumbel(i: u32, base: u32) -> f32 {
    // u = (h + 0.5) / 2^23 for 23 hashed bits: exact in f32 and inside (0, 1). The draw's
    // winners are the tokens with u nearest 1, where -log(u) is tiny and a GPU's log(u) (an
    // absolute error near 2^-21) would be all error: there -log(u) = -log1p(-w) is summed
    // from w = 1 - u (exact) as a series.
    let w = (f32(8388607u - (pcg(pcg(i) ^ base) >> 9u)) + 0.5) * (1.0 / 8388608.0);
    var e = -log(1.0 - w);
    if (w < 0.015625) {
        e = w * (1.0 + w * (0.5 + w * (1.0 / 3.0 + w * 0.25)));
    }
    return -log(e);
}

// The j-th candidate (key, token): from workgroup memory once compacted, else the j-th key.
fn entry(j: u32, compact: bool) -> vec2<u32> {
    if (compact) {
        return vec2<u32>(kept_key[j], kept_idx[j]);
    }
    return vec2<u32>(KEYS[j], j);
}

// Whether (v, i) beats (bv, bi): larger, or as large with a smaller index.
fn beats(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return v > bv || (v == bv && i < bi);
}

// The workgroup's best (v, i) is the token: out[0], and its bit in `seen`.
fn finish(li: u32, bv: f32, bi: u32) {
    red[li] = bv;
    red_u[li] = bi;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (li < k && beats(red[li + k], red_u[li + k], red[li], red_u[li])) {
            red[li] = red[li + k];
            red_u[li] = red_u[li + k];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        let t = red_u[0];
        out[0] = t;
        if (t != NONE) {
            seen[t >> 5u] |= 1u << (t & 31u);
#ifdef COUNTS
            counts[t] += 1u;
#endif
        }
    }
}

// Copy the pairs (key, token) with smax - value <= d (d = +inf: key >= lo) to workgroup
// memory; how many there are (the copy is whole only when that is <= CAP).
fn compact_pairs(li: u32, n: u32, lo: u32, smax: f32, d: f32) -> u32 {
    if (li == 0u) {
        atomicStore(&kept_n, 0u);
    }
    workgroupBarrier();
    for (var i = li; i < n; i += WG) {
        let k = KEYS[i];
        if (k >= lo && smax - value_of(k) <= d) {
            let j = atomicAdd(&kept_n, 1u);
            if (j < CAP) {
                kept_key[j] = k;
                kept_idx[j] = i;
            }
        }
    }
    workgroupBarrier();
    if (li == 0u) {
        pick = vec3<u32>(atomicLoad(&kept_n), 0u, 0u);
    }
    return workgroupUniformLoad(&pick).x;
}

// top-p among the m compacted pairs, exactly: the largest key whose mass (its own, its ties'
// and every larger key's) reaches `goal`; 1 (keep them all) if rounding leaves none there.
fn top_p_compact(li: u32, m: u32, smax: f32, goal: f32) -> u32 {
    for (var j = li; j < m; j += WG) {
        kept_mass[j] = exp(value_of(kept_key[j]) - smax);
    }
    workgroupBarrier();
    var best = 0u;
    for (var j = li; j < m; j += WG) {
        let kj = kept_key[j];
        var mass = 0.0;
        for (var i = 0u; i < m; i++) {
            if (kept_key[i] >= kj) {
                mass += kept_mass[i];
            }
        }
        if (mass >= goal) {
            best = max(best, kj);
        }
    }
    return max(reduce_max_u(li, best), 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32) {
    let n = p.n;
    let greedy = p.inv_temperature == 0.0;
    let use_k = !greedy && p.top_k > 0u && p.top_k < n;
    let use_p = !greedy && p.top_p < 1.0;
    let base = pcg(p.step ^ pcg(p.seed_lo ^ pcg(p.seed_hi)));
    var bv = -3.402823e38; // ~ -FLT_MAX (Tint rejects the exact literal)
    var bi = NONE;

    if (!use_k && !use_p) {
        // Every token is a candidate: one sweep.
        for (var i = li; i < n; i += WG) {
            let s = score(i);
            if (key_of(s) != 0u) {
                var v = s;
                if (!greedy) {
                    v += gumbel(i, base);
                }
                if (beats(v, i, bv, bi)) {
                    bv = v;
                    bi = i;
                }
            }
        }
        finish(li, bv, bi);
        return;
    }

    // Keys, their maximum, how many are not NaN, and top-k's first histogram (top 8 bits).
    for (var b = li; b < 256u; b += WG) {
        atomicStore(&hist[b], 0u);
    }
    workgroupBarrier();
    var kmax = 0u;
    var valid = 0u;
    for (var i = li; i < n; i += WG) {
        let k = key_of(score(i));
        KEYS[i] = k;
        kmax = max(kmax, k);
        if (k != 0u) {
            valid += 1u;
            atomicAdd(&hist[k >> 24u], 1u);
        }
    }
    let top = reduce_max_u(li, kmax);
    let count = reduce_sum_u(li, valid);

    // The smallest key kept (1: every one not NaN).
    var lo = 1u;
    var compact = false;
    var m = n;
    if (use_k && p.top_k < count) {
        // top-k: the k-th largest key, 8 bits a round from the top.
        var prefix = 0u;
        var need = p.top_k;
        for (var r = 0u; r < 4u; r++) {
            let shift = 24u - 8u * r;
            if (r > 0u) {
                let high = (0xffffffffu << shift) << 8u; // the bits fixed by earlier rounds
                for (var b = li; b < 256u; b += WG) {
                    atomicStore(&hist[b], 0u);
                }
                workgroupBarrier();
                for (var i = li; i < n; i += WG) {
                    let k = KEYS[i];
                    if (k != 0u && (k & high) == prefix) {
                        atomicAdd(&hist[(k >> shift) & 255u], 1u);
                    }
                }
            }
            workgroupBarrier();
            if (li == 0u) {
                var acc = 0u;
                var b = 255u;
                loop {
                    let h = atomicLoad(&hist[b]);
                    if (acc + h >= need || b == 0u) {
                        break;
                    }
                    acc += h;
                    b -= 1u;
                }
                pick = vec3<u32>(b, need - acc, 0u);
            }
            let chosen = workgroupUniformLoad(&pick);
            prefix |= chosen.x << shift;
            need = chosen.y;
        }
        lo = prefix;
        let kept = compact_pairs(li, n, lo, 0.0, 3.402823e38);
        if (kept <= CAP) {
            compact = true;
            m = kept;
        }
    }

    if (use_p) {
        let smax = value_of(top);
        if (compact) {
            // After top-k: the few kept pairs are in workgroup memory.
            var z = 0.0;
            for (var j = li; j < m; j += WG) {
                z += exp(value_of(kept_key[j]) - smax);
            }
            lo = top_p_compact(li, m, smax, p.top_p * reduce_sum(li, z));
        } else {
            // The whole mass, and the mass and count within 2, 4, 8 and 16 of the largest
            // s: the nearest of those that reaches the goal and fits is compacted and
            // solved exactly; if none does, bisect the keys in global memory.
            var z = 0.0;
            var near = vec4<f32>(0.0);
            var count = vec4<u32>(0u);
            let reach = vec4<f32>(2.0, 4.0, 8.0, 16.0);
            for (var i = li; i < n; i += WG) {
                let k = KEYS[i];
                if (k >= lo) {
                    let v = value_of(k);
                    let e = exp(v - smax);
                    z += e;
                    let within = vec4<f32>(smax - v) <= reach;
                    near += select(vec4<f32>(0.0), vec4<f32>(e), within);
                    count += select(vec4<u32>(0u), vec4<u32>(1u), within);
                }
            }
            let goal = p.top_p * reduce_sum_uniform(li, z);
            var d = -1.0;
            var fits = 0u;
            for (var c = 0u; c < 4u; c++) {
                let mc = reduce_sum_uniform(li, near[c]);
                let cc = reduce_sum_u(li, count[c]);
                if (d < 0.0 && mc >= goal && cc <= CAP) {
                    d = reach[c];
                    fits = cc;
                }
            }
            if (fits > 0u && compact_pairs(li, n, lo, smax, d) == fits) {
                compact = true;
                m = fits;
                lo = top_p_compact(li, m, smax, goal);
            } else {
                // Bisect the keys [lo, hi) 16 ways a round, keeping
                // mass(key >= lo) >= goal > mass(key >= hi), until one key is left.
                var hi = top + 1u;
                var above = 0.0; // mass(key >= hi)
                // At most 8 rounds: a range of r <= 2^32 keys is at most ceil(r / 16^k) wide
                // after k rounds, so one key is left after the 8th.
                for (var round = 0u; round < 8u && hi - lo > 1u; round++) {
                    let width = (hi - lo + BINS - 1u) / BINS;
                    // Zeroed by hand: Chromium (Tint on SwiftShader) kept the last round's sums
                    // in a loop-scoped `var mass: array<f32, BINS>;` despite WGSL's zero
                    // initialisation.
                    var mass: array<f32, BINS>;
                    for (var b = 0u; b < BINS; b++) {
                        mass[b] = 0.0;
                    }
                    for (var i = li; i < n; i += WG) {
                        let k = KEYS[i];
                        if (k >= lo && k < hi) {
                            mass[(k - lo) / width] += exp(value_of(k) - smax);
                        }
                    }
                    for (var b = 0u; b < BINS; b++) {
                        let sb = reduce_sum(li, mass[b]);
                        if (li == 0u) {
                            bin_mass[b] = sb;
                        }
                    }
                    workgroupBarrier();
                    if (li == 0u) {
                        // From the top bin down, the first whose mass reaches the goal (the
                        // lowest one if rounding leaves every bin short).
                        var acc = above;
                        var b = BINS - 1u;
                        loop {
                            if (acc + bin_mass[b] >= goal || b == 0u) {
                                break;
                            }
                            acc += bin_mass[b];
                            b -= 1u;
                        }
                        pick = vec3<u32>(b, bitcast<u32>(acc), 0u);
                    }
                    let chosen = workgroupUniformLoad(&pick);
                    let new_lo = lo + chosen.x * width;
                    hi = min(new_lo + width, hi);
                    lo = new_lo;
                    above = bitcast<f32>(chosen.y);
                }
            }
        }
    }

    // The draw among the kept.
    for (var j = li; j < m; j += WG) {
        let e = entry(j, compact);
        if (e.x >= lo) {
            let v = value_of(e.x) + gumbel(e.y, base);
            if (beats(v, e.y, bv, bi)) {
                bv = v;
                bi = e.y;
            }
        }
    }
    finish(li, bv, bi);
}
