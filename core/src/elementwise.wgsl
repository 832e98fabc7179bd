// The threads of element-wise kernels: one an element (or a load of four), in workgroups
// of ELEMENTWISE_WG, spread over x and y by `elementwise_grid` (launch.rs) so that any
// tensor fits the per-dimension limit of a dispatch. Appended to every kernel module
// (pipeline.rs); such a kernel declares `@workgroup_size(ELEMENTWISE_WG)` and checks
// `flat_index(gid, nwg)` against its length, since the last workgroup may overhang.
const ELEMENTWISE_WG: u32 = 256u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * ELEMENTWISE_WG;
}
