// Causal attention over the KV cache, one workgroup per (token, query head), or with SPLIT
// per (token, query head, block of `p.chunk` keys) ("flash decoding": a decoded token's few
// heads alone would leave most of a GPU idle). Keys are taken WG at a time: each thread
// scores one key, then the tile's softmax weights are folded into running (max, sum,
// output) values (online softmax), so the cost per key is constant and no score buffer the
// size of the context is needed. With SPLIT each workgroup writes its unnormalised
// (output, max, sum) to `out` as a partial, and MERGE (the second pass) combines a token's
// and head's partials.
//
// Window attention (`p.window` > 0): a query at position i sees only keys
// first_key(i) ..= i, itself and the window - 1 before it. Older keys are skipped, not masked:
// the key loop starts at the token's first key, and SPLIT's splits cover only the span the
// pass's tokens see (from the first token's first key to the last token), so a long cache
// costs a windowed layer its window.
#include "common/grid.wgsl"
#include "common/packing.wgsl"

struct Params {
    n_tokens: u32,
    pos0: u32,        // position of the first token; token t sees keys first_key(pos0 + t) ..= pos0 + t
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    scale: f32,       // 1 / sqrt(head_dim)
    kv_scales: u32,   // KV_Q8: word offset of the per-(position, kv head) scales
    chunk: u32,       // SPLIT, MERGE: keys per split
    window: u32,      // keys each query sees (itself included); 0 = the whole cache
    eps: f32,         // attention_decode.wgsl's q/k norm epsilon (unused here)
    _pad0: u32,
    _pad1: u32,
}

// The first key a query at position `pos` sees (`ops::first_key`).
fn first_key(pos: u32) -> u32 {
    if (p.window == 0u || pos + 1u <= p.window) {
        return 0u;
    }
    return pos + 1u - p.window;
}

// Splits of the span of keys the pass's tokens see: from the first token's first key to the
// last token (the first token's window starts earliest, the last token's keys end latest).
fn n_splits() -> u32 {
    return (p.pos0 + p.n_tokens - first_key(p.pos0) + p.chunk - 1u) / p.chunk;
}

#ifdef MERGE
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;   // [n_tokens, H, splits, D + 2]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [n_tokens, H * D]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let g = group_index(wg, nwg); // t * H + h
    if (g >= p.n_tokens * p.n_heads) {
        return;
    }
    let d = p.head_dim;
    let ns = n_splits();
    let base = g * ns * (d + 2u);
    // Splits past a token's last key, or before its first, hold (0, -3e38, 0) and weigh
    // nothing (every token sees at least itself, so some split holds a real maximum).
    var m = -3.0e38;
    for (var s = 0u; s < ns; s++) {
        m = max(m, partials[base + s * (d + 2u) + d]);
    }
    var l = 0.0;
    for (var s = 0u; s < ns; s++) {
        let ps = base + s * (d + 2u);
        l += partials[ps + d + 1u] * exp(partials[ps + d] - m);
    }
    for (var dd = li; dd < d; dd += WG) {
        var acc = 0.0;
        for (var s = 0u; s < ns; s++) {
            let ps = base + s * (d + 2u);
            acc += partials[ps + dd] * exp(partials[ps + d] - m);
        }
        out[g * d + dd] = acc / l;
    }
}
#else

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;          // [n_tokens, H * D]
#ifdef KV_F16
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;    // [context, KVH * D / 2] f16 pairs
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;    // [context, KVH * D / 2] f16 pairs
fn v_at(i: u32) -> f32 {
    return half_of(v_cache[i / 2u], i);
}
#else
#ifdef KV_Q8
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;    // [context, KVH * D / 4] int8 quads, then scales
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;    // [context, KVH * D / 4] int8 quads, then scales
fn v_at(i: u32) -> f32 {
    return q8_quad(v_cache[i / 4u])[i & 3u] * bitcast<f32>(v_cache[p.kv_scales + i / p.head_dim]);
}
#else
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;    // [context, KVH * D]
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;    // [context, KVH * D]
fn v_at(i: u32) -> f32 {
    return v_cache[i];
}
#endif
#endif
#ifdef SPLIT
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // partials [n_tokens, H, splits, D + 2]
#else
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [n_tokens, H * D]
#endif

