//! The benchmark harness: GPU timestamps, every workload reports, and the training step
//! neither creates buffers nor synchronises per op.

use moegrad::bench::{run, Scale};
use moegrad::prelude::*;

use crate::common::device;

#[test]
fn gpu_timer_measures_recorded_work() {
    let dev = device();
    if !dev.has_gpu_timer() {
        return; // nothing to measure without timestamp queries (lavapipe has them)
    }
    let x = Tensor::ones(&dev, &[1 << 16]).unwrap();
    let (y, small) = dev.time_gpu(|| x.add(&x));
    let (_, large) = dev.time_gpu(|| (0..40).fold(x.clone(), |acc, _| acc.add(&x)));
    let (small, large) = (small.unwrap(), large.unwrap());
    assert!(small.as_nanos() > 0 && large > small, "{small:?} vs {large:?}");
    assert_eq!(y.to_vec().unwrap()[7], 2.0);
}

#[test]
fn suites_report_every_workload_and_the_step_counters() {
    let kernels = run(&device(), "kernels", Scale::Tiny, 1, 0).unwrap();
    assert_eq!(kernels.results.len(), 16);
    // A device of its own: other tests' work would move the counters.
    let pytorch = run(&Device::new().unwrap(), "pytorch", Scale::Tiny, 1, 0).unwrap();
    let keys: Vec<&str> = pytorch.results.iter().map(|r| r.key.as_str()).collect();
    for prefix in ["matmul_256_fp32", "matmul_256_fp16", "softmax_", "log_softmax_", "router_softmax_top2_", "moe_layer_fwd_bwd_", "moe_lm_train_step_"] {
        assert!(keys.iter().any(|k| k.starts_with(prefix)), "{prefix} missing from {keys:?}");
    }
    assert!(keys.iter().any(|k| k.starts_with("moe_lm_train_step_") && k.ends_with("_f16")), "no f16 training step in {keys:?}");
    assert!(kernels.results.iter().chain(&pytorch.results).all(|r| r.value > 0.0 && r.ms > 0.0));
    let c = pytorch.counters.unwrap();
    assert_eq!(c.buffers_created_after_warmup, 0, "a training step must not create buffers");
    assert!(c.submissions_per_step <= 1.0 + 1e-9, "{} submissions per step", c.submissions_per_step);
}
