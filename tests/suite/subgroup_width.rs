//! The subgroup fast paths at a second subgroup width. Lavapipe's subgroups are as wide as
//! its vectors, a 32-bit lane each: 8 lanes at its default of 256 bits, while NVIDIA's
//! are 32 and AMD's 32 or 64. `LP_NATIVE_VECTOR_WIDTH` sets that width when the driver
//! starts, so this test runs the tests of every kernel with a subgroup path again, in a
//! child process at 512 bits (16 lanes): rows packed up to 16 lanes a row, the router's
//! exchange and the workgroup reductions, held to their references at a width nearer a
//! GPU's. (Wider is not to be had: Mesa 22.3's lavapipe reports 32 lanes at 1,024 bits
//! but runs 16, and the devices' self-checks then rightly refuse its subgroups.)

use std::process::Command;

use crate::common::{device, is_lavapipe, LAVAPIPE_VECTOR_WIDTH};

/// The modules whose tests cover the subgroup paths (with their portable twins).
const FILTERS: [&str; 5] = ["softmax::", "routing::", "reduce::", "transformer::", "moe_layer::"];

/// Tests that must be among those that ran and passed in the child: each exercises a
/// subgroup path that depends on the subgroup width.
const MUST_PASS: [&str; 5] = [
    "reduce::workgroup_reductions_give_every_thread_the_total_at_every_size",
    "softmax::rows_packed_several_to_a_workgroup_match_the_reference_at_every_layout",
    "transformer::norms_of_rows_packed_several_to_a_workgroup",
    "routing::router_matches_reference_with_and_without_renormalisation",
    "routing::gather_and_combine_match_reference_and_gradients",
];

#[test]
fn subgroup_paths_match_the_reference_at_sixteen_lanes() {
    if !is_lavapipe(&device()) || std::env::var_os(LAVAPIPE_VECTOR_WIDTH).is_some() {
        eprintln!("skipped: the adapter is not lavapipe at its default width, so its subgroup width is not ours to set");
        return;
    }
    let suite = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(suite).args(FILTERS).env(LAVAPIPE_VECTOR_WIDTH, "512").output().expect("the test binary runs again");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "at 16-lane subgroups:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    for name in MUST_PASS {
        assert!(report.contains(&format!("test {name} ... ok")), "{name} did not run and pass at 16-lane subgroups:\n{report}");
    }
}
