// Attention for several query rows at once against tiles of keys: each key and value is
// read once for every row of a workgroup. A workgroup takes TOKENS tokens (a tile of a
// prompt, or a decode step's few) of the GROUP query heads that share one kv head (GQA):
// ROWS = TOKENS * GROUP rows, row r = tt * GROUP + g being token t0 + tt's query head
// kvh * GROUP + g. One workgroup per (token tile, kv head, split of the keys).
//
// Keys are taken WG at a time: a thread scores one key against every row, then each row's
// tile is folded into running (max, sum, output) values (online softmax); a thread keeps its
// dimensions of every row's output, so each value is read once for all rows. With SPLIT
// ("flash decoding": a decode step's few workgroups would leave a GPU idle) it writes
// unnormalised partials, the layout `attention.wgsl`'s MERGE pass combines; else the output.
// Windows as in `attention.wgsl`: a query at position i sees keys first_key(i) ..= i, and
// splits cover only the span the pass's tokens see.
//
// With FUSED (a decode step: one tile of all the pass's tokens) the kernel also does
// `qkv_rope.wgsl`'s work: it builds the queries from the raw q|k|v projection ((Qwen3) per-head
// RMSNorm, RoPE, the logN scale), and the pass's own keys and values rounded as the cache
// stores them, read from workgroup memory (never from the cache rows this dispatch writes);
// the workgroup of the last split writes them to the cache. Without FUSED the queries come
// rotated from `q` and every key from the cache (`qkv_rope.wgsl` ran before).
#include "common/grid.wgsl"
#include "common/reduce.wgsl"
#include "common/packing.wgsl"

