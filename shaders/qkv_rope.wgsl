// Split the fused q|k|v projection of each token, apply (Qwen3) per-head RMSNorm to q and k,
// rotate q and k with RoPE (rotate-half), scale q by the logN factor, and write q to `q_out`
// and k, v straight into this layer's KV cache row for the token's position (f32, or f16
// pairs packed in u32 with KV_F16).
// One workgroup per (token, head) over the n_heads + 2 * n_kv_heads heads of a token.
#include "common/grid.wgsl"

struct Params {
    n_tokens: u32,
    pos0: u32,        // position of the first token
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    eps: f32,         // Qwen3 q/k norm epsilon
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;            // [n_tokens, (H + 2 KVH) * D]
@group(0) @binding(2) var<storage, read> rope: array<f32>;           // [n_tokens, D + 1]: cos[D/2], sin[D/2], q scale
@group(0) @binding(3) var<storage, read_write> q_out: array<f32>;    // [n_tokens, H * D]
#ifdef KV_F16
@group(0) @binding(4) var<storage, read_write> k_cache: array<u32>;  // [context, KVH * D / 2] f16 pairs
@group(0) @binding(5) var<storage, read_write> v_cache: array<u32>;  // [context, KVH * D / 2] f16 pairs
var<workgroup> k_rot: array<f32, HEAD_DIM>;
#else
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>;  // [context, KVH * D]
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>;  // [context, KVH * D]
#endif
#ifdef QK_NORM
@group(0) @binding(6) var<storage, read> qk_norm: array<f32>;        // [2 * D]: q weights, then k weights
var<workgroup> red: array<f32, WG>;
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
    let kv_row = (p.pos0 + t) * p.n_kv_heads * d;
    if (h >= p.n_heads + p.n_kv_heads) {
        let dst = kv_row + (h - p.n_heads - p.n_kv_heads) * d;
#ifdef KV_F16
        for (var i = li; i < d / 2u; i += WG) {
            v_cache[dst / 2u + i] = pack2x16float(vec2<f32>(qkv[src + 2u * i], qkv[src + 2u * i + 1u]));
        }
#else
        for (var i = li; i < d; i += WG) {
            v_cache[dst + i] = qkv[src + i];
        }
#endif
        return;
    }
#ifdef QK_NORM
    var s = 0.0;
    for (var i = li; i < d; i += WG) {
        let v = qkv[src + i];
        s += v * v;
    }
    red[li] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (li < k) {
            red[li] += red[li + k];
        }
        workgroupBarrier();
    }
    let scale = inverseSqrt(red[0] / f32(d) + p.eps);
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
#ifdef KV_F16
            k_rot[i] = o1;
            k_rot[i + half] = o2;
#else
            let dst = kv_row + (h - p.n_heads) * d;
            k_cache[dst + i] = o1;
            k_cache[dst + i + half] = o2;
#endif
        }
    }
#ifdef KV_F16
    // Pack the rotated key in pairs (each pair spans two threads' outputs).
    workgroupBarrier();
    if (h >= p.n_heads) {
        let dst = kv_row + (h - p.n_heads) * d;
        for (var i = li; i < d / 2u; i += WG) {
            k_cache[dst / 2u + i] = pack2x16float(vec2<f32>(k_rot[2u * i], k_rot[2u * i + 1u]));
        }
    }
#endif
}
