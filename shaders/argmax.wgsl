// Greedy sampling on the GPU: out[0] = index of the largest value (the first one on ties),
// one workgroup. NaNs are never chosen; all-NaN input gives 0xffffffff.
struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32) {
    var bv = -3.402823e38; // ~ -FLT_MAX (Tint rejects the exact literal)
    var bi = 0xffffffffu;
    for (var i = li; i < p.n; i += WG) {
        let v = logits[i];
        if (v > bv || (bi == 0xffffffffu && v == bv)) {
            bv = v;
            bi = i;
        }
    }
    best_v[li] = bv;
    best_i[li] = bi;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (li < k) {
            let ov = best_v[li + k];
            let oi = best_i[li + k];
            if (oi != 0xffffffffu && (best_i[li] == 0xffffffffu || ov > best_v[li] || (ov == best_v[li] && oi < best_i[li]))) {
                best_v[li] = ov;
                best_i[li] = oi;
            }
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        out[0] = best_i[0];
    }
}
