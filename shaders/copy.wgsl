// Streaming copy, 16 bytes per thread: the bandwidth yardstick for the decode roofline.
#include "common/grid.wgsl"

struct Params {
    n: u32,  // vec4<u32> elements
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = group_index(wg, nwg) * WG + li;
    if (i < p.n) {
        dst[i] = src[i];
    }
}
