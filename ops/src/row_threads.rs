//! How many threads a row kernel (the softmax family, cross-entropy, the norms) gives each
//! row, one workgroup a row: enough for the row's loads, at most 256 on GPUs and 32 on CPU
//! adapters, which run a workgroup's threads in turn, so more of them only add barriers
//! (lavapipe, 512 x 1024 softmax: 0.9 ms with 32 threads, 2.3 with 256). `with_row_threads`
//! overrides the choice, for tests that cover every size and for tuning. `loads_kept` says
//! whether a row is short enough for each thread to keep its loads in registers.

use std::cell::Cell;

use moegrad_engine::{wgpu, Device};

/// The workgroup sizes a row kernel may use.
pub const ROW_THREADS: [u32; 6] = [32, 64, 128, 256, 512, 1024];

thread_local! {
    static OVERRIDE: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Runs `f` with every row kernel recorded on this thread using `threads` per row.
pub fn with_row_threads<R>(threads: u32, f: impl FnOnce() -> R) -> R {
    assert!(ROW_THREADS.contains(&threads), "threads per row must be one of {ROW_THREADS:?}, got {threads}");
    let before = OVERRIDE.with(|t| t.replace(Some(threads)));
    let out = f();
    OVERRIDE.with(|t| t.set(before));
    out
}

/// The entries of `ROW_THREADS` that `dev` allows in one workgroup.
pub fn row_threads_allowed(dev: &Device) -> Vec<u32> {
    ROW_THREADS.into_iter().filter(|&t| t <= dev.limits().max_compute_invocations_per_workgroup).collect()
}

/// Threads per row for rows of `loads` loads on `dev`.
pub(crate) fn row_threads(dev: &Device, loads: usize) -> u32 {
    let most = if dev.adapter_info().device_type == wgpu::DeviceType::Cpu { 32 } else { 256 };
    OVERRIDE.with(Cell::get).unwrap_or_else(|| loads.next_power_of_two().clamp(32, most) as u32)
}

/// Most loads a thread keeps in registers across a row kernel's two passes: 8 vec4s are 32
/// registers, which leaves a 256-thread workgroup room for several more on an SM.
pub const MOST_KEPT: usize = 8;

/// Loads each of `threads` keeps for rows of `loads` loads, read once and held in
/// registers; 0 when that is more than `MOST_KEPT`, for a kernel that reads the row twice.
pub fn loads_kept(loads: usize, threads: u32) -> usize {
    let per_thread = loads.div_ceil(threads as usize);
    if per_thread <= MOST_KEPT {
        per_thread
    } else {
        0
    }
}
