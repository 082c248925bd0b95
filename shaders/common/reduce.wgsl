// Workgroup reductions over WG threads (WG a power of two). Call from uniform control flow:
// they contain barriers. Every thread gets the result; the `_uniform` and u32 ones return it
// through workgroupUniformLoad, so that branches holding barriers may depend on it.
var<workgroup> red: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;

// red[0] = the sum (or with `take_max`, the largest) of every thread's x.
fn tree(li: u32, x: f32, take_max: bool) {
    red[li] = x;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (li < k) {
            red[li] = select(red[li] + red[li + k], max(red[li], red[li + k]), take_max);
        }
        workgroupBarrier();
    }
}

// red_u[0] = the sum (or with `take_max`, the largest) of every thread's x.
fn tree_u(li: u32, x: u32, take_max: bool) {
    red_u[li] = x;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (li < k) {
            red_u[li] = select(red_u[li] + red_u[li + k], max(red_u[li], red_u[li + k]), take_max);
        }
        workgroupBarrier();
    }
}

fn reduce_sum(li: u32, x: f32) -> f32 {
    tree(li, x, false);
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(li: u32, x: f32) -> f32 {
    tree(li, x, true);
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum_uniform(li: u32, x: f32) -> f32 {
    tree(li, x, false);
    return workgroupUniformLoad(&red[0]);
}

fn reduce_sum_u(li: u32, x: u32) -> u32 {
    tree_u(li, x, false);
    return workgroupUniformLoad(&red_u[0]);
}

fn reduce_max_u(li: u32, x: u32) -> u32 {
    tree_u(li, x, true);
    return workgroupUniformLoad(&red_u[0]);
}
