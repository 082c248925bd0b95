// Y = X W^T (+ bias) (+= Y) for many tokens (prefill), tiled: each workgroup computes a
// TILE x TILE block of (token, output row) from TILE-wide slices of X and W in workgroup memory.
#include "common/grid.wgsl"

struct Params {
    n_tokens: u32,
    cols: u32,      // input width (the k dimension)
    rows: u32,      // rows in this chunk of W
    stride: u32,    // words per W row
    out_cols: u32,  // width of an output row (all chunks)
    row0: u32,      // output column of this chunk's first row
    x_row0: u32,    // first input row to read
    scales: u32,    // word offset of the scales (quantized formats)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [.., cols]
@group(0) @binding(2) var<storage, read> w: array<u32>;          // [rows, stride] values, then scales
#ifdef BIAS
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // [out_cols]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#else
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [n_tokens, out_cols]
#endif

#include "common/weights.wgsl"

var<workgroup> xs: array<array<f32, TILE>, TILE>;        // [token][k]
var<workgroup> ws: array<array<f32, TILE_PAD>, TILE>;    // [row][k]

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
    for (var k0 = 0u; k0 < p.cols; k0 += TILE) {
        let k = k0 + lid.x;
        var xv = 0.0;
        if (t < p.n_tokens && k < p.cols) {
            xv = x[(p.x_row0 + t) * p.cols + k];
        }
        xs[lid.y][lid.x] = xv;
        var wv = 0.0;
        if (wr < p.rows && k < p.cols) {
            wv = w_at(wr, k);
        }
        ws[lid.y][lid.x] = wv;
        workgroupBarrier();
        for (var kk = 0u; kk < TILE; kk++) {
            acc += xs[lid.y][kk] * ws[lid.x][kk];
        }
        workgroupBarrier();
    }
    if (t >= p.n_tokens || r >= p.rows) {
        return;
    }
#ifdef BIAS
    acc += bias[p.row0 + r];
#endif
    let o = t * p.out_cols + p.row0 + r;
#ifdef ACCUMULATE
    out[o] = out[o] + acc;
#else
    out[o] = acc;
#endif
}
