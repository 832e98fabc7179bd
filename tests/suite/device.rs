//! The device: adapter choice, pooled buffers, cached pipelines, batched submission and
//! the size limit.

use moegrad::demo::{train_mlp, DemoConfig};
use moegrad::prelude::*;
use moegrad::{Error, KernelPolicy, Tuning, STAGED_UPLOAD_MIN_BYTES, UPLOAD_CHUNK_BYTES};
use rand::SeedableRng;

use crate::common::device;

#[test]
fn adapter_is_chosen_by_name_or_refused_with_the_list() {
    let name = device().name().to_string();
    let part = &name[..name.len().min(6)];
    assert_eq!(Device::with_adapter(Some(&part.to_uppercase())).unwrap().name(), name);
    let err = Device::with_adapter(Some("no-such-gpu")).expect_err("a bogus name must be refused");
    assert!(matches!(err, Error::AdapterNotFound { .. }));
    let msg = err.to_string();
    assert!(msg.contains("no-such-gpu") && msg.contains(&name), "{msg}");
}

/// The policy a device opens with, from these variables alone.
fn policy_from(vars: &[(&str, &str)]) -> moegrad::Result<KernelPolicy> {
    KernelPolicy::from_vars(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
}

#[test]
fn subgroup_setting_is_on_or_off_and_nothing_else() {
    assert!(policy_from(&[]).unwrap().subgroups);
    assert!(policy_from(&[("MOEGRAD_SUBGROUPS", "on")]).unwrap().subgroups);
    assert!(!policy_from(&[("MOEGRAD_SUBGROUPS", " off")]).unwrap().subgroups);
    let msg = policy_from(&[("MOEGRAD_SUBGROUPS", "no")]).expect_err("a bad setting must be refused").to_string();
    assert!(msg.contains("MOEGRAD_SUBGROUPS") && msg.contains("\"no\"") && msg.contains("on or off"), "{msg}");
}

#[test]
fn tuning_is_auto_gpu_or_cpu_and_nothing_else() {
    assert_eq!(policy_from(&[]).unwrap().tuning, Tuning::Auto);
    assert_eq!(policy_from(&[("MOEGRAD_TUNING", "auto")]).unwrap().tuning, Tuning::Auto);
    assert_eq!(policy_from(&[("MOEGRAD_TUNING", "gpu")]).unwrap().tuning, Tuning::Gpu);
    assert_eq!(policy_from(&[("MOEGRAD_TUNING", " cpu ")]).unwrap().tuning, Tuning::Cpu);
    let msg = policy_from(&[("MOEGRAD_TUNING", "fast")]).expect_err("a bad setting must be refused").to_string();
    assert!(msg.contains("MOEGRAD_TUNING") && msg.contains("\"fast\"") && msg.contains("auto, gpu or cpu"), "{msg}");
    // The device resolves the tuning against its adapter's type.
    let dev = device();
    let cpu_adapter = dev.adapter_info().device_type == moegrad::wgpu::DeviceType::Cpu;
    for (tuning, cpu) in [(Tuning::Auto, cpu_adapter), (Tuning::Gpu, false), (Tuning::Cpu, true)] {
        assert_eq!(dev.with_policy(|p| p.tuning = tuning, || dev.tuned_for_cpu()), cpu, "{tuning:?}");
    }
}

#[test]
fn tile_settings_are_parsed_and_refused_by_name() {
    let policy = policy_from(&[("MOEGRAD_MATMUL_TILES", "64x64x8/4x4"), ("MOEGRAD_COOP_TILES", "4x2/2x4/32")]).unwrap();
    assert_eq!(policy.matmul_tiles.map(|t| t.to_string()).as_deref(), Some("64x64x8/4x4"));
    assert_eq!(policy.coop_tiles.map(|t| t.to_string()).as_deref(), Some("4x2/2x4/32"));
    for (var, value) in [("MOEGRAD_MATMUL_TILES", "64x64"), ("MOEGRAD_COOP_TILES", "2x2/4x4/8")] {
        let msg = policy_from(&[(var, value)]).expect_err("a bad setting must be refused").to_string();
        assert!(msg.contains(var) && msg.contains(value), "{msg}");
    }
}

#[test]
fn a_policy_override_is_scoped_and_survives_a_panic() {
    use moegrad::ops::Precision;
    let dev = device();
    let before = dev.policy();
    let inner = dev.with_policy(|p| p.precision = Precision::F16, || dev.with_policy(|p| p.row_threads = Some(64), || dev.policy()));
    assert_eq!((inner.precision, inner.row_threads), (Precision::F16, Some(64)), "overrides nest");
    assert_eq!(dev.policy(), before);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dev.with_policy(|p| p.subgroups = false, || panic!("inside the override"))));
    assert!(panicked.is_err());
    assert_eq!(dev.policy(), before, "a panic must not leave the override in force");
}

