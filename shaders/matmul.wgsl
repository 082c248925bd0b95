// Y = X W^T (+ bias) (+= Y) for many tokens (prefill), tiled: each workgroup computes a
// TILE x TILE block of (token, output row) from TILE-wide slices of X and W in workgroup memory.
#include "common/grid.wgsl"

#include "common/linear.wgsl"

var<workgroup> xs: array<array<f32, TILE>, TILE>;        // [token][k]
var<workgroup> ws: array<array<f32, TILE_PAD>, TILE>;    // [row][k]
#ifdef SWIGLU
var<workgroup> ws_up: array<array<f32, TILE_PAD>, TILE>; // [row][k]: the up rows
#endif
#ifdef NORM
var<workgroup> sum_sq: array<array<f32, TILE_PAD>, TILE>; // [token][loader]: squares of x
#endif

@compute @workgroup_size(TILE, TILE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = group_index(wg, nwg);
    let row_tiles = (p.rows + TILE - 1u) / TILE;
    let tt = g / row_tiles;
    let tr = g % row_tiles;
    if (tt * TILE >= p.n_tokens) {
        return;
    }
    let t = tt * TILE + lid.y;   // this thread's token
    let r = tr * TILE + lid.x;   // this thread's output row
    let wr = tr * TILE + lid.y;  // the W row this thread loads
    var acc = 0.0;
#ifdef SWIGLU
    var acc_up = 0.0;
#endif
    var sq = 0.0; // NORM: this thread's share of token t's sum of squares
    for (var k0 = 0u; k0 < p.cols; k0 += TILE) {
        let k = k0 + lid.x;
        var xv = 0.0;
        if (t < p.n_tokens && k < p.cols) {
            xv = x[(p.x_row0 + t) * p.cols + k];
#ifdef NORM
            sq += xv * xv;
            xv *= nw[k];
#endif
        }
        xs[lid.y][lid.x] = xv;
        var wv = 0.0;
        if (wr < p.rows && k < p.cols) {
            wv = w_at(wr, k);
        }
        ws[lid.y][lid.x] = wv;
#ifdef SWIGLU
        var uv = 0.0;
        if (wr < p.rows && k < p.cols) {
            uv = w_at(p.up_row + wr, k);
        }
        ws_up[lid.y][lid.x] = uv;
#endif
        workgroupBarrier();
        for (var kk = 0u; kk < TILE; kk++) {
            acc += xs[lid.y][kk] * ws[lid.x][kk];
#ifdef SWIGLU
            acc_up += xs[lid.y][kk] * ws_up[lid.x][kk];
#endif
        }
        workgroupBarrier();
    }
#ifdef NORM
    sum_sq[lid.y][lid.x] = sq;
    workgroupBarrier();
    var total = 0.0;
    for (var kk = 0u; kk < TILE; kk++) {
        total += sum_sq[lid.y][kk];
    }
    let scale = norm_scale(total);
    acc *= scale;
#ifdef SWIGLU
    acc_up *= scale;
#endif
#endif
#ifdef SWIGLU
    acc = swiglu(acc, acc_up);
#endif
    if (t < p.n_tokens && r < p.rows) {
        store(t, r, acc);
    }
}
