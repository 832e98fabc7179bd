//! The benchmark harness: GPU timestamps, every workload reports, and the training step
//! neither creates buffers nor synchronises per op.

use moegrad::bench::table::{load_references, side_by_side, SavedReport};
use moegrad::bench::{run, Options, Scale, Suite};
use moegrad::ops::row_threads_allowed;
use moegrad::prelude::*;

use crate::common::{device, scratch};

/// What the timer returns, never how long it took (timings on a loaded machine are noise):
/// a span for recorded work, and when profiled one entry per pass, each with a time.
#[test]
fn gpu_timer_returns_a_span_and_one_entry_per_pass() {
    // A device of its own: other tests' kernels would show up in the profile.
    let dev = Device::new().unwrap();
    if !dev.has_gpu_timer() {
        assert!(dev.time_gpu(|| ()).1.is_none(), "no timestamp queries, no time");
        return;
    }
    let x = Tensor::ones(&dev, &[1 << 12]).unwrap();
    let adds = || (0..5).fold(x.clone(), |acc, _| acc.add(&x));
    let (y, span) = dev.time_gpu(adds);
    assert!(span.expect("a span with timestamp queries").as_nanos() > 0);
    assert_eq!(y.to_vec().unwrap()[7], 6.0);
    let (_, profile) = dev.profile_gpu(|| drop(adds()));
    let profile = profile.expect("a profile with timestamp queries");
    assert_eq!(profile.iter().map(|k| k.calls).sum::<usize>(), 5, "one pass per add: {profile:?}");
    assert!(profile.iter().all(|k| k.time.as_nanos() > 0), "{profile:?}");
}

#[test]
fn a_profile_names_each_kernel_with_its_calls_and_time() {
    // A device of its own: other tests' kernels would show up in the profile.
    let dev = Device::new().unwrap();
    if !dev.has_gpu_timer() {
        return;
    }
    let x = Tensor::ones(&dev, &[1 << 16]).unwrap();
    let ((), profile) = dev.profile_gpu(|| {
        let y = (0..3).fold(x.clone(), |acc, _| acc.exp());
        drop(y.gelu());
    });
    let profile = profile.unwrap();
    let calls = |name: &str| profile.iter().find(|k| k.kernel.starts_with(name)).map(|k| k.calls);
    assert_eq!(calls("unary/exp/"), Some(3), "{profile:?}");
    assert_eq!(calls("unary/gelu/"), Some(1), "{profile:?}");
    assert_eq!(profile.iter().map(|k| k.calls).sum::<usize>(), 4, "{profile:?}");
    assert!(profile.iter().all(|k| k.time.as_nanos() > 0), "{profile:?}");
    assert!(profile.windows(2).all(|w| w[0].time >= w[1].time), "not longest first: {profile:?}");
}