var<workgroup> qs: array<f32, HEAD_DIM>;
var<workgroup> scores: array<f32, WG>;
var<workgroup> weights: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
#ifdef SPLIT
    let ns = n_splits();
    let th = group_index(wg, nwg) / ns;
    let split = group_index(wg, nwg) % ns;
#else
    let th = group_index(wg, nwg);
#endif
    let t = th / p.n_heads;
    let h = th % p.n_heads;
    if (t >= p.n_tokens) {
        return;
    }
    let d = p.head_dim;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let kv_stride = p.n_kv_heads * d;
    let qb = t * p.n_heads * d + h * d;
    for (var i = li; i < d; i += WG) {
        qs[i] = q[qb + i] * p.scale;
    }
    workgroupBarrier();
    // Keys key0 .. n_keys (exclusive): the token's window, within this split's block.
#ifdef SPLIT
    let split0 = first_key(p.pos0) + split * p.chunk;
    let key0 = max(split0, first_key(p.pos0 + t));
    let n_keys = min(p.pos0 + t + 1u, split0 + p.chunk);
#else
    let key0 = first_key(p.pos0 + t);
    let n_keys = p.pos0 + t + 1u;
#endif
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_THREAD>;
    for (var j0 = key0; j0 < n_keys; j0 += WG) {
        let j = j0 + li;
        var s = -3.0e38;
        if (j < n_keys) {
            let kb = j * kv_stride + kvh * d;
            var score = 0.0;
#ifdef KV_F16
            for (var i = 0u; i < HEAD_DIM; i += 2u) {
                let kv = unpack2x16float(k_cache[(kb + i) / 2u]);
                score += qs[i] * kv.x + qs[i + 1u] * kv.y;
            }
#else
#ifdef KV_Q8
            for (var i = 0u; i < HEAD_DIM; i += 4u) {
                let kq = q8_quad(k_cache[(kb + i) / 4u]);
                score += dot(kq, vec4<f32>(qs[i], qs[i + 1u], qs[i + 2u], qs[i + 3u]));
            }
            score *= bitcast<f32>(k_cache[p.kv_scales + kb / d]);
#else
            for (var i = 0u; i < HEAD_DIM; i++) {
                score += qs[i] * k_cache[kb + i];
            }
#endif
#endif
            s = score;
        }
        scores[li] = s;
        workgroupBarrier();
        // Whole tiles (keys past the last score -3e38 and weigh 0): loops of a constant
        // length, which compilers unroll so that many loads are in flight at once.
        var mt = m;
        for (var jj = 0u; jj < WG; jj++) {
            mt = max(mt, scores[jj]);
        }
        var e = 0.0;
        if (j < n_keys) {
            e = exp(s - mt);
        }
        weights[li] = e;
        workgroupBarrier();
        let corr = exp(m - mt);
        var tile_sum = 0.0;
        for (var jj = 0u; jj < WG; jj++) {
            tile_sum += weights[jj];
        }
        l = l * corr + tile_sum;
        // The tile's last row in the cache: rows past it are read as that row (weight 0).
        let last = min(j0 + WG, n_keys) - 1u;
        for (var e_i = 0u; e_i < DIMS_PER_THREAD; e_i++) {
            let dd = li + e_i * WG;
            if (dd < d) {
                var a = acc[e_i] * corr;
                for (var jj = 0u; jj < WG; jj++) {
                    a += weights[jj] * v_at(min(j0 + jj, last) * kv_stride + kvh * d + dd);
                }
                acc[e_i] = a;
            }
        }
        m = mt;
        workgroupBarrier();
    }
#ifdef SPLIT
    let ob = (th * ns + split) * (d + 2u);
    for (var e_i = 0u; e_i < DIMS_PER_THREAD; e_i++) {
        let dd = li + e_i * WG;
        if (dd < d) {
            out[ob + dd] = acc[e_i];
        }
    }
    if (li == 0u) {
        out[ob + d] = m;
        out[ob + d + 1u] = l;
    }
#else
    for (var e_i = 0u; e_i < DIMS_PER_THREAD; e_i++) {
        let dd = li + e_i * WG;
        if (dd < d) {
            out[qb + dd] = acc[e_i] / l;
        }
    }
#endif
}
#endif

