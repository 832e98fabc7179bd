//! Shared test machinery: one device for the suite, seeded random shapes, and `check_op`,
//! which holds a GPU op to its CPU reference in the forward pass and holds its backward
//! rule to central finite differences of the f64 reference.

use std::sync::OnceLock;

use moegrad::ops::rows::{packed_layouts, MOST_KEPT};
use moegrad::ops::{row_layout, HostTensor, RowLayout, ROW_THREADS};
use moegrad::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The variable that sets lavapipe's vector width in bits, hence its subgroup width (a
/// 32-bit lane each): `subgroup_width.rs` runs the subgroup paths' tests at 512.
pub const LAVAPIPE_VECTOR_WIDTH: &str = "LP_NATIVE_VECTOR_WIDTH";

/// Whether `dev` is Mesa's lavapipe (llvmpipe's Vulkan driver).
pub fn is_lavapipe(dev: &Device) -> bool {
    dev.adapter_info().device_type == moegrad::wgpu::DeviceType::Cpu && dev.name().contains("llvmpipe")
}

/// An empty folder of this process's own under the system's temporary one, for a test
/// named `name` (what an earlier run left there is removed).
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("moegrad-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A Default-MoE transformer small enough for a fraction of a second a step on lavapipe,
/// as `--set` strings.
pub const TINY_DEFAULT_MOE: [&str; 10] = [
    "model.d_model=16",
    "model.layers=1",
    "model.heads=2",
    "model.context=16",
    "model.ffn=\"default\"",
    "model.moe.experts=2",
    "model.moe.top_k=1",
    "model.moe.expert_hidden=16",
    "train.batch_size=4",
    "train.warmup=0",
];

/// A child `moegrad train --quiet` into `out` (its stderr piped): `--resume`, or a new run
/// of the tiny Default MoE with `sets` (`--force`: a child stopped before its first
/// checkpoint leaves a run with nothing to keep).
pub fn child_trainer(out: &std::path::Path, resume: bool, sets: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_moegrad"));
    cmd.args(["train", "--quiet", "--out", out.to_str().unwrap()])
        .env("NODEVICE_SELECT", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if resume {
        cmd.arg("--resume");
    } else {
        cmd.arg("--force");
        for set in TINY_DEFAULT_MOE.iter().chain(sets) {
            cmd.args(["--set", set]);
        }
    }
    cmd
}

/// The checkpoints of two run folders: both at `steps`, every tensor the same bit for bit.
pub fn assert_same_bits(a: &std::path::Path, b: &std::path::Path, steps: u64, after: &str) {
    use moegrad::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
    let (a, b) = (Checkpoint::load(&a.join(CHECKPOINT_FILE)).unwrap(), Checkpoint::load(&b.join(CHECKPOINT_FILE)).unwrap());
    assert_eq!((a.meta.step, b.meta.step), (steps, steps));
    assert_eq!(a.names(), b.names());
    for name in a.names() {
        let same = a.values(name).unwrap().iter().zip(b.values(name).unwrap()).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{name} differs after {after}: the resumed run is not the uninterrupted one");
    }
}

/// A run config from `--set` strings: `base`, then `extra` (a later key wins).
pub fn config_from_sets(base: &[&str], extra: &[&str]) -> moegrad::train::config::RunConfig {
    let sets: Vec<String> = base.iter().chain(extra).map(|s| s.to_string()).collect();
    moegrad::train::config::RunConfig::load(None, &sets).unwrap()
}

/// Trains `config` into `out` on the suite's device, without output.
pub fn train_quietly(
    config: moegrad::train::config::RunConfig,
    out: &std::path::Path,
    start: moegrad::train::run_folder::Start,
    stop_after: Option<u64>,
) -> anyhow::Result<moegrad::train::TrainSummary> {
    moegrad::train::train(
        &device(),
        moegrad::train::TrainOptions { config, out: out.to_path_buf(), start, quiet: true, stop_after, interrupt: Default::default() },
    )
}

/// The suite's shared device (pipelines compile once; each test thread has its own tape).
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| Device::new().expect("tests need a GPU adapter (lavapipe will do)")).clone()
}

