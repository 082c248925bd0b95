// Embedding gather for one row-chunk of the table: out[t, :] = table[tokens[t], :] for the
// tokens whose id falls in [row0, row0 + rows). Other tokens are written by other chunks.
#include "common/grid.wgsl"

struct Params {
    n_tokens: u32,
    cols: u32,     // hidden_size
    row0: u32,     // first vocabulary row held by this chunk
    rows: u32,     // rows held by this chunk
    stride: u32,   // value words per table row
    scales: u32,   // word offset of the scales (quantized formats)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;      // [n_tokens]
@group(0) @binding(2) var<storage, read> w: array<u32>;           // [rows, stride] values, then scales
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // [n_tokens, cols]

#include "common/weights.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = group_index(wg, nwg) * WG + li;
    if (i >= p.n_tokens * p.cols) {
        return;
    }
    let t = i / p.cols;
    let c = i % p.cols;
    let tok = tokens[t];
    if (tok < p.row0 || tok >= p.row0 + p.rows) {
        return;
    }
    out[i] = w_at(tok - p.row0, c);
}