#[test]
fn a_fast_path_whose_check_panics_is_not_trusted_and_not_checked_again() {
    let dev = device();
    assert!(!dev.verified("test/check-panics", || panic!("this kernel does not compile here")));
    assert!(!dev.verified("test/check-panics", || true), "the first verdict stands");
    assert!(dev.verified("test/check-passes", || true));
}

#[test]
fn device_uses_the_adapters_own_limits() {
    let dev = device();
    let listed = Device::adapters().into_iter().find(|a| a.name == dev.name()).unwrap();
    assert_eq!(dev.limits().max_storage_buffer_binding_size, listed.max_storage_binding);
}

#[test]
fn a_training_step_creates_no_buffers_or_pipelines_after_the_first() {
    // A device of its own, so other tests' work does not move the counters.
    let dev = Device::new().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let model = Mlp::new(&dev, &[5, 16, 3], Activation::Relu, &mut rng).unwrap();
    let mut opt = Sgd::new(&model, 0.01);
    let x = Tensor::randn(&dev, &[9, 5], 1.0, &mut rng).unwrap();
    let target = Tensor::randn(&dev, &[9, 3], 1.0, &mut rng).unwrap();
    let step = |opt: &mut Sgd| {
        let loss = model.forward(&x).sub(&target).square().mean_all();
        loss.backward();
        opt.step();
        opt.zero_grad();
        loss.item().unwrap()
    };
    step(&mut opt);
    let warm = dev.stats();
    for _ in 0..3 {
        step(&mut opt);
    }
    let after = dev.stats();
    assert_eq!(after.buffers_created, warm.buffers_created, "steady-state steps must reuse pooled buffers");
    assert_eq!(after.pipelines_compiled, warm.pipelines_compiled, "pipelines must be compiled once");
    assert_eq!(after.read_backs - warm.read_backs, 3, "one read-back (the loss) per step");
    assert_eq!(after.submissions - warm.submissions, 3, "one submission per step: ops never wait");
}

#[test]
fn ops_are_batched_until_a_read_back() {
    let dev = Device::new().unwrap();
    let x = Tensor::ones(&dev, &[1000]).unwrap();
    let before = dev.stats();
    let mut y = x.clone();
    for _ in 0..50 {
        y = y.mul_scalar(1.01).add(&x);
    }
    let recorded = dev.stats();
    assert_eq!(recorded.submissions, before.submissions, "recording ops must not submit");
    assert_eq!(recorded.dispatches - before.dispatches, 100);
    let v = y.to_vec().unwrap();
    assert_eq!(dev.stats().submissions, before.submissions + 1);
    let expected = (0..50).fold(1.0f64, |acc, _| acc * 1.01 + 1.0);
    assert!((v[999] as f64 - expected).abs() < 1e-3 * expected, "{} vs {expected}", v[999]);
}

