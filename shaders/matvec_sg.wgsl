// y = W x (+ bias) (+= y) for a few tokens, one subgroup per output row: the lanes read
// consecutive parts of the row (f16: 4 words at a time; q8/q4: one group of 32 weights at a
// time) and subgroupAdd sums them, with no workgroup barrier. Used where the adapter has
// subgroups of one fixed size SG.
// (wgpu's naga takes subgroup builtins with Features::SUBGROUP and rejects `enable subgroups;`)
#include "common/grid.wgsl"
#include "common/linear.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let rows_per_wg: u32 = WG / SG;
    let blocks = (p.rows + rows_per_wg - 1u) / rows_per_wg;
    let g = group_index(wg, nwg);
    let t = g / blocks;
    if (t >= p.n_tokens) {
        return;
    }
    let r = (g % blocks) * rows_per_wg + li / SG;
    var acc = 0.0;
    if (r < p.rows) {
        let xb = (p.x_row0 + t) * p.cols;
        let wb = r * p.stride;
#ifdef W_QUANT
        // Lane takes group grp (32 weights, one scale), then grp + SG, ...
        for (var grp = lane; grp < p.cols / 32u; grp += SG) {
            acc += group_dot(r, grp, xb + grp * 32u);
        }
#else
        // Each lane takes 4 consecutive words (8 weights) at a time; a tail of fewer than
        // 4 * SG words is taken one word per lane.
        let quads = p.stride / (4u * SG) * (4u * SG);
        for (var k = 4u * lane; k < quads; k += 4u * SG) {
            let a = unpack2x16float(w[wb + k]);
            let b = unpack2x16float(w[wb + k + 1u]);
            let c = unpack2x16float(w[wb + k + 2u]);
            let d = unpack2x16float(w[wb + k + 3u]);
            let xi = xb + 2u * k;
            acc += dot(vec4<f32>(a, b), vec4<f32>(x[xi], x[xi + 1u], x[xi + 2u], x[xi + 3u]))
                + dot(vec4<f32>(c, d), vec4<f32>(x[xi + 4u], x[xi + 5u], x[xi + 6u], x[xi + 7u]));
        }
        for (var k = quads + lane; k < p.stride; k += SG) {
            let f = unpack2x16float(w[wb + k]);
            acc += f.x * x[xb + 2u * k] + f.y * x[xb + 2u * k + 1u];
        }
#endif
    }
    let total = subgroupAdd(acc);
    if (lane == 0u && r < p.rows) {
        store(t, r, total);
    }
}
