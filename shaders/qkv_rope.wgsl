// Split the fused q|k|v projection of each token, apply (Qwen3) per-head RMSNorm to q and k,
// rotate q and k with RoPE (rotate-half), scale q by the logN factor, and write q to `q_out`
// and k, v straight into this layer's KV cache row for the token's position.
// KV cache formats: f32 (default); KV_F16: f16 pairs in u32; KV_Q8: int8 quads in u32 with one
// f32 scale per (position, kv head) stored after all values (word offset p.kv_scales).
// One workgroup per (token, head) over the n_heads + 2 * n_kv_heads heads of a token.
#include "common/grid.wgsl"
#include "common/reduce.wgsl"
#include "common/packing.wgsl"

struct Params {
    n_tokens: u32,
    pos0: u32,        // position of the first token
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    eps: f32,         // Qwen3 q/k norm epsilon
    kv_scales: u32,   // KV_Q8: word offset of the scales in each cache buffer
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;            // [n_tokens, (H + 2 KVH) * D]
@group(0) @binding(2) var<storage, read> rope: array<f32>;           // [n_tokens, D + 1]: cos[D/2], sin[D/2], q scale
@group(0) @binding(3) var<storage, read_write> q_out: array<f32>;    // [n_tokens, H * D]
#ifdef KV_PACKED
@group(0) @binding(4) var<storage, read_write> k_cache: array<u32>;  // [context, KVH * D] packed
@group(0) @binding(5) var<storage, read_write> v_cache: array<u32>;  // [context, KVH * D] packed
// The head's finished k or v values, packed once all threads have written theirs.
var<workgroup> stage: array<f32, HEAD_DIM>;
#else
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>;  // [context, KVH * D]
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>;  // [context, KVH * D]
#endif
#ifdef QK_NORM
@group(0) @binding(6) var<storage, read> qk_norm: array<f32>;        // [2 * D]: q weights, then k weights
#endif

#ifdef KV_Q8
// max |stage[0..d]| over the workgroup.
fn stage_amax(li: u32, d: u32) -> f32 {
    var m = 0.0;
    for (var i = li; i < d; i += WG) {
        m = max(m, abs(stage[i]));
    }
    return reduce_max(li, m);
}
#endif

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let heads = p.n_heads + 2u * p.n_kv_heads;
    let g = group_index(wg, nwg);
    let t = g / heads;
    let h = g % heads;
    if (t >= p.n_tokens) {
        return;
    }
    let d = p.head_dim;
    let half = d / 2u;
    let src = t * heads * d + h * d;
    let is_v = h >= p.n_heads + p.n_kv_heads;
    if (is_v) {
#ifdef KV_PACKED
        for (var i = li; i < d; i += WG) {
            stage[i] = qkv[src + i];
        }
#else
        let dst = (p.pos0 + t) * p.n_kv_heads * d + (h - p.n_heads - p.n_kv_heads) * d;
        for (var i = li; i < d; i += WG) {
            v_cache[dst + i] = qkv[src + i];
        }
        return;
#endif
    } else {
#ifdef QK_NORM
        var s = 0.0;
        for (var i = li; i < d; i += WG) {
            let v = qkv[src + i];
            s += v * v;
        }
        let scale = inverseSqrt(reduce_sum(li, s) / f32(d) + p.eps);
        let wb = select(d, 0u, h < p.n_heads);
#endif
        let tb = t * (d + 1u);
        for (var i = li; i < half; i += WG) {
            var x1 = qkv[src + i];
            var x2 = qkv[src + i + half];
#ifdef QK_NORM
            x1 = x1 * scale * qk_norm[wb + i];
            x2 = x2 * scale * qk_norm[wb + i + half];
#endif
            let c = rope[tb + i];
            let sn = rope[tb + half + i];
            let o1 = x1 * c - x2 * sn;
            let o2 = x2 * c + x1 * sn;
            if (h < p.n_heads) {
                let qs = rope[tb + d];
                let dst = t * p.n_heads * d + h * d;
                q_out[dst + i] = o1 * qs;
                q_out[dst + i + half] = o2 * qs;
            } else {
#ifdef KV_PACKED
                stage[i] = o1;
                stage[i + half] = o2;
#else
                let dst = (p.pos0 + t) * p.n_kv_heads * d + (h - p.n_heads) * d;
                k_cache[dst + i] = o1;
                k_cache[dst + i + half] = o2;
#endif
            }
        }
    }
#ifdef KV_PACKED
    if (h < p.n_heads) {
        return;
    }
    // A k or v head: pack the staged values into the cache.
    workgroupBarrier();
    let kvh = select(h - p.n_heads, h - p.n_heads - p.n_kv_heads, is_v);
    let slot = (p.pos0 + t) * p.n_kv_heads + kvh;  // (position, kv head)
#ifdef KV_F16
    for (var i = li; i < d / 2u; i += WG) {
        let word = pack2x16float(vec2<f32>(stage[2u * i], stage[2u * i + 1u]));
        if (is_v) {
            v_cache[slot * d / 2u + i] = word;
        } else {
            k_cache[slot * d / 2u + i] = word;
        }
    }
#endif
#ifdef KV_Q8
    let scale = stage_amax(li, d) / 127.0;
    let inv = select(0.0, 1.0 / scale, scale > 0.0);
    for (var i = li; i < d / 4u; i += WG) {
        let word = q8_word(vec4<f32>(stage[4u * i], stage[4u * i + 1u], stage[4u * i + 2u], stage[4u * i + 3u]), inv);
        if (is_v) {
            v_cache[slot * d / 4u + i] = word;
        } else {
            k_cache[slot * d / 4u + i] = word;
        }
    }
    if (li == 0u) {
        if (is_v) {
            v_cache[p.kv_scales + slot] = bitcast<u32>(scale);
        } else {
            k_cache[p.kv_scales + slot] = bitcast<u32>(scale);
        }
    }
#endif
#endif
}