#[test]
fn suites_report_every_workload_and_the_step_counters() {
    let kernels = run(&device(), Suite::Kernels, &Options { iters: 1, profile: true, ..Options::new(Scale::Tiny) }).unwrap();
    assert_eq!(kernels.results.len(), 28 + 2 * row_threads_allowed(&device()).len());
    // With --profile every workload lists its kernels, which account for all of its time.
    for r in &kernels.results {
        let profile = r.profile.as_ref().unwrap_or_else(|| panic!("{} has no profile", r.key));
        assert!(!profile.is_empty(), "{}: empty profile", r.key);
        let share: f64 = profile.iter().map(|k| k.share).sum();
        assert!((share - 1.0).abs() < 1e-6, "{}: shares sum to {share}", r.key);
    }
    assert!(kernels.results.iter().any(|r| r.profile.as_ref().unwrap()[0].kernel.starts_with("matmul")));
    // The default causal softmax names its layout, and that is the one its kernel ran.
    let packed = kernels.results.iter().find(|r| r.key.contains("_layout_")).expect("no causal softmax at its default layout");
    let layout = packed.key.rsplit('_').next().unwrap();
    assert!(packed.profile.as_ref().unwrap().iter().any(|k| k.kernel.contains(&format!("/{layout}/"))), "{}: {:?}", packed.key, packed.profile);
    // Causal attention runs the products that skip the masked half, full attention not.
    let attention_kernels = |name: &str| {
        let r = kernels.results.iter().find(|r| r.key.starts_with(name)).unwrap_or_else(|| panic!("no {name} workload"));
        r.profile.as_ref().unwrap().iter().map(|k| k.kernel.clone()).collect::<Vec<_>>()
    };
    assert_eq!(attention_kernels("attention_causal_").iter().filter(|k| k.starts_with("matmul/batched_causal_")).count(), 3);
    assert!(!attention_kernels("attention_full_").iter().any(|k| k.contains("causal")));
    assert!(kernels.results.iter().all(|r| r.ms_range[0] <= r.ms && r.ms <= r.ms_range[1] && r.host_ms > 0.0));
    let only = run(&device(), Suite::Kernels, &Options { iters: 1, only: Some("gelu".into()), ..Options::new(Scale::Tiny) }).unwrap();
    assert_eq!(only.results.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["gelu"]);
    let several = run(&device(), Suite::Kernels, &Options { iters: 1, only: Some("gelu,stablemax,".into()), ..Options::new(Scale::Tiny) }).unwrap();
    assert_eq!(several.results.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["gelu", "stablemax"], "an empty part matches nothing");
    // A device of its own: other tests' work would move the counters.
    let pytorch = run(&Device::new().unwrap(), Suite::Pytorch, &Options { iters: 1, ..Options::new(Scale::Tiny) }).unwrap();
    assert!(pytorch.results.iter().all(|r| r.profile.is_none()));
    let keys: Vec<&str> = pytorch.results.iter().map(|r| r.key.as_str()).collect();
    for prefix in ["matmul_256_fp32", "matmul_256_fp16", "softmax_", "log_softmax_", "router_softmax_top2_", "moe_layer_fwd_bwd_", "moe_lm_train_step_"] {
        assert!(keys.iter().any(|k| k.starts_with(prefix)), "{prefix} missing from {keys:?}");
    }
    // The fine-grained MoE layer, and the copies, timed by the wall clock with the host's work.
    assert!(keys.contains(&"moe_layer_fwd_bwd_T512_d64_f32_E64_k8"), "no fine-grained MoE layer in {keys:?}");
    for key in ["copy_host_to_gpu_16MiB", "copy_gpu_to_host_16MiB"] {
        let copy = pytorch.results.iter().find(|r| r.key == key).unwrap_or_else(|| panic!("no {key} in {keys:?}"));
        assert_eq!((copy.unit, copy.timer), ("GB/s", "wall"), "{key}");
        assert!((copy.value - 16.0 * 1.048576e6 / (copy.ms * 1e-3) / 1e9).abs() < 1e-9 * copy.value, "{key}: {} GB/s in {} ms", copy.value, copy.ms);
    }
    assert!(keys.iter().any(|k| k.starts_with("moe_lm_train_step_") && k.ends_with("_f16")), "no f16 training step in {keys:?}");
    assert!(["subgroup shuffles", "workgroup memory"].contains(&pytorch.router_exchange.as_str()), "router exchange {:?}", pytorch.router_exchange);
    assert!(["subgroup operations", "workgroup memory"].contains(&pytorch.row_reduction.as_str()), "row reduction {:?}", pytorch.row_reduction);
    assert_eq!(pytorch.tuning, if device().tuned_for_cpu() { "cpu" } else { "gpu" });
    assert!(kernels.results.iter().chain(&pytorch.results).all(|r| r.value > 0.0 && r.ms > 0.0));
    let c = pytorch.counters.unwrap();
    assert_eq!(c.buffers_created_after_warmup, 0, "a training step must not create buffers");
    assert!(c.submissions_per_step <= 1.0 + 1e-9, "{} submissions per step", c.submissions_per_step);
    // At least the gradients of the tiny model's 2-layer MoE experts (8 x 2 x 64 x 128 f32).
    assert!(c.step_memory_mib > 1.0 && c.step_memory_mib < 512.0, "step memory {} MiB", c.step_memory_mib);
    // The long-context step both ways: activation checkpointing holds less at its peak.
    let long = |suffix: &str| {
        pytorch
            .results
            .iter()
            .find(|r| r.key.contains("x256_") && r.key.ends_with(suffix))
            .unwrap_or_else(|| panic!("no long-context step ending {suffix} in {keys:?}"))
    };
    let (plain, checkpointed) = (long("_V512"), long("_activation_checkpointing"));
    assert!(checkpointed.memory_mib < plain.memory_mib && checkpointed.memory_mib > 0.0, "{} MiB vs {} MiB", checkpointed.memory_mib, plain.memory_mib);
}

