//! Kernel choices that depend on the kind of adapter: matmul tiles and depth splits, and
//! threads a row. A CPU adapter (lavapipe) gets its own, so CI's lavapipe would never run
//! a GPU's; `MOEGRAD_TUNING=gpu` makes them on any adapter, and on lavapipe the tests of
//! every op with such choices run again that way, in a child process, at 16-lane subgroups
//! (`subgroup_width.rs`): the nearest lavapipe comes to a GPU.

use moegrad::ops::row_layout;
use moegrad::prelude::*;
use moegrad::{KernelPolicy, Tuning, TUNING_ENV};

use crate::common::{device, is_lavapipe, rerun_tests, LAVAPIPE_VECTOR_WIDTH};

/// The modules whose tests cover ops with kernel choices (and the model built on them).
const FILTERS: [&str; 11] = [
    "matmul::",
    "softmax::",
    "transformer::",
    "moe_layer::",
    "moe_model::",
    "moe_options::every_routing_option",
    "reduce::",
    "routing::",
    "embedding::",
    "empty::",
    "tuning::kernel_choices",
];

/// Tests that must be among those that ran and passed with a GPU's choices.
const MUST_PASS: [&str; 6] = [
    "tuning::kernel_choices_follow_the_tuning",
    "moe_options::every_routing_option_matches_a_cpu_moe_layer_in_outputs_and_gradients",
    "moe_layer::moe_layer_matches_cpu_reference_in_outputs_and_all_gradients",
    "moe_model::topk_and_default_layers_match_reference_in_outputs_and_gradients",
    "transformer::attention_causal_and_full",
    "softmax::softmax_family_with_temperature_matches_reference_and_gradients",
];

#[test]
fn ops_match_the_reference_with_a_gpus_kernel_choices() {
    if !is_lavapipe(&device()) || std::env::var_os(TUNING_ENV).is_some() || std::env::var_os(LAVAPIPE_VECTOR_WIDTH).is_some() {
        eprintln!("skipped: the adapter is not lavapipe at its own tuning and width");
        return;
    }
    let report = rerun_tests(&FILTERS, &[(TUNING_ENV, "gpu"), (LAVAPIPE_VECTOR_WIDTH, "512")], &[]);
    for name in MUST_PASS {
        assert!(report.contains(&format!("test {name} ... ok")), "{name} did not run and pass with MOEGRAD_TUNING=gpu:\n{report}");
    }
}

/// The device follows `MOEGRAD_TUNING` (else its adapter's type), and the choices follow
/// the device: rows of 4,096 floats get 32 threads on a CPU adapter, 256 on a GPU; a
/// product of 64 x 64 outputs over a depth of 2,048 splits its depth on a GPU only (one
/// dispatch for the product, one for the sum of its slices; counted on a device of the
/// test's own, which no other test dispatches to).
#[test]
fn kernel_choices_follow_the_tuning() {
    let dev = Device::new().unwrap();
    let cpu_adapter = dev.adapter_info().device_type == moegrad::wgpu::DeviceType::Cpu;
    let cpu = match KernelPolicy::from_env().unwrap().tuning {
        Tuning::Auto => cpu_adapter,
        Tuning::Cpu => true,
        Tuning::Gpu => false,
    };
    assert_eq!(dev.tuned_for_cpu(), cpu);
    assert_eq!(row_layout(&dev, 4096).threads, if cpu { 32 } else { 256 });
    let a = Tensor::zeros(&dev, &[64, 2048]).unwrap();
    let b = Tensor::zeros(&dev, &[2048, 64]).unwrap();
    let before = dev.stats().dispatches;
    let product = a.matmul(&b);
    assert_eq!(dev.stats().dispatches - before, if cpu { 1 } else { 2 });
    assert!(product.to_vec().unwrap().iter().all(|&v| v == 0.0));
}
