//! Workgroup-wide sums and softmax (max, sum) merges for the row kernels (softmax family,
//! cross-entropy, norms, gradient norm), in two implementations behind one WGSL interface
//! (`Invocation`, `workgroup_sum`, `workgroup_max_sum`): subgroup operations where the
//! adapter has them (two barriers a call), a tree in workgroup memory everywhere else
//! (log2 of the workgroup size, plus two). Barriers are what a row kernel waits on once its
//! loads are in flight: on lavapipe the subgroup version took RMSNorm and cross-entropy
//! from 3.9 to 2.1 ms, a 256-thread softmax from 4.2 to 2.3, and the tiny LM step from
//! 2,830 to 3,330 tokens/s. Kernels that pack short rows several to a workgroup
//! (`RowLayout` in `row_threads.rs`) use the row interface over these (`row_place`,
//! `row_sum`, `row_max_sum`), whose packed version reduces a row within a subgroup.

use std::sync::Arc;

use moegrad_engine::{grid, Device, Kernel, Tensor};

use crate::row_threads::{packed_layouts, row_threads_allowed, RowLayout};

const MEMORY: &str = include_str!("../../shaders/common/reduce_memory.wgsl");
const SUBGROUP: &str = include_str!("../../shaders/common/reduce_subgroup.wgsl");
const CHECK: &str = include_str!("../../shaders/reduce_check.wgsl");

/// How a row kernel's threads combine their partial results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkgroupReduce {
    Subgroup,
    Memory,
}

impl WorkgroupReduce {
    /// The reductions for `dev`: subgroup operations where the adapter has them (and
    /// `without_subgroups` is not in force) and they pass a one-time check on the device;
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
            got[row * threads * 3..(row + 1) * threads * 3].chunks(3).all(|t| t[0] as f64 == sum && t[1] as f64 == max && (t[2] as f64 - exp_sum).abs() <= 1e-5 * exp_sum)
        })
    })
}
