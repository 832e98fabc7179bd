//! The subgroup fast paths at other subgroup widths. Lavapipe's subgroups are as wide as
//! its vectors, a 32-bit lane each: 8 lanes at its default of 256 bits, while NVIDIA's
//! are 32 and AMD's 32 or 64. `LP_NATIVE_VECTOR_WIDTH` sets that width when the driver
//! starts, so on lavapipe these tests run parts of the suite again in a child process:
//! every kernel with a subgroup path at 512 bits (16 lanes), held to its reference at a
//! width nearer a GPU's; and the choice of fast paths at 1,024 bits, where Mesa 22.3
//! reports 32 lanes but runs 16, a driver whose subgroups the self-checks must refuse.

use moegrad::ops::{router_exchange, row_layout, workgroup_reduction};
use moegrad::prelude::*;
use moegrad::{grid, SUBGROUPS_ENV};

use crate::common::{device, is_lavapipe, rerun_tests, LAVAPIPE_VECTOR_WIDTH};

/// The modules whose tests cover the subgroup paths (with their portable twins).
const FILTERS: [&str; 5] = ["softmax::", "routing::", "reduce::", "transformer::", "moe_layer::"];

/// Tests that must be among those that ran and passed at 16 lanes: each exercises a
/// subgroup path that depends on the subgroup width.
const MUST_PASS: [&str; 5] = [
    "reduce::workgroup_reductions_give_every_thread_the_total_at_every_size",
    "softmax::rows_packed_several_to_a_workgroup_match_the_reference_at_every_layout",
    "transformer::norms_of_rows_packed_several_to_a_workgroup",
    "routing::router_matches_reference_with_and_without_renormalisation",
    "routing::gather_and_combine_match_reference_and_gradients",
];

/// The report of the tests matching `filters`, run again with lavapipe's vectors `bits`
/// wide (and subgroups allowed, whatever `MOEGRAD_SUBGROUPS` says here). None where the
/// adapter is not lavapipe at its default width, whose subgroup width is not ours to set.
fn suite_at_width(bits: u32, filters: &[&str]) -> Option<String> {
    if !is_lavapipe(&device()) || std::env::var_os(LAVAPIPE_VECTOR_WIDTH).is_some() {
        eprintln!("skipped: the adapter is not lavapipe at its default width");
        return None;
    }
    Some(rerun_tests(filters, &[(LAVAPIPE_VECTOR_WIDTH, &bits.to_string())], &[SUBGROUPS_ENV]))
}

#[test]
fn subgroup_paths_match_the_reference_at_sixteen_lanes() {
    if let Some(report) = suite_at_width(512, &FILTERS) {
        for name in MUST_PASS {
            assert!(report.contains(&format!("test {name} ... ok")), "{name} did not run and pass at 16-lane subgroups:\n{report}");
        }
    }
}

#[test]
fn self_checks_refuse_subgroups_that_run_narrower_than_reported() {
    let name = "subgroup_width::fast_paths_are_taken_where_subgroups_are_as_wide_as_reported";
    if let Some(report) = suite_at_width(1024, &[name, "--exact"]) {
        assert!(report.contains(&format!("test {name} ... ok")), "{name} did not run and pass at 1,024-bit vectors:\n{report}");
    }
}

/// Each thread's (reported subgroup size, lanes its subgroup really sums over), from a
/// workgroup of 256 threads (a whole number of subgroups of any power-of-two size up to
/// 128, and within every adapter's limits).
fn subgroup_widths(dev: &Device) -> Vec<(f32, f32)> {
    const SOURCE: &str = "
struct Params { one: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<vec2<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) size: u32) {
    out[lid] = vec2<f32>(f32(size), subgroupAdd(p.one));
}";
    let pipeline = dev.pipeline("test/subgroup_widths", "main", || SOURCE.to_string());
    let out = Tensor::zeros(dev, &[256, 2]).unwrap();
    dev.launch(&pipeline, &[1.0f32.to_bits()], &[&out], grid(1));
    out.to_vec().unwrap().chunks(2).map(|t| (t[0], t[1])).collect()
}

/// The kernels' subgroup paths are used exactly where the adapter's subgroups are as wide
/// as it says: on a truthful driver (any GPU, lavapipe at its default width) the row
/// reductions, packed rows and the router take them; on one whose subgroups run narrower
/// than reported, every kernel stays on its portable path.
#[test]
fn fast_paths_are_taken_where_subgroups_are_as_wide_as_reported() {
    let dev = device();
    let Some((smallest, largest)) = dev.subgroup_sizes() else {
        assert_eq!(workgroup_reduction(&dev), "workgroup memory");
        return;
    };
    let widths = subgroup_widths(&dev);
    let truthful = widths.iter().all(|&(reported, summed)| reported == summed && (smallest..=largest).contains(&(reported as u32)));
    let router_can_shuffle = smallest >= 8 && largest <= 128;
    if truthful {
        assert_eq!(workgroup_reduction(&dev), "subgroup operations");
        assert!(row_layout(&dev, 64).rows > 1, "rows of 64 floats are packed several to a workgroup");
        if router_can_shuffle {
            assert_eq!(router_exchange(&dev), "subgroup shuffles");
        }
    } else {
        println!("the driver reports subgroups of {:?} lanes and runs {:?}", widths[0].0, widths[0].1);
        assert_eq!(workgroup_reduction(&dev), "workgroup memory");
        assert_eq!(row_layout(&dev, 64).rows, 1, "no rows are packed");
        assert_eq!(router_exchange(&dev), "workgroup memory");
    }
}