struct Params {
    n_tokens: u32,
    pos0: u32,        // position of the first token
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    scale: f32,       // 1 / sqrt(head_dim)
    kv_scales: u32,   // KV_Q8: word offset of the per-(position, kv head) scales
    chunk: u32,       // SPLIT: keys per split
    window: u32,      // keys each query sees (itself included); 0 = the whole cache
    eps: f32,         // QK_NORM: the q/k norm epsilon
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef FUSED
@group(0) @binding(1) var<storage, read> qkv: array<f32>;            // [TOKENS, (H + 2 KVH) * D]
@group(0) @binding(2) var<storage, read> rope: array<f32>;           // [TOKENS, D + 1]: cos[D/2], sin[D/2], q scale
#ifdef KV_PACKED
@group(0) @binding(3) var<storage, read_write> k_cache: array<u32>;  // [context, KVH * D] packed (then Q8 scales)
@group(0) @binding(4) var<storage, read_write> v_cache: array<u32>;
#else
@group(0) @binding(3) var<storage, read_write> k_cache: array<f32>;  // [context, KVH * D]
@group(0) @binding(4) var<storage, read_write> v_cache: array<f32>;
#endif
@group(0) @binding(5) var<storage, read_write> out: array<f32>;      // SPLIT: partials [n_tokens, H, splits, D + 2]; else [n_tokens, H * D]
#ifdef QK_NORM
@group(0) @binding(6) var<storage, read> qk_norm: array<f32>;        // [2 * D]: q weights, then k weights
#endif
var<workgroup> new_k: array<vec4<f32>, TOKENS * HEAD_DIM / 4u>; // the pass's keys and values as cached
var<workgroup> new_v: array<f32, TOKENS * HEAD_DIM>;
var<workgroup> stage: array<f32, HEAD_DIM>;                  // one head being built
#else
@group(0) @binding(1) var<storage, read> q: array<f32>;              // [n_tokens, H * D], rotated
#ifdef KV_PACKED
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;        // [context, KVH * D] packed (then Q8 scales)
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;
#else
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;        // [context, KVH * D]
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;
#endif
@group(0) @binding(4) var<storage, read_write> out: array<f32>;      // SPLIT: partials [n_tokens, H, splits, D + 2]; else [n_tokens, H * D]
#endif

// Quads of dimensions of a head.
const NQ: u32 = HEAD_DIM / 4u;

var<workgroup> qs: array<vec4<f32>, ROWS * HEAD_DIM / 4u>;   // the scaled, rotated queries
var<workgroup> w: array<f32, ROWS * WG>;                    // a tile's scores, then its weights
var<workgroup> row_m: array<f32, ROWS>;                      // running max per row
var<workgroup> row_l: array<f32, ROWS>;                      // running sum per row
var<workgroup> row_corr: array<f32, ROWS>;                   // this tile's rescale of the old sums

fn first_key(pos: u32) -> u32 {
    if (p.window == 0u || pos + 1u <= p.window) {
        return 0u;
    }
    return pos + 1u - p.window;
}

fn n_splits() -> u32 {
#ifdef SPLIT
    return (p.pos0 + p.n_tokens - first_key(p.pos0) + p.chunk - 1u) / p.chunk;
#else
    return 1u;
#endif
}

#ifdef FUSED
// The raw projection of head `h` (0..H + 2 KVH) of token `t` into `stage`, with the q or k
// norm (`wb`: its weights' offset) if any. Uniform control flow (barriers).
fn load_head(li: u32, t: u32, h: u32, norm: bool, wb: u32) {
    let d = p.head_dim;
    let src = t * (p.n_heads + 2u * p.n_kv_heads) * d + h * d;
    var s = 0.0;
    for (var i = li; i < d; i += WG) {
        let v = qkv[src + i];
        stage[i] = v;
        s += v * v;
    }
#ifdef QK_NORM
    let scale = inverseSqrt(reduce_sum(li, s) / f32(d) + p.eps);
    if (norm) {
        for (var i = li; i < d; i += WG) {
            stage[i] = stage[i] * scale * qk_norm[wb + i];
        }
    }
#endif
    workgroupBarrier();
}

// RoPE (rotate-half) of `stage` with token t's table row, times `mul`, pair by pair:
// returns (o1, o2) for pair i; callers write them where they belong.
fn rotated(t: u32, i: u32) -> vec2<f32> {
    let d = p.head_dim;
    let half = d / 2u;
    let tb = t * (d + 1u);
    let x1 = stage[i];
    let x2 = stage[i + half];
    let c = rope[tb + i];
    let sn = rope[tb + half + i];
    return vec2<f32>(x1 * c - x2 * sn, x2 * c + x1 * sn);
}

// Quad `i` of `stage`. Workgroup vectors are written a whole quad by one thread: several
// threads writing components of one vector is a read-modify-write race on some backends.
fn stage_quad(i: u32) -> vec4<f32> {
    return vec4<f32>(stage[4u * i], stage[4u * i + 1u], stage[4u * i + 2u], stage[4u * i + 3u]);
}

// `stage` rounded as the cache stores it, back into `stage`; writes it to the cache row
// `slot` (position * KVH + kv head) of k or v when `write`. Uniform control flow.
fn round_and_store(li: u32, slot: u32, is_v: bool, write: bool) {
    let d = p.head_dim;
#ifdef KV_F16
    for (var i = li; i < d / 2u; i += WG) {
        let word = pack2x16float(vec2<f32>(stage[2u * i], stage[2u * i + 1u]));
        let back = unpack2x16float(word);
        stage[2u * i] = back.x;
        stage[2u * i + 1u] = back.y;
        if (write) {
            if (is_v) {
                v_cache[slot * d / 2u + i] = word;
            } else {
                k_cache[slot * d / 2u + i] = word;
            }
        }
    }
#else
#ifdef KV_Q8
    var m = 0.0;
    for (var i = li; i < d; i += WG) {
        m = max(m, abs(stage[i]));
    }
    let scale = reduce_max(li, m) / 127.0;
    let inv = select(0.0, 1.0 / scale, scale > 0.0);
    for (var i = li; i < d / 4u; i += WG) {
        let word = q8_word(vec4<f32>(stage[4u * i], stage[4u * i + 1u], stage[4u * i + 2u], stage[4u * i + 3u]), inv);
        let back = q8_quad(word) * scale;
        for (var c = 0u; c < 4u; c++) {
            stage[4u * i + c] = back[c];
        }
        if (write) {
            if (is_v) {
                v_cache[slot * d / 4u + i] = word;
            } else {
                k_cache[slot * d / 4u + i] = word;
            }
        }
    }
    if (write && li == 0u) {
        if (is_v) {
            v_cache[p.kv_scales + slot] = bitcast<u32>(scale);
        } else {
            k_cache[p.kv_scales + slot] = bitcast<u32>(scale);
        }
    }
#else
    if (write) {
        for (var i = li; i < d; i += WG) {
            if (is_v) {
                v_cache[slot * d + i] = stage[i];
            } else {
                k_cache[slot * d + i] = stage[i];
            }
        }
    }
#endif
#endif
    workgroupBarrier();
}

#endif

// Key j's scores against every row, into `sc` (keys of this pass from `new_k`).
fn score_key(j: u32, kvh: u32, sc: ptr<function, array<f32, ROWS>>) {
    let d4 = HEAD_DIM / 4u;
#ifdef FUSED
    if (j >= p.pos0) {
        let kb = (j - p.pos0) * d4;
        for (var i = 0u; i < d4; i++) {
            let k = new_k[kb + i];
            for (var r = 0u; r < ROWS; r++) {
                (*sc)[r] += dot(k, qs[r * d4 + i]);
            }
        }
        return;
    }
#endif
    let slot = j * p.n_kv_heads + kvh;
#ifdef KV_F16
    for (var i = 0u; i < d4; i++) {
        let a = unpack2x16float(k_cache[slot * d4 * 2u + 2u * i]);
        let b = unpack2x16float(k_cache[slot * d4 * 2u + 2u * i + 1u]);
        let k = vec4<f32>(a, b);
        for (var r = 0u; r < ROWS; r++) {
            (*sc)[r] += dot(k, qs[r * d4 + i]);
        }
    }
#else
#ifdef KV_Q8
    for (var i = 0u; i < d4; i++) {
        let k = q8_quad(k_cache[slot * d4 + i]);
        for (var r = 0u; r < ROWS; r++) {
            (*sc)[r] += dot(k, qs[r * d4 + i]);
        }
    }
    let s = bitcast<f32>(k_cache[p.kv_scales + slot]);
    for (var r = 0u; r < ROWS; r++) {
        (*sc)[r] *= s;
    }
#else
    for (var i = 0u; i < d4; i++) {
        let b = slot * HEAD_DIM + 4u * i;
        let k = vec4<f32>(k_cache[b], k_cache[b + 1u], k_cache[b + 2u], k_cache[b + 3u]);
        for (var r = 0u; r < ROWS; r++) {
            (*sc)[r] += dot(k, qs[r * d4 + i]);
        }
    }
#endif
#endif
}

// Dimensions 4 quad .. 4 quad + 3 of key j's value (keys of this pass from `new_v`): one
// word of a q8 cache, two of f16.
fn value4(j: u32, kvh: u32, quad: u32) -> vec4<f32> {
#ifdef FUSED
    if (j >= p.pos0) {
        let b = (j - p.pos0) * HEAD_DIM + 4u * quad;
        return vec4<f32>(new_v[b], new_v[b + 1u], new_v[b + 2u], new_v[b + 3u]);
    }
#endif
    let slot = j * p.n_kv_heads + kvh;
#ifdef KV_F16
    let b = slot * (HEAD_DIM / 2u) + 2u * quad;
    return vec4<f32>(unpack2x16float(v_cache[b]), unpack2x16float(v_cache[b + 1u]));
#else
#ifdef KV_Q8
    return q8_quad(v_cache[slot * (HEAD_DIM / 4u) + quad]) * bitcast<f32>(v_cache[p.kv_scales + slot]);
#else
    let b = slot * HEAD_DIM + 4u * quad;
    return vec4<f32>(v_cache[b], v_cache[b + 1u], v_cache[b + 2u], v_cache[b + 3u]);
#endif
#endif
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let ns = n_splits();
    let n_tiles = (p.n_tokens + TOKENS - 1u) / TOKENS;
    let g = group_index(wg, nwg);
    // Uniform per workgroup, so the early return leaves no barrier behind.
    if (g >= n_tiles * p.n_kv_heads * ns) {
        return;
    }
    let split = g % ns;
    let kvh = (g / ns) % p.n_kv_heads;
    let t0 = (g / ns / p.n_kv_heads) * TOKENS;
    let t_last = min(t0 + TOKENS, p.n_tokens) - 1u;
    let d = p.head_dim;

#ifdef FUSED
    let half = d / 2u;
    let last_split = split == ns - 1u;
    // 1. The queries of every row.
    for (var r = 0u; r < ROWS; r++) {
        let t = r / GROUP;
        load_head(li, t, kvh * GROUP + r % GROUP, true, 0u);
        let qscale = rope[t * (d + 1u) + d] * p.scale;
        // In place: each thread rotates the pairs it reads.
        for (var i = li; i < half; i += WG) {
            let o = rotated(t, i) * qscale;
            stage[i] = o.x;
            stage[i + half] = o.y;
        }
        workgroupBarrier();
        for (var i = li; i < NQ; i += WG) {
            qs[r * NQ + i] = stage_quad(i);
        }
        workgroupBarrier();
    }
    // 2. This pass's keys and values, as the cache holds them.
    for (var t = 0u; t < TOKENS; t++) {
        let slot = (p.pos0 + t) * p.n_kv_heads + kvh;
        load_head(li, t, p.n_heads + kvh, true, d);
        // In place: each thread rotates the pairs it reads.
        for (var i = li; i < half; i += WG) {
            let o = rotated(t, i);
            stage[i] = o.x;
            stage[i + half] = o.y;
        }
        workgroupBarrier();
        round_and_store(li, slot, false, last_split);
        for (var i = li; i < NQ; i += WG) {
            new_k[t * NQ + i] = stage_quad(i);
        }
        workgroupBarrier();
        load_head(li, t, p.n_heads + p.n_kv_heads + kvh, false, 0u);
        round_and_store(li, slot, true, last_split);
        for (var i = li; i < d; i += WG) {
            new_v[t * HEAD_DIM + i] = stage[i];
        }
    }
#else
    // The queries of every row (rows past the last token: zeros, and they see no key).
    for (var r = 0u; r < ROWS; r++) {
        let t = t0 + r / GROUP;
        let qb = (t * p.n_heads + kvh * GROUP + r % GROUP) * d;
        for (var i = li; i < NQ; i += WG) {
            var v = vec4<f32>();
            if (t < p.n_tokens) {
                v = vec4<f32>(q[qb + 4u * i], q[qb + 4u * i + 1u], q[qb + 4u * i + 2u], q[qb + 4u * i + 3u]) * p.scale;
            }
            qs[r * NQ + i] = v;
        }
    }
#endif
    for (var r = li; r < ROWS; r += WG) {
        row_m[r] = -3.0e38;
        row_l[r] = 0.0;
    }
    workgroupBarrier();

    // Keys key0 .. key_end (exclusive): from the tile's first token's first key to its last
    // token, within this split.
    var key0 = first_key(p.pos0 + t0);
    var key_end = p.pos0 + t_last + 1u;
#ifdef SPLIT
    let split0 = first_key(p.pos0) + split * p.chunk;
    key0 = max(key0, split0);
    key_end = min(key_end, split0 + p.chunk);
#endif
    // Values: a thread keeps QUADS_PER_THREAD quads of dimensions of every row's output,
    // over the keys of its lane (LANES lanes take a tile's keys in turn; summed at the end).
    let lane = select(0u, li / NQ, LANES > 1u);
    let quad0 = select(li, li % NQ, LANES > 1u);
    let v_thread = lane < LANES;
    var acc: array<vec4<f32>, ROWS * QUADS_PER_THREAD>;
    for (var j0 = key0; j0 < key_end; j0 += WG) {
        let j = j0 + li;
        var sc: array<f32, ROWS>;
        if (j < key_end) {
            score_key(j, kvh, &sc);
        }
        for (var r = 0u; r < ROWS; r++) {
            // Row r's token sees keys first_key(pos) ..= pos.
            let t = t0 + r / GROUP;
            let pos = p.pos0 + t;
            let seen = j < key_end && t < p.n_tokens && j <= pos && j >= first_key(pos);
            w[r * WG + li] = select(-3.0e38, sc[r], seen);
        }
        workgroupBarrier();
        // Each row's tile max, its old sums' rescale.
        for (var r = li; r < ROWS; r += WG) {
            var mt = row_m[r];
            for (var jj = 0u; jj < WG; jj++) {
                mt = max(mt, w[r * WG + jj]);
            }
            row_corr[r] = exp(row_m[r] - mt);
            row_m[r] = mt;
        }
        workgroupBarrier();
        for (var r = 0u; r < ROWS; r++) {
            let s = w[r * WG + li];
            w[r * WG + li] = select(0.0, exp(s - row_m[r]), s > -1.0e38);
        }
        workgroupBarrier();
        for (var r = li; r < ROWS; r += WG) {
            var sum = 0.0;
            for (var jj = 0u; jj < WG; jj++) {
                sum += w[r * WG + jj];
            }
            row_l[r] = row_l[r] * row_corr[r] + sum;
        }
        // Values: rows past the tile's last key are read as that key (weight 0).
        let last = min(j0 + WG, key_end) - 1u;
        if (v_thread) {
            for (var e = 0u; e < QUADS_PER_THREAD; e++) {
                let quad = quad0 + e * WG;
                if (quad < NQ) {
                    for (var r = 0u; r < ROWS; r++) {
                        acc[r * QUADS_PER_THREAD + e] *= row_corr[r];
                    }
                    for (var jj = lane; jj < WG; jj += LANES) {
                        let v = value4(min(j0 + jj, last), kvh, quad);
                        for (var r = 0u; r < ROWS; r++) {
                            acc[r * QUADS_PER_THREAD + e] += w[r * WG + jj] * v;
                        }
                    }
                }
            }
        }
        workgroupBarrier();
    }
    // The lanes' sums into lane 0's, through `qs` (the queries are no longer needed).
    for (var l = 1u; l < LANES; l++) {
        if (lane == l && quad0 < NQ) {
            for (var r = 0u; r < ROWS; r++) {
                qs[r * NQ + quad0] = acc[r];
            }
        }
        workgroupBarrier();
        if (lane == 0u && quad0 < NQ) {
            for (var r = 0u; r < ROWS; r++) {
                acc[r] += qs[r * NQ + quad0];
            }
        }
        workgroupBarrier();
    }

    for (var r = 0u; r < ROWS; r++) {
        let t = t0 + r / GROUP;
        if (t >= p.n_tokens) {
            break;
        }
        let th = t * p.n_heads + kvh * GROUP + r % GROUP; // (token, head)
#ifdef SPLIT
        let ob = (th * ns + split) * (d + 2u);
        let inv_l = 1.0;
        if (li == 0u) {
            out[ob + d] = row_m[r];
            out[ob + d + 1u] = row_l[r];
        }
#else
        let ob = th * d;
        let inv_l = 1.0 / row_l[r];
#endif
        if (lane == 0u) {
            for (var e = 0u; e < QUADS_PER_THREAD; e++) {
                let quad = quad0 + e * WG;
                if (quad < NQ) {
                    let o = acc[r * QUADS_PER_THREAD + e] * inv_l;
                    for (var c = 0u; c < 4u; c++) {
                        out[ob + 4u * quad + c] = o[c];
                    }
                }
            }
        }
    }
}
