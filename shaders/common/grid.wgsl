// Large dispatches are split into a 2-D grid of workgroups (each dimension has a limit of
// 65535 on most adapters); this recovers the linear workgroup index.
fn group_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}
