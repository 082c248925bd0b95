// SwiGLU: out[t, i] = silu(gate[t, i]) * up[t, i], from the fused gate/up projection's
// rows [gate | up].
#include "common/grid.wgsl"

struct Params {
    n_tokens: u32,
    width: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate_up: array<f32>;   // [n_tokens, 2 width]
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // [n_tokens, width]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = group_index(wg, nwg) * WG + li;
    if (i >= p.n_tokens * p.width) {
        return;
    }
    let t = i / p.width;
    let c = i % p.width;
    let g = gate_up[t * 2u * p.width + c];
    out[i] = g / (1.0 + exp(-g)) * gate_up[t * 2u * p.width + p.width + c];
}
