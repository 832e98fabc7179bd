//! WGSL shared by several kernels (`shaders/common/`), appended to their source so each
//! piece of kernel logic exists once.

const WORKGROUP_REDUCE: &str = include_str!("../../shaders/common/workgroup_reduce.wgsl");
const RANKING: &str = include_str!("../../shaders/common/ranking.wgsl");

/// `kernel` with the workgroup reductions (`workgroup_sum`, `online_add`,
/// `workgroup_max_sum`); the kernel defines `WG`.
pub(crate) fn with_workgroup_reduce(kernel: String) -> String {
    kernel + "\n" + WORKGROUP_REDUCE
}

/// `kernel` with `ranks_above`, the tie-breaking order of top-k selections.
pub(crate) fn with_ranking(kernel: String) -> String {
    kernel + "\n" + RANKING
}