/// The report of this test binary run again in a child process on the tests matching
/// `filters`, with the variables `set` set and those in `unset` removed; the child's
/// failure fails the caller, with its report.
pub fn rerun_tests(filters: &[&str], set: &[(&str, &str)], unset: &[&str]) -> String {
    let mut child = std::process::Command::new(std::env::current_exe().expect("the test binary's path"));
    child.args(filters).envs(set.iter().copied());
    for var in unset {
        child.env_remove(var);
    }
    let out = child.output().expect("the test binary runs again");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "with {set:?}:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    report
}

/// Runs `check` on the kernels' subgroup fast paths (where the adapter has subgroups, as
/// lavapipe does) and again on their portable fallbacks, so CI covers both.
pub fn on_both_paths(check: impl Fn()) {
    check();
    device().with_policy(|p| p.subgroups = false, check);
}

/// A seeded generator for a test's random shapes and data. `MOEGRAD_TEST_SEED=<n>` shifts
/// every test's seed by n, to run the suite on other shapes than CI's.
pub fn rng(seed: u64) -> StdRng {
    let shift = std::env::var("MOEGRAD_TEST_SEED").map_or(0, |s| s.parse::<u64>().expect("MOEGRAD_TEST_SEED must be a whole number"));
    StdRng::seed_from_u64(seed.wrapping_add(shift))
}

/// Each layout that packs short rows several to a workgroup on `dev` (lavapipe's 8-lane
/// subgroups: rows of 1, 2, 4 and 8 threads; 16 too at 512 bits), with row lengths a row
/// kernel lays out so: the fewest loads that select it and a random number, as vec4 and
/// as single floats. Asserts that lavapipe's subgroups, where in use, are as wide as its
/// vector width where that is set, that packed layouts exist exactly where subgroups do, that every one
/// is tested, and that a policy's `row_threads` and the portable path give a row a workgroup of
/// its own.
pub fn packed_row_lengths(dev: &Device, r: &mut StdRng) -> Vec<(RowLayout, Vec<usize>)> {
    if let (true, Ok(bits), Some(sizes)) = (is_lavapipe(dev), std::env::var(LAVAPIPE_VECTOR_WIDTH), dev.subgroup_sizes()) {
        let lanes = bits.parse::<u32>().expect("a vector width in bits") / 32;
        assert_eq!(sizes, (lanes, lanes), "lavapipe at {bits} bits has subgroups of {lanes} lanes");
    }
    let layouts = packed_layouts(dev);
    assert_eq!(layouts.is_empty(), dev.subgroup_sizes().is_none(), "packed layouts exist exactly where subgroups do");
    assert_eq!(device().with_policy(|p| p.row_threads = Some(ROW_THREADS[0]), || row_layout(dev, 64)).rows, 1);
    assert_eq!(device().with_policy(|p| p.subgroups = false, || row_layout(dev, 64)).rows, 1);
    let last = layouts.len().saturating_sub(1);
    layouts
        .iter()
        .enumerate()
        .map(|(i, &layout)| {
            // The widest packed rows (the smallest subgroup) also take up to MOST_KEPT loads a lane.
            let t = layout.threads as usize;
            let most_loads = if i == last { MOST_KEPT * t } else { t };
            let loads = [t / 2 + 1, r.random_range(t / 2 + 1..=most_loads)];
            let sizes = loads.iter().flat_map(|&l| [4 * l, if l % 4 == 0 { l - 1 } else { l }]);
            let sizes: Vec<usize> = sizes.filter(|&n| row_layout(dev, n) == layout).collect();
            assert!(!sizes.is_empty(), "no row length tested is laid out as {layout:?}");
            (layout, sizes)
        })
        .collect()
}

/// Sizes that are not multiples of any tile or workgroup.
pub const ODD_SIZES: [usize; 6] = [1, 2, 7, 33, 65, 127];

/// A dimension: an odd size half the time, otherwise anything in 1..=max.
pub fn dim(rng: &mut StdRng, max: usize) -> usize {
    if rng.random_bool(0.5) {
        let fitting: Vec<usize> = ODD_SIZES.iter().copied().filter(|&s| s <= max).collect();
        fitting[rng.random_range(0..fitting.len())]
    } else {
        rng.random_range(1..=max)
    }
}

