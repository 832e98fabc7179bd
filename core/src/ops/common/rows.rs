//! Row kernels (the softmax family, cross-entropy, the norms, the gradient norm): how
//! their rows are laid on workgroups, and how a workgroup's threads combine partial
//! results. One concept: rows are packed several to a workgroup only where the
//! reductions go through subgroups, and every layout's reductions are checked once on the
//! device before they are trusted.
//!
//! **Layout.** By default a row gets a workgroup with as many threads as it has loads, at
//! most 256 on GPUs and 32 on CPU adapters, which run a workgroup's threads in turn, so
//! more of them only add barriers. Kernels written against the row interface
//! (`RowLayout`: the softmax family and the norms) pack short rows several to a workgroup
//! where the adapter's smallest subgroup can hold a row: such a row reduces through
//! shuffles alone, without the barriers and idle threads of a workgroup of its own.
//! `loads_kept` says whether a row is short enough for each thread to keep its loads in
//! registers between the kernel's two passes.
//!
//! **Reductions.** Workgroup-wide sums and softmax (max, sum) merges in two
//! implementations behind one WGSL interface (`Invocation`, `workgroup_sum`,
//! `workgroup_max_sum`): subgroup operations where the adapter has them (two barriers a
//! call), a tree in workgroup memory everywhere else (log2 of the workgroup size, plus
//! two). Barriers are what a row kernel waits on once its loads are in flight. The
//! packed layouts use the row interface over these (`row_place`, `row_sum`,
//! `row_max_sum`), whose packed version reduces a row within a subgroup.

use std::sync::Arc;

use crate::{grid, render_template, Device, Kernel, Tensor};

use super::{floats_per_load, LANE_GROUPS_SUBGROUP};

const ONE_ROW: &str = include_str!("reduce_one_row.wgsl");
const PACKED_ROWS: &str = include_str!("reduce_rows_subgroup.wgsl");
const ROW_AT: &str = include_str!("row_at.wgsl");

/// The workgroup sizes a row kernel may use.
pub const ROW_THREADS: [u32; 6] = [32, 64, 128, 256, 512, 1024];

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
    dev.policy().row_threads.unwrap_or_else(|| loads.next_power_of_two().clamp(32, most_threads(dev) as usize) as u32)
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
        if dev.policy().row_threads.is_none() {
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
    (0..=smallest.trailing_zeros())
        .map(|i| 1 << i)
        .filter(|&threads| group / threads > 1)
        .map(|threads| RowLayout { threads, rows: group / threads, reduce: WorkgroupReduce::Subgroup })
        .collect()
}

const MEMORY: &str = include_str!("reduce_memory.wgsl");
const SUBGROUP: &str = include_str!("reduce_subgroup.wgsl");
const CHECK: &str = include_str!("reduce_check.wgsl");

/// How a row kernel's threads combine their partial results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkgroupReduce {
    Subgroup,
    Memory,
}

impl WorkgroupReduce {
    /// The reductions for `dev`: subgroup operations where the adapter has them (and
    /// the policy allows them) and they pass a one-time check on the device;
    /// else workgroup memory, with a warning when the check failed.
    pub fn for_device(dev: &Device) -> Self {
        if dev.subgroup_sizes().is_none() {
            return Self::Memory;
        }
        let trusted = dev.verified("workgroup-reduce/subgroup", || {
            let ok = reduces_correctly(dev, Self::Subgroup);
            if !ok {
                eprintln!("moegrad: {}'s subgroup operations reduce workgroups wrongly; row kernels use workgroup memory", dev.name());
            }
            ok
        });
        if trusted {
            Self::Subgroup
        } else {
            Self::Memory
        }
    }

    /// A name for pipeline keys.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Subgroup => "subgroup",
            Self::Memory => "memory",
        }
    }

    /// The pipeline for entry point `entry` of `shader` (named `name` in pipeline keys), a
    /// kernel with several entry points that use these reductions.
    pub(crate) fn entry_pipeline(self, dev: &Device, name: &str, shader: &'static str, entry: &str) -> Arc<Kernel> {
        dev.pipeline(&format!("{name}/{entry}/{}", self.name()), entry, || self.append_to(shader.to_string()))
    }

    /// `kernel` with these reductions; the kernel defines `WG`, its workgroup size.
    pub(crate) fn append_to(self, kernel: String) -> String {
        let code = match self {
            Self::Subgroup => SUBGROUP,
            Self::Memory => MEMORY,
        };
        kernel + "\n" + code
    }
}

/// How the row kernels reduce on `dev`, in words (for benchmark reports).
pub fn workgroup_reduction(dev: &Device) -> &'static str {
    match WorkgroupReduce::for_device(dev) {
        WorkgroupReduce::Subgroup => "subgroup operations",
        WorkgroupReduce::Memory => "workgroup memory",
    }
}

/// Whether `reduce` gives every thread the right sum and (max, sum of exp) on `dev`, at
/// every workgroup size a row kernel may use with a workgroup a row.
pub fn reduces_correctly(dev: &Device, reduce: WorkgroupReduce) -> bool {
    let layouts: Vec<RowLayout> = row_threads_allowed(dev).into_iter().map(|threads| RowLayout { threads, rows: 1, reduce }).collect();
    layouts_reduce_correctly(dev, &layouts)
}

/// Whether rows packed several to a workgroup (`packed_layouts`) reduce correctly on
/// `dev`: checked once per device, as the subgroup reductions are; a failure warns and
/// leaves every row a workgroup of its own.
pub fn packs_rows_correctly(dev: &Device) -> bool {
    dev.verified("row-reduce/packed", || {
        let ok = layouts_reduce_correctly(dev, &packed_layouts(dev));
        if !ok {
            eprintln!("moegrad: {}'s subgroup shuffles reduce packed rows wrongly; row kernels give each row a workgroup", dev.name());
        }
        ok
    })
}

/// Whether every thread of every row gets the row's sum and (max, sum of exp) under each
/// of `layouts` on `dev`, for three workgroups of rows of known values, each row one and a
/// half times its threads long (plus three), so threads walk it with uneven trip counts.
pub fn layouts_reduce_correctly(dev: &Device, layouts: &[RowLayout]) -> bool {
    const GROUPS: usize = 3;
    const SALT: usize = 4;
    layouts.iter().all(|layout| {
        let (threads, rows) = (layout.threads as usize, GROUPS * layout.rows as usize);
        let len = threads * 3 / 2 + 3;
        let key = format!("reduce_check/{}", layout.name());
        let source = || layout.render(CHECK, &[]);
        let pipeline = dev.pipeline(&key, "main", source);
        let out = Tensor::zeros(dev, &[rows * threads, 3]).expect("workgroup reduction check");
        dev.launch(&pipeline, &[len as u32, SALT as u32], &[&out], grid(GROUPS));
        let got = out.to_vec().expect("workgroup reduction check");
        (0..rows).all(|row| {
            let values: Vec<f64> = (0..len).map(|i| ((i * 7 + row * 5 + SALT) % 23) as f64 - 11.0).collect();
            let sum: f64 = values.iter().sum();
            let max = values.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v)) * 0.25;
            let exp_sum: f64 = values.iter().map(|v| (v * 0.25 - max).exp()).sum();
            got[row * threads * 3..(row + 1) * threads * 3]
                .chunks(3)
                .all(|t| t[0] as f64 == sum && t[1] as f64 == max && (t[2] as f64 - exp_sum).abs() <= 1e-5 * exp_sum)
        })
    })
}