/// A deferred read-back sees the tensor as it was when the read was recorded, however much
/// work (here an in-place overwrite) is recorded and submitted before it is waited for.
#[test]
fn a_deferred_read_back_sees_the_tensor_when_it_was_requested() {
    let dev = Device::new().unwrap();
    let x = Tensor::from_slice(&dev, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let doubled = x.mul_scalar(2.0);
    let before = dev.stats();
    let pending = doubled.read_later();
    assert_eq!(dev.stats().submissions, before.submissions + 1, "read_later submits without waiting");
    doubled.write(&[7.0, 8.0, 9.0]).unwrap();
    let later = doubled.add(&x);
    dev.flush();
    assert_eq!(pending.wait().unwrap(), vec![2.0, 4.0, 6.0]);
    assert_eq!(later.to_vec().unwrap(), vec![8.0, 10.0, 12.0]);
    assert_eq!(dev.stats().read_backs, before.read_backs + 2);
}

/// Large writes go through two pooled staging buffers a chunk at a time: the values arrive
/// whole (the last chunk a partial one), in order with the work recorded around them, and
/// the next upload and read-back of the same size create no buffer.
#[test]
fn large_uploads_arrive_whole_in_order_and_reuse_their_staging_buffers() {
    let dev = Device::new().unwrap();
    let n = ((2 * UPLOAD_CHUNK_BYTES + STAGED_UPLOAD_MIN_BYTES) / 4 + 3) as usize;
    let data: Vec<f32> = (0..n).map(|i| (i % 65_521) as f32).collect();
    let t = Tensor::zeros(&dev, &[n]).unwrap();
    let before = t.mul_scalar(2.0);
    let created = dev.stats().buffers_created;
    t.write(&data).unwrap();
    assert_eq!(dev.stats().buffers_created, created + 2, "a large upload takes two staging buffers, whatever its chunks");
    let after = t.mul_scalar(2.0);
    assert!(before.to_vec().unwrap().iter().all(|&v| v == 0.0), "work recorded before the upload saw its data");
    let doubled = after.to_vec().unwrap();
    let wrong = (0..n).find(|&i| doubled[i] != 2.0 * data[i]);
    assert_eq!(wrong, None, "the uploaded values differ (chunks of {UPLOAD_CHUNK_BYTES} bytes)");
    drop((before, after));
    let created = dev.stats().buffers_created;
    let reversed: Vec<f32> = data.iter().rev().copied().collect();
    t.write(&reversed).unwrap();
    assert!(t.to_vec().unwrap() == reversed, "the second upload's values differ");
    assert_eq!(dev.stats().buffers_created, created, "an upload or read-back made a buffer of its own");
}

#[test]
fn tensors_beyond_the_binding_limit_get_a_clear_error() {
    let dev = device();
    let limit = dev.max_binding_bytes();
    let too_many = (limit / 4 + 1) as usize;
    let err = Tensor::zeros(&dev, &[too_many]).expect_err("must not allocate past the limit");
    let msg = err.to_string();
    assert!(matches!(err, Error::TooLarge { .. }));
    assert!(msg.contains(&(too_many as u64 * 4).to_string()) && msg.contains(&limit.to_string()), "{msg}");
}

/// Bytes on loan rise and fall with live tensors (at most a size class above what they
/// hold), a freed buffer is counted as cached until it is reused, and the peak stays until
/// it is reset.
#[test]
fn memory_accounts_follow_tensors_and_their_peak() {
    let dev = Device::new().unwrap();
    let start = dev.stats();
    let a = Tensor::zeros(&dev, &[1000]).unwrap();
    let b = Tensor::zeros(&dev, &[3000]).unwrap();
    let held = dev.stats();
    let grown = held.bytes_in_use - start.bytes_in_use;
    assert!((16_000..=20_000).contains(&grown), "two tensors of 16,000 bytes in all took {grown}");
    assert_eq!(held.peak_bytes_in_use, held.bytes_in_use);
    drop(a);
    let freed = dev.stats();
    let a_class = held.bytes_in_use - freed.bytes_in_use;
    assert!((4000..=5000).contains(&a_class), "a tensor of 4,000 bytes gave back {a_class}");
    assert_eq!(freed.bytes_cached - held.bytes_cached, a_class, "a freed buffer is cached");
    assert_eq!(freed.peak_bytes_in_use, held.peak_bytes_in_use, "the peak outlives the tensor");
    dev.reset_peak_memory();
    assert_eq!(dev.stats().peak_bytes_in_use, freed.bytes_in_use);
    let again = Tensor::zeros(&dev, &[999]).unwrap();
    let reused = dev.stats();
    assert_eq!(reused.buffers_created, freed.buffers_created, "the cached buffer serves the same size class");
    assert_eq!((reused.bytes_in_use, reused.bytes_cached), (held.bytes_in_use, held.bytes_cached));
    drop((b, again));
}

/// Under a memory limit an allocation that does not fit fails with the tensor's shape and
/// the limit, after the cache has been released (so a cache never causes a failure); ops
/// and read-backs pass the error on.
#[test]
fn a_memory_limit_is_enforced_with_a_clear_error_after_releasing_the_cache() {
    let dev = Device::new().unwrap();
    let base = dev.stats().bytes_in_use;
    dev.set_memory_limit(Some(base + (1 << 20)));
    let big = Tensor::zeros(&dev, &[200_000]).unwrap(); // 800 KB of the 1 MiB
    let err = Tensor::zeros(&dev, &[100_000]).expect_err("400 KB more does not fit in 1 MiB");
    let msg = err.to_string();
    assert!(matches!(err, Error::OutOfMemory { limit: Some(_), .. }), "{msg}");
    assert!(msg.contains("[100000]") && msg.contains("needs 390.6 KiB") && msg.contains("MOEGRAD_MEMORY_LIMIT"), "{msg}");

    drop(big);
    assert!(dev.stats().bytes_cached >= 800_000);
    let x = Tensor::zeros(&dev, &[100_000]).expect("the cached 800 KB are released to make room");
    assert_eq!(dev.stats().bytes_cached, 0);
    let y = x.mul_scalar(2.0);
    // A third 400 KB tensor does not fit: the op does not panic, its output is void, work
    // on it records nothing, and the next read-back returns the failure, naming the op.
    let dispatches = dev.stats().dispatches;
    let z = x.add(&y);
    assert!(z.is_void() && !y.is_void());
    let w = z.mul_scalar(3.0).sum_all();
    assert!(w.is_void(), "the work after a failure makes void tensors too");
    assert_eq!(dev.stats().dispatches, dispatches, "no kernel touches a void tensor");
    let err = w.item().expect_err("the failure surfaces at the next read-back");
    let msg = err.to_string();
    assert!(err.is_resource() && msg.starts_with("add") && msg.contains("out of GPU memory") && msg.contains("[100000]"), "{msg}");
    let again = z.to_vec().expect_err("a void tensor holds nothing");
    assert!(matches!(again, Error::Void { .. }), "{again}");
    dev.check().expect("the failure was taken by the first read-back");
    drop((z, w));
    let read = y.read_later().wait().expect_err("no room for a 400 KB staging buffer either");
    assert!(matches!(read, Error::OutOfMemory { .. }), "{read}");

    dev.set_memory_limit(None);
    assert_eq!(x.add(&y).to_vec().unwrap()[99_999], 0.0);
}

#[test]
fn data_of_the_wrong_length_is_refused() {
    let err = Tensor::from_slice(&device(), &[1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert_eq!(err.to_string(), "data has 3 elements but shape [2, 2] needs 4");
}

#[test]
fn index_tensors_round_trip() {
    let ids = Tensor::from_u32(&device(), &[3, 1, 4, 1, 5], &[5]).unwrap();
    assert_eq!(ids.to_vec_u32().unwrap(), vec![3, 1, 4, 1, 5]);
    assert!(matches!(ids.to_vec(), Err(Error::DType { .. })));
}

#[test]
fn the_demo_is_reachable_through_the_facade() {
    // Two steps only: the full run is in `training`.
    let cfg = DemoConfig { steps: 2, ..DemoConfig::default() };
    let r = train_mlp(&device(), &cfg, |_, _| {}).unwrap();
    assert!(r.initial_loss.is_finite() && r.final_loss.is_finite());
}