/// A random shape of `rank` dimensions with at most `max_numel` elements.
pub fn shape(rng: &mut StdRng, rank: usize, max_numel: usize) -> Vec<usize> {
    let per_dim = ((max_numel as f64).powf(1.0 / rank.max(1) as f64) as usize).max(1);
    let mut s: Vec<usize> = (0..rank).map(|_| dim(rng, 2 * per_dim)).collect();
    while s.iter().product::<usize>() > max_numel {
        let largest = (0..rank).max_by_key(|&d| s[d]).unwrap();
        s[largest] = (s[largest] / 2).max(1);
    }
    s
}

/// Values in [lo, hi), rounded to f32 so the GPU and the reference see the same inputs.
pub fn host(rng: &mut StdRng, shape: &[usize], lo: f32, hi: f32) -> HostTensor {
    let data: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rng.random_range(lo..hi)).collect();
    HostTensor::from_f32(shape, &data)
}

pub fn upload(t: &HostTensor) -> Tensor {
    let data: Vec<f32> = t.data.iter().map(|&v| v as f32).collect();
    Tensor::from_slice(&device(), &data, &t.shape).unwrap()
}

pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= tol * w.abs().max(1.0), "{what}: element {i} is {g}, expected {w} (error {err:.3e}, tolerance {tol:.1e})");
    }
}

pub struct Tolerance {
    pub forward: f64,
    pub grad: f64,
}

pub const TOL: Tolerance = Tolerance { forward: 1e-4, grad: 2e-3 };

/// Checks one op on one set of inputs:
/// 1. the GPU forward matches the CPU reference;
/// 2. with a random output gradient w, the gradients the GPU backward rule gives every
///    input match central differences of sum(w * reference(inputs)) in f64.
pub fn check_op(name: &str, inputs: &[HostTensor], gpu: impl Fn(&[Tensor]) -> Tensor, reference: impl Fn(&[HostTensor]) -> HostTensor, tol: Tolerance) {
    let mut rng = rng(0x5eed ^ inputs.iter().map(|t| t.numel() as u64).sum::<u64>());
    let tensors: Vec<Tensor> = inputs.iter().map(|t| upload(t).requires_grad()).collect();
    let out = gpu(&tensors);
    let want = reference(inputs);
    assert_eq!(out.shape(), want.shape.as_slice(), "{name}: output shape");
    assert_close(&format!("{name} forward {:?}", shapes(inputs)), &out.to_vec().unwrap(), &want.data, tol.forward);

    let w = host(&mut rng, &want.shape, -1.0, 1.0);
    out.backward_with(&upload(&w));
    let objective = |xs: &[HostTensor]| -> f64 { reference(xs).data.iter().zip(&w.data).map(|(y, w)| y * w).sum() };
    for (i, (t, x)) in tensors.iter().zip(inputs).enumerate() {
        let grad = t.grad().map(|g| g.to_vec().unwrap()).unwrap_or_else(|| vec![0.0; x.numel()]);
        assert_eq!(grad.len(), x.numel(), "{name}: gradient size of input {i}");
        // Every position of small inputs, a random sample of large ones.
        let positions: Vec<usize> = if x.numel() <= 40 { (0..x.numel()).collect() } else { (0..40).map(|_| rng.random_range(0..x.numel())).collect() };
        for p in positions {
            let h = 1e-6 * x.data[p].abs().max(1.0);
            let mut xs = inputs.to_vec();
            xs[i].data[p] += h;
            let up = objective(&xs);
            xs[i].data[p] -= 2.0 * h;
            let down = objective(&xs);
            let numeric = (up - down) / (2.0 * h);
            let err = (grad[p] as f64 - numeric).abs();
            assert!(
                err <= tol.grad * numeric.abs().max(1.0),
                "{name} {:?}: d/d input{i}[{p}] is {} on the GPU, {numeric} by finite differences",
                shapes(inputs),
                grad[p]
            );
        }
    }
}

fn shapes(inputs: &[HostTensor]) -> Vec<Vec<usize>> {
    inputs.iter().map(|t| t.shape.clone()).collect()
}

/// Distinct experts per token (`[tokens * k]`), as a router gives; some experts may stay
/// empty.
pub fn random_choices(r: &mut rand::rngs::StdRng, tokens: usize, k: usize, experts: usize) -> Vec<u32> {
    (0..tokens)
        .flat_map(|_| {
            let mut chosen: Vec<u32> = Vec::new();
            while chosen.len() < k {
                let e = r.random_range(0..experts as u32);
                if !chosen.contains(&e) {
                    chosen.push(e);
                }
            }
            chosen
        })
        .collect()
}