#[test]
fn only_sets_up_the_inputs_of_the_workloads_it_runs() {
    // A device of its own, so that its peak memory is this bench's alone.
    let dev = Device::new().unwrap();
    let report = run(&dev, Suite::Kernels, &Options { iters: 1, only: Some("gelu".into()), ..Options::new(Scale::Tiny) }).unwrap();
    assert_eq!(report.results.len(), 1);
    // gelu reads one vector of 2^18 floats and writes another: 2 MiB. The suite's other
    // inputs (matrices, scores, routing, optimizer state) are over 20 MiB more.
    let peak_mib = dev.stats().peak_bytes_in_use as f64 / (1u64 << 20) as f64;
    assert!(peak_mib <= 4.0, "--only gelu peaked at {peak_mib} MiB");
}

#[test]
fn saved_reports_are_set_side_by_side_with_moegrads_speed_relative_to_each() {
    let dir = scratch("bench-table");
    std::fs::create_dir_all(&dir).unwrap();
    // This run's own JSON, as `--json` prints it, serves as a reference (another build's).
    let ours = run(&device(), Suite::Kernels, &Options { iters: 1, only: Some("gelu,stablemax".into()), ..Options::new(Scale::Tiny) }).unwrap();
    let before = dir.join("before.json");
    std::fs::write(&before, serde_json::to_string(&ours).unwrap()).unwrap();
    // A reference in pytorch_reference.py's form, twice as slow at gelu (its figure made up,
    // to check how it is shown) and without stablemax.
    let gelu = ours.results.iter().find(|r| r.key == "gelu").unwrap();
    let torch = dir.join("torch.json");
    let result = format!(r#"{{"key": "gelu", "ms": {}, "value": 0.00123456, "unit": "{}", "peak_fraction": null, "timer": "gpu"}}"#, 2.0 * gelu.ms, gelu.unit);
    std::fs::write(&torch, format!(r#"{{"suite": "pytorch", "device": "PyTorch on a test", "results": [{result}], "counters": null}}"#)).unwrap();

    let table = side_by_side(&SavedReport::from(&ours), "this run", &load_references(&[before.clone(), torch.clone()]).unwrap());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "| workload | moegrad | host | before | moegrad vs before | torch | moegrad vs torch |", "{table}");
    let row = |key: &str| -> Vec<String> {
        let line = lines.iter().find(|l| l.starts_with(&format!("| {key} |"))).unwrap_or_else(|| panic!("no {key} row in\n{table}"));
        line.trim_matches('|').split('|').map(|cell| cell.trim().to_string()).collect()
    };
    let g = row("gelu");
    assert_eq!((g[3].as_str(), g[4].as_str(), g[6].as_str()), (g[1].as_str(), "1.00x", "2.00x"), "{table}");
    // The host's share of the run, from moegrad's own report.
    assert_eq!(g[2], format!("{:.1}%", 100.0 * gelu.host_ms / gelu.ms), "{table}");
    // Three significant figures, however slow lavapipe is.
    assert_eq!(g[5], format!("0.00123 {}", gelu.unit), "{table}");
    let shown: f64 = g[1].strip_suffix(&format!(" {}", gelu.unit)).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{table}"));
    assert!((shown / gelu.value - 1.0).abs() < 5e-3, "{} shown as {shown}: {table}", gelu.value);
    assert_eq!(row("stablemax")[5..], ["-", "-"], "{table}");
    assert!(lines.contains(&format!("torch: PyTorch on a test ({})", torch.display()).as_str()), "{table}");
    assert_eq!(lines.iter().filter(|l| l.starts_with('|')).count(), 2 + ours.results.len());

    // Two files of one name are told apart by their paths.
    std::fs::create_dir_all(dir.join("other")).unwrap();
    let other = dir.join("other/torch.json");
    std::fs::copy(&torch, &other).unwrap();
    let labels: Vec<String> = load_references(&[torch.clone(), other.clone(), before]).unwrap().into_iter().map(|r| r.label).collect();
    assert_eq!(labels, [torch.display().to_string(), other.display().to_string(), "before".to_string()]);

    // What is not a report is refused with the file and the field.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"device": "x", "results": [{"key": "gelu", "ms": "slow", "value": 1, "unit": "TB/s"}]}"#).unwrap();
    let err = format!("{:#}", load_references(std::slice::from_ref(&bad)).err().expect("a report with a string for a time"));
    assert!(err.contains(&bad.display().to_string()) && err.contains("results[0].ms"), "{err}");
    let err = format!("{:#}", SavedReport::load(&dir.join("missing.json")).expect_err("a missing report"));
    assert!(err.contains("missing.json"), "{err}");
}
