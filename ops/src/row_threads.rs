//! How a row kernel (the softmax family, cross-entropy, the norms) lays its rows on
//! workgroups. By default a row gets a workgroup and as many threads as it has loads, at
//! most 256 on GPUs and 32 on CPU adapters (`Device::tuned_for_cpu`), which run a
//! workgroup's threads in turn, so more of them only add barriers (lavapipe, 512 x 1024
//! softmax: 0.9 ms with 32 threads, 2.3 with 256). Kernels written against the row interface (`RowLayout`: the softmax
//! family and the norms) pack short rows several to a workgroup where the adapter's
//! subgroups can hold a row each: such a row reduces through shuffles alone, without the
//! barriers and idle threads of a workgroup of its own (attention's rows of 512 are 128
//! vec4 loads: four for each lane of a 32-lane subgroup). `with_row_threads` forces one
//! row a workgroup of a given size, for tests that cover every size and for tuning.
//! `loads_kept` says whether a row is short enough for each thread to keep its loads in
//! registers.

use std::cell::Cell;

use moegrad_engine::{grid, render_template, Device};

use crate::wgsl_library::{floats_per_load, LANE_GROUPS_SUBGROUP};
use crate::workgroup_reduce::{packs_rows_correctly, WorkgroupReduce};

const ONE_ROW: &str = include_str!("../../shaders/common/reduce_one_row.wgsl");
const PACKED_ROWS: &str = include_str!("../../shaders/common/reduce_rows_subgroup.wgsl");
const ROW_AT: &str = include_str!("../../shaders/common/row_at.wgsl");

/// The workgroup sizes a row kernel may use.
pub const ROW_THREADS: [u32; 6] = [32, 64, 128, 256, 512, 1024];

thread_local! {
    static OVERRIDE: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Runs `f` with every row kernel recorded on this thread using one workgroup of
/// `threads` a row.
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

/// The most threads a row kernel's workgroup has by default on `dev`.
fn most_threads(dev: &Device) -> u32 {
    if dev.tuned_for_cpu() {
        32
    } else {
        256
    }
}

/// Threads for a workgroup holding one row of `loads` loads on `dev`.
pub(crate) fn row_threads(dev: &Device, loads: usize) -> u32 {
    OVERRIDE.with(Cell::get).unwrap_or_else(|| loads.next_power_of_two().clamp(32, most_threads(dev) as usize) as u32)
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

/// How a row kernel written against the row interface (the softmax family, the norms)
/// lays rows of `n` floats on `dev`'s workgroups, forward and backward alike.
pub fn row_layout(dev: &Device, n: usize) -> RowLayout {
    RowLayout::for_rows(dev, n / floats_per_load(n))
}

/// Where a row kernel's rows go: `threads` a row, `rows` a workgroup, reduced by `reduce`
/// (several rows a workgroup only through subgroups, each row in one of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    pub threads: u32,
    pub rows: u32,
    pub reduce: WorkgroupReduce,
}

impl RowLayout {
    /// The layout for rows of `loads` loads on `dev`: packed where a row fits the lanes of
    /// the adapter's smallest subgroup, keeping at most `MOST_KEPT` loads each (as many
    /// threads as loads, up to that subgroup: consecutive lanes read consecutive loads),
    /// and packed reductions passed their one-time check on the device; else a workgroup
    /// a row.
    pub fn for_rows(dev: &Device, loads: usize) -> Self {
        let reduce = WorkgroupReduce::for_device(dev);
        if OVERRIDE.with(Cell::get).is_none() {
            let fits = |l: &RowLayout| l.threads as usize <= loads.next_power_of_two() && loads <= l.threads as usize * MOST_KEPT;
            if let Some(packed) = packed_layouts(dev).into_iter().rfind(fits) {
                if packs_rows_correctly(dev) {
                    return packed;
                }
            }
        }
        RowLayout { threads: row_threads(dev, loads), rows: 1, reduce }
    }

    /// A name for pipeline keys and reports: threads x rows / reduction.
    pub fn name(&self) -> String {
        format!("{}x{}/{}", self.threads, self.rows, self.reduce.name())
    }

    /// A row kernel's `template` filled with `values` and with this layout's WG (threads a
    /// row) and ROWS (rows a workgroup), followed by the row interface: `row_place`,
    /// `row_sum`, `row_max_sum`, and `row_at`.
    pub(crate) fn render(&self, template: &str, values: &[(&str, &str)]) -> String {
        let (threads, rows) = (self.threads.to_string(), self.rows.to_string());
        let mut all = vec![("WG", threads.as_str()), ("ROWS", rows.as_str())];
        all.extend_from_slice(values);
        let kernel = render_template(template, &all);
        let reductions = if self.rows > 1 { kernel + "\n" + LANE_GROUPS_SUBGROUP + "\n" + PACKED_ROWS } else { self.reduce.append_to(kernel) + "\n" + ONE_ROW };
        reductions + "\n" + ROW_AT
    }

    /// The workgroups for `rows` rows.
    pub(crate) fn groups(&self, rows: usize) -> [u32; 3] {
        grid(rows.div_ceil(self.rows as usize))
    }
}

/// Every layout that packs rows on `dev`, fewest threads a row first: rows of 1, 2, 4 ...
/// threads up to the smallest subgroup, in workgroups of the default size (or of the
/// largest subgroup, if that is more), so that subgroups tile them. Empty without
/// subgroups, or where the workgroup reductions fall back to workgroup memory.
pub fn packed_layouts(dev: &Device) -> Vec<RowLayout> {
    let Some((smallest, largest)) = dev.subgroup_sizes() else {
        return Vec::new();
    };
    let group = most_threads(dev).max(largest);
    let fits = smallest.is_power_of_two() && largest.is_power_of_two() && group <= dev.limits().max_compute_invocations_per_workgroup;
    if !fits || WorkgroupReduce::for_device(dev) != WorkgroupReduce::Subgroup {
        return Vec::new();
    }
    (0..=smallest.trailing_zeros()).map(|i| 1 << i).filter(|&threads| group / threads > 1).map(|threads| RowLayout { threads, rows: group / threads, reduce: WorkgroupReduce::Subgroup }).collect()
}
