// Test-only (build.rs leaves *_check.wgsl out of the wasm module): one common/softfloat.wgsl
// operation over arrays of f32 bit patterns, so that tests/encoder.rs can compare every
// routine with the CPU's own IEEE arithmetic.
// op: 0 add, 1 sub, 2 mul, 3 div, 4 f32->f16 bits, 5 f16 bits->f32, 6 round (halves away),
// 7 round to even through 1.5 * 2^23, 8 as i32 (of round(a)).
#include "common/grid.wgsl"
#include "common/softfloat.wgsl"

struct Params {
    n: u32,
    op: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = group_index(wg, nwg) * 64u + li;
    if (i >= p.n) {
        return;
    }
    let x = a[i];
    let y = b[i];
    var r = 0u;
    switch p.op {
        case 0u: { r = sf_add(x, y); }
        case 1u: { r = sf_sub(x, y); }
        case 2u: { r = sf_mul(x, y); }
        case 3u: { r = sf_div(x, y); }
        case 4u: { r = sf_to_f16(x); }
        case 5u: { r = sf_from_f16(x & 0xffffu); }
        case 6u: { r = sf_round_away(x); }
        case 7u: { r = sf_sub(sf_add(x, 0x4b400000u), 0x4b400000u); }
        default: { r = u32(sf_to_i32(sf_round_away(x))); }
    }
    out[i] = r;
}
