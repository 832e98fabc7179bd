//! `moegrad bench`: the workloads of the PyTorch comparison (and a per-kernel set), timed
//! with GPU timestamp queries where the adapter has them (wall clock with a full wait
//! otherwise), reported as throughput and, for known GPUs, as a fraction of peak.
//! `benches/pytorch_reference.py` prints the same keys for PyTorch on the same GPU.

pub mod data;
pub mod dist;
pub mod peaks;
pub mod table;

use std::cell::{Cell, OnceCell, RefCell};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use moegrad_core::ops::*;
use moegrad_core::{Device, KernelTime, Module, Tensor};
use moegrad_models::{FfnActivation, FfnKind, ModelConfig, MoeConfig, MoeFfn, MoeWidths, Transformer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::bench::peaks::known_peaks;
use crate::train::config::TrainConfig;
use crate::train::data::Batch;
use crate::train::loss_scale::LossScaler;
use crate::train::step::{train_step, StepSettings};

/// Problem sizes: `Gpu` is the H100 table, `Tiny` the same workloads for lavapipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    Gpu,
    Tiny,
}

/// The benchmark suites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// The workloads of the PyTorch comparison (`benches/pytorch_reference.py`).
    Pytorch,
    /// One or more workloads per kernel family.
    Kernels,
    /// Tokenization and the shard loader, on the CPU (`data.rs`).
    Data,
    /// Data-parallel training's gradient exchange, under `mpirun` (`dist.rs`).
    Dist,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::Pytorch => "pytorch",
            Suite::Kernels => "kernels",
            Suite::Data => "data",
            Suite::Dist => "dist",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub key: String,
    /// Median time of one iteration, milliseconds.
    pub ms: f64,
    /// The fastest and slowest timed iteration: how much to trust the median.
    pub ms_range: [f64; 2],
    /// Median time the host took to record one iteration (build its commands), which
    /// overlaps the GPU's work on the previous one in training.
    pub host_ms: f64,
    pub value: f64,
    pub unit: &'static str,
    /// Share of the adapter's peak for this kind of work, when the peak is known.
    pub peak_fraction: Option<f64>,
    /// The most memory one iteration held beyond what was held before it (its
    /// activations, gradients and temporaries), in MiB of pool buffers.
    pub memory_mib: f64,
    /// "gpu" (timestamp queries) or "wall".
    pub timer: &'static str,
    /// With `--profile`: the kernels of one more run, longest first (at most PROFILE_TOP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<KernelShare>>,
}

/// Kernels a profile lists; the rest are summed into one "(other kernels)" row.
const PROFILE_TOP: usize = 15;

#[derive(Clone, Debug, Serialize)]
pub struct KernelShare {
    pub kernel: String,
    pub calls: usize,
    pub ms: f64,
    /// Share of the profiled run's GPU time.
    pub share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepCounters {
    /// wgpu buffers created by training steps after the first (0 when the pool works).
    pub buffers_created_after_warmup: usize,
    pub submissions_per_step: f64,
    pub dispatches_per_step: f64,
    /// Memory a step takes beyond what was allocated before it (the model, the optimizer
    /// state, the inputs): activations, gradients and temporaries at their peak, in MiB of
    /// pool buffers (PyTorch: `max_memory_allocated` minus `memory_allocated` before).
    pub step_memory_mib: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub suite: String,
    pub device: String,
    pub results: Vec<BenchResult>,
    pub counters: Option<StepCounters>,
    /// Which kernel runs f16 matmuls on this adapter.
    pub f16_matmul: String,
    /// How the router's lanes exchange partials on this adapter.
    pub router_exchange: String,
    /// How the row kernels (softmax family, norms, cross-entropy) reduce a row.
    pub row_reduction: String,
    /// Whose kernel choices (tiles, depth splits, threads a row) ran: `gpu` or `cpu`.
    pub tuning: String,
}

enum Work {
    Flops(f64),
    /// Floating-point operations at f16 precision (against the tensor-core peak).
    F16Flops(f64),
    Bytes(f64),
    /// Bytes copied between the host and the GPU, with the host's part of the copy: timed
    /// by the wall clock, up to the data's arrival.
    Transfer(f64),
    Tokens(f64),
    Latency,
}

const WARM_UP: Duration = Duration::from_millis(300);

/// A workload's input, made the first time a workload that runs reads it, so that `--only`
/// sets up only what the chosen workloads read (at GPU shapes all of them are about 840M
/// floats drawn on the host: seconds a run). Each input draws from a seed of its own, the
/// suite's seed plus the input's place in the suite, so its values do not depend on which
/// workloads run.
struct Input<'a, T> {
    value: OnceCell<T>,
    make: Box<dyn Fn() -> Result<T> + 'a>,
}

impl<T> Input<'_, T> {
    fn get(&self) -> Result<&T> {
        if let Some(value) = self.value.get() {
            return Ok(value);
        }
        let value = (self.make)()?;
        Ok(self.value.get_or_init(|| value))
    }
}

/// A workload's last step: its result is dropped unread (and the closure may use `?`).
fn done<T>(_result: T) -> Result<()> {
    Ok(())
}

struct Runner {
    device: Device,
    iters: usize,
    profile: bool,
    /// Only workloads whose key contains one of these comma-separated parts run.
    only: Option<String>,
    results: Vec<BenchResult>,
    /// Runs of workloads so far, warm-ups included (for per-step counters).
    runs: Cell<usize>,
    /// The suite's seed, and the inputs declared so far (the next input's place).
    seed: u64,
    inputs: Cell<u64>,
}

impl Runner {
    /// An input made by `make` from its own seeded generator.
    fn input<'a, T>(&self, make: impl Fn(&mut StdRng) -> Result<T> + 'a) -> Input<'a, T> {
        let place = self.inputs.replace(self.inputs.get() + 1);
        let seed = self.seed.wrapping_add(place);
        Input { value: OnceCell::new(), make: Box::new(move || make(&mut StdRng::seed_from_u64(seed))) }
    }

    /// An input of standard normal values.
    fn randn(&self, shape: &[usize]) -> Input<'static, Tensor> {
        let (device, shape) = (self.device.clone(), shape.to_vec());
        self.input(move |rng| Ok(Tensor::randn(&device, &shape, 1.0, rng)?))
    }

    /// An input of standard normal values that backward passes accumulate gradients into.
    fn leaf(&self, shape: &[usize]) -> Input<'static, Tensor> {
        let (device, shape) = (self.device.clone(), shape.to_vec());
        self.input(move |rng| Ok(Tensor::randn(&device, &shape, 1.0, rng)?.requires_grad()))
    }

    /// Whether the workload `key` runs under `--only`.
    fn selects(&self, key: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.split(',').any(|part| !part.is_empty() && key.contains(part)))
    }

    /// The time of each of `iters` runs of `f` (sorted), after warming up for at least
    /// WARM_UP: an idle GPU runs at a fraction of its clock for a while, which would
    /// otherwise land in the first workloads' times. Also the host's time to record each
    /// run (sorted): a step is only as fast as the slower of the two. With `wall`, each
    /// run's wall-clock time up to the GPU's finishing it, host work and all (which is
    /// then also its host time).
    fn time(&self, f: &dyn Fn(), wall: bool) -> (Vec<Duration>, Vec<Duration>, &'static str) {
        let start = Instant::now();
        while start.elapsed() < WARM_UP {
            f();
            self.device.synchronize();
        }
        if wall {
            let mut times: Vec<Duration> = (0..self.iters)
                .map(|_| {
                    let start = Instant::now();
                    f();
                    self.device.synchronize();
                    start.elapsed()
                })
                .collect();
            times.sort();
            return (times.clone(), times, "wall");
        }
        let record = || {
            let start = Instant::now();
            f();
            start.elapsed()
        };
        let (mut times, mut host, mut timer) = (Vec::new(), Vec::new(), "gpu");
        for _ in 0..self.iters {
            let start = Instant::now();
            let (recording, gpu) = self.device.time_gpu(record);
            host.push(recording);
            // Without timestamp queries: the wall clock up to the GPU's finishing the run.
            times.push(gpu.unwrap_or_else(|| {
                timer = "wall";
                self.device.synchronize();
                start.elapsed()
            }));
        }
        times.sort();
        host.sort();
        (times, host, timer)
    }

    /// Times the workload `key` (when `--only` selects it), which does `work` a run of `f`.
    fn run(&mut self, key: &str, work: Work, f: &dyn Fn() -> Result<()>) -> Result<()> {
        if !self.selects(key) {
            return Ok(());
        }
        let counted = || {
            self.runs.set(self.runs.get() + 1);
            f()
        };
        // The first run makes the inputs the workload reads, so that a failure to set up
        // (a tensor too large for the adapter) ends the bench with its error.
        counted()?;
        let held = self.device.stats().bytes_in_use;
        self.device.reset_peak_memory();
        let f = &|| counted().expect("the first run made this workload's inputs");
        let (times, host, timer) = self.time(f, matches!(work, Work::Transfer(_)));
        let memory_mib = self.device.stats().peak_bytes_in_use.saturating_sub(held) as f64 / (1u64 << 20) as f64;
        let host_ms = host[host.len() / 2].as_secs_f64() * 1e3;
        let s = times[times.len() / 2].as_secs_f64().max(1e-12);
        let ms_range = [times[0].as_secs_f64() * 1e3, times[times.len() - 1].as_secs_f64() * 1e3];
        let peak = known_peaks(&self.device);
        let (value, unit, peak_fraction) = match work {
            Work::Flops(n) => (n / s / 1e12, "TFLOP/s", peak.map(|p| n / s / p.fp32_flops)),
            Work::F16Flops(n) => (n / s / 1e12, "TFLOP/s", peak.map(|p| n / s / p.fp16_tensor_flops)),
            Work::Bytes(n) => (n / s / 1e12, "TB/s", peak.map(|p| n / s / p.bytes)),
            Work::Transfer(n) => (n / s / 1e9, "GB/s", None),
            Work::Tokens(n) => (n / s, "tokens/s", None),
            Work::Latency => (s * 1e6, "us", None),
        };
        let profile = if self.profile { self.device.profile_gpu(f).1.map(kernel_shares) } else { None };
        self.results.push(BenchResult { key: key.to_string(), ms: s * 1e3, ms_range, host_ms, value, unit, peak_fraction, memory_mib, timer, profile });
        Ok(())
    }
}

/// The longest PROFILE_TOP kernels of a profile, and the rest as one row.
fn kernel_shares(profile: Vec<KernelTime>) -> Vec<KernelShare> {
    let total: f64 = profile.iter().map(|k| k.time.as_secs_f64()).sum::<f64>().max(1e-12);
    let share = |kernel: String, calls: usize, t: Duration| KernelShare { kernel, calls, ms: t.as_secs_f64() * 1e3, share: t.as_secs_f64() / total };
    let mut rows: Vec<KernelShare> = profile.iter().take(PROFILE_TOP).map(|k| share(k.kernel.clone(), k.calls, k.time)).collect();
    let rest = &profile[rows.len()..];
    if !rest.is_empty() {
        rows.push(share("(other kernels)".into(), rest.iter().map(|k| k.calls).sum(), rest.iter().map(|k| k.time).sum()));
    }
    rows
}

/// The LM training step's model, optimizer, loss scaler (f16) and batch.
struct LmStep {
    model: RefCell<Transformer>,
    opt: RefCell<AdamW>,
    scaler: RefCell<LossScaler>,
    batch: Batch,
}

/// The workloads of the PyTorch table.
fn pytorch_suite(r: &mut Runner, scale: Scale) -> Result<Option<StepCounters>> {
    let dev = r.device.clone();
    let n = if scale == Scale::Gpu { 4096 } else { 256 };
    let (a, b) = (r.randn(&[n, n]), r.randn(&[n, n]));
    r.run(&format!("matmul_{n}_fp32"), Work::Flops(2.0 * (n * n * n) as f64), &|| done(matmul(a.get()?, b.get()?)))?;
    r.run(&format!("matmul_{n}_fp16"), Work::F16Flops(2.0 * (n * n * n) as f64), &|| {
        let (a, b) = (a.get()?, b.get()?);
        done(dev.with_policy(|p| p.precision = Precision::F16, || matmul(a, b)))
    })?;

    let (rows, cols) = if scale == Scale::Gpu { (16384, 4096) } else { (512, 1024) };
    let x = r.randn(&[rows, cols]);
    r.run(&format!("softmax_{rows}x{cols}"), Work::Bytes(8.0 * (rows * cols) as f64), &|| done(softmax(x.get()?)))?;
    r.run(&format!("log_softmax_{rows}x{cols}"), Work::Bytes(8.0 * (rows * cols) as f64), &|| done(log_softmax(x.get()?)))?;

    let tokens = if scale == Scale::Gpu { 65536 } else { 4096 };
    let logits = r.randn(&[tokens, 64]);
    r.run(&format!("router_softmax_top2_{tokens}x64"), Work::Latency, &|| done(route(logits.get()?, 2, false)))?;

    // The MoE layer of the H100 table, and a fine-grained one: 64 experts of width 512,
    // top 8, as many FLOPs a token in the experts.
    if scale == Scale::Gpu {
        moe_layer_workload(r, 16384, 1024, 2048, 8, 2)?;
        moe_layer_workload(r, 16384, 1024, 512, 64, 8)?;
    } else {
        moe_layer_workload(r, 512, 64, 128, 8, 2)?;
        moe_layer_workload(r, 512, 64, 32, 64, 8)?;
    }

    let (model_cfg, batch) = lm_step_model(scale);
    let (d, layers, context, vocab) = (model_cfg.d_model, model_cfg.layers, model_cfg.context, model_cfg.vocab_size);
    let lm = lm_step_input(r, &model_cfg, batch, false);
    let step = || lm_step(&lm);
    let lm_key = format!("moe_lm_train_step_d{d}_L{layers}_E8_k2_b{batch}x{context}_V{vocab}");
    // One step before the counters start, which sets up the model and fills the pool.
    if r.selects(&lm_key) {
        step()?;
        dev.synchronize();
    }
    let (before, runs_before) = (dev.stats(), r.runs.get());
    dev.reset_peak_memory();
    r.run(&lm_key, Work::Tokens((batch * context) as f64), &step)?;
    let after = dev.stats();
    let steps = (r.runs.get() - runs_before) as f64;
    // Mixed precision: f16 matmul operands, the loss scaled.
    r.run(&format!("{lm_key}_f16"), Work::Tokens((batch * context) as f64), &|| dev.with_policy(|p| p.precision = Precision::F16, step))?;
    // Activation checkpointing at a long context: the same step keeping only each block's
    // inputs, the memory and time both ways (`memory_mib` of each).
    let (long_cfg, long_batch) = lm_step_model_long(scale);
    for checkpointing in [false, true] {
        let input = lm_step_input(r, &long_cfg, long_batch, checkpointing);
        let c = &long_cfg;
        let key = format!("moe_lm_train_step_d{}_L{}_E8_k2_b{long_batch}x{}_V{}", c.d_model, c.layers, c.context, c.vocab_size);
        let key = if checkpointing { format!("{key}_activation_checkpointing") } else { key };
        r.run(&key, Work::Tokens((long_batch * c.context) as f64), &|| lm_step(&input))?;
    }
    // Copies between host and GPU memory: a tensor's upload from a host vector
    // (`Tensor::write`) and its read-back into a new one (`Tensor::to_vec`).
    let (floats, size) = if scale == Scale::Gpu { (1 << 28, "1GiB") } else { (1 << 22, "16MiB") };
    let host = r.input(move |_| Ok((0..floats).map(|i| i as f32).collect::<Vec<f32>>()));
    let on_gpu = r.input(|_| Ok(Tensor::zeros(&dev, &[floats])?));
    let bytes = 4.0 * floats as f64;
    r.run(&format!("copy_host_to_gpu_{size}"), Work::Transfer(bytes), &|| Ok(on_gpu.get()?.write(host.get()?)?))?;
    r.run(&format!("copy_gpu_to_host_{size}"), Work::Transfer(bytes), &|| done(on_gpu.get()?.to_vec()?))?;
    // None when --only left the training step out.
    Ok((steps > 0.0).then(|| StepCounters {
        buffers_created_after_warmup: after.buffers_created - before.buffers_created,
        submissions_per_step: (after.submissions - before.submissions) as f64 / steps,
        dispatches_per_step: (after.dispatches - before.dispatches) as f64 / steps,
        step_memory_mib: (after.peak_bytes_in_use - before.bytes_in_use) as f64 / (1u64 << 20) as f64,
    }))
}

/// A TopK MoE layer's forward and backward pass over `t` tokens of width `d`, `experts`
/// GELU experts of width `f`, `top_k` a token.
fn moe_layer_workload(r: &mut Runner, t: usize, d: usize, f: usize, experts: usize, top_k: usize) -> Result<()> {
    let dev = r.device.clone();
    let moe = r.input(|rng| {
        let cfg = MoeConfig { experts, top_k, expert_hidden: f, activation: FfnActivation::Gelu, aux_loss_coef: 0.0, z_loss_coef: 0.0, ..MoeConfig::default() };
        let layer = MoeFfn::new(&dev, FfnKind::Topk, MoeWidths { d, expert_hidden: f, shared_hidden: f }, &cfg, 0.02, rng)?;
        Ok((layer, Tensor::randn(&dev, &[t, d], 1.0, rng)?.requires_grad(), Tensor::randn(&dev, &[t, d], 1.0, rng)?))
    });
    // Two grouped matmuls a slot, forward and twice backward.
    let flops = 3.0 * 2.0 * 2.0 * (t * top_k * d * f) as f64;
    r.run(&format!("moe_layer_fwd_bwd_T{t}_d{d}_f{f}_E{experts}_k{top_k}"), Work::Flops(flops), &|| {
        let (moe, x, seed) = moe.get()?;
        moe.forward(x, true).0.backward_with(seed);
        moe.parameters().iter().for_each(Tensor::zero_grad);
        x.zero_grad();
        Ok(())
    })
}

/// The LM step's model and inputs, with activation checkpointing or without.
fn lm_step_input<'a>(r: &Runner, config: &ModelConfig, batch: usize, checkpointing: bool) -> Input<'a, LmStep> {
    let (dev, config) = (r.device.clone(), config.clone());
    r.input(move |rng| {
        let (context, vocab) = (config.context, config.vocab_size);
        let mut model = Transformer::new(&dev, &config, rng)?;
        model.activation_checkpointing = checkpointing;
        let opt = RefCell::new(AdamW::new(&model, AdamWConfig::default())?);
        let ids: Vec<u32> = (0..batch * (context + 1)).map(|_| rng.random_range(0..vocab as u32)).collect();
        let inputs = Tensor::from_u32(&dev, &ids[..batch * context], &[batch, context])?;
        let targets = Tensor::from_u32(&dev, &ids[batch..batch + batch * context], &[batch * context])?;
        let scaler = RefCell::new(LossScaler::new(TrainConfig::default().loss_scale, TrainConfig::default().loss_scale_growth_every));
        Ok(LmStep { model: RefCell::new(model), opt, scaler, batch: Batch { inputs, targets } })
    })
}

/// The trainer's own step (`train_step`) on `input`, with the f16 runs' loss scaling and
/// its read-back of the gradient norm.
fn lm_step(input: &Input<LmStep>) -> Result<()> {
    let LmStep { model, opt, scaler, batch } = input.get()?;
    let settings = StepSettings { lr: opt.borrow().config.lr, clip: 1.0, grad_accum: 1 };
    let f16 = model.borrow().embed.device().policy().precision == Precision::F16;
    let mut scaler = scaler.borrow_mut();
    let out = train_step(&mut model.borrow_mut(), &mut opt.borrow_mut(), f16.then_some(&mut *scaler), settings, None, |_| Ok(batch.clone()))?;
    done(out)
}

/// The LM step's model at a context of 2,048 (1,024 at the tiny scale's 256) with as many
/// tokens a step, for the activation-checkpointing pair.
pub fn lm_step_model_long(scale: Scale) -> (ModelConfig, usize) {
    let (mut config, batch) = lm_step_model(scale);
    let context = if scale == Scale::Gpu { 2048 } else { 256 };
    let batch = (batch * config.context / context).max(1);
    config.context = context;
    (config, batch)
}

/// The MoE LM of the training-step workload (d512, 8 layers, 8 experts of width 1024, top
/// 2, GPT-2's vocabulary at the GPU scale), and its batch in sequences.
pub fn lm_step_model(scale: Scale) -> (ModelConfig, usize) {
    let (d, layers, batch, context, vocab) = if scale == Scale::Gpu { (512, 8, 16, 512, 50304) } else { (64, 2, 4, 64, 512) };
    let config = ModelConfig {
        vocab_size: vocab,
        d_model: d,
        layers,
        heads: d / 64,
        context,
        ffn: FfnKind::Topk,
        moe: MoeConfig { experts: 8, top_k: 2, expert_hidden: 2 * d, ..MoeConfig::default() },
        ..ModelConfig::default()
    };
    (config, batch)
}

/// One forward run of every kernel family.
fn kernels_suite(r: &mut Runner, scale: Scale) -> Result<()> {
    let dev = r.device.clone();
    let n = if scale == Scale::Gpu { 2048 } else { 256 };
    let (a, b) = (r.randn(&[n, n]), r.randn(&[n, n]));
    for (ta, tb, name) in [(false, false, "nn"), (false, true, "nt"), (true, false, "tn")] {
        r.run(&format!("matmul_{name}_{n}"), Work::Flops(2.0 * (n * n * n) as f64), &|| done(matmul_t(a.get()?, b.get()?, ta, tb)))?;
    }
    // Each entry of the register-tile table, for tuning `Tiles::for_device` on this adapter.
    for tiles in Tiles::ALL {
        r.run(&format!("matmul_{n}_tiles_{tiles}"), Work::Flops(2.0 * (n * n * n) as f64), &|| {
            let (a, b) = (a.get()?, b.get()?);
            done(dev.with_policy(|p| p.matmul_tiles = Some(tiles), || matmul(a, b)))
        })?;
    }
    // And each tensor-core shape worth trying, where the adapter has tensor cores.
    if f16_matmul_kernel(&dev).starts_with("tensor cores") {
        for coop in CoopTiles::CANDIDATES {
            r.run(&format!("matmul_{n}_fp16_coop_{coop}"), Work::F16Flops(2.0 * (n * n * n) as f64), &|| {
                let (a, b) = (a.get()?, b.get()?);
                done(dev.with_policy(|p| (p.precision, p.coop_tiles) = (Precision::F16, Some(coop)), || matmul(a, b)))
            })?;
        }
    }
    let len = if scale == Scale::Gpu { 1 << 26 } else { 1 << 18 };
    let (x, y) = (r.randn(&[len]), r.randn(&[len]));
    r.run("add", Work::Bytes(12.0 * len as f64), &|| done(x.get()?.add(y.get()?)))?;
    r.run("gelu", Work::Bytes(8.0 * len as f64), &|| done(x.get()?.gelu()))?;
    // A bias over the rows of a matrix, forward (read the rows, write the sums) and
    // backward (read the rows' gradient to sum the bias's; the rows' own passes through).
    let width = if scale == Scale::Gpu { 1024 } else { 64 };
    let (rows, bias, seed) = (r.leaf(&[len / width, width]), r.leaf(&[width]), r.randn(&[len / width, width]));
    r.run("bias_add_fwd_bwd", Work::Bytes(12.0 * len as f64), &|| {
        let (rows, bias) = (rows.get()?, bias.get()?);
        rows.add(bias).backward_with(seed.get()?);
        rows.zero_grad();
        bias.zero_grad();
        Ok(())
    })?;
    r.run("sum_all", Work::Bytes(4.0 * len as f64), &|| done(x.get()?.sum_all()))?;
    // The optimizer's pass over a parameter: the gradient norm (reads the gradient), then
    // a clipped AdamW step (reads parameter, gradient and moments, writes all but the
    // gradient).
    let adamw = r.input(|rng| {
        let param = Tensor::randn(&dev, &[len], 1.0, rng)?.requires_grad();
        param.set_grad(Tensor::randn(&dev, &[len], 1.0, rng)?);
        let opt = RefCell::new(AdamW::new(std::slice::from_ref(&param), AdamWConfig::default())?);
        Ok((param, opt))
    });
    r.run("adamw_clipped", Work::Bytes(32.0 * len as f64), &|| {
        let (param, opt) = adamw.get()?;
        let norm = grad_norm(std::slice::from_ref(param), 1.0, 1.0).expect("the parameter has a gradient");
        opt.borrow_mut().step_clipped(1e-3, &norm);
        Ok(())
    })?;
    let (rows, cols) = if scale == Scale::Gpu { (16384, 4096) } else { (512, 1024) };
    let (s, w) = (r.randn(&[rows, cols]), r.randn(&[cols]));
    r.run("stablemax", Work::Bytes(8.0 * (rows * cols) as f64), &|| done(stablemax(s.get()?)))?;
    // Each row size a row kernel may use, for tuning the default (`row_threads`) on this
    // adapter.
    for threads in row_threads_allowed(&dev) {
        r.run(&format!("softmax_threads_{threads}"), Work::Bytes(8.0 * (rows * cols) as f64), &|| {
            let s = s.get()?;
            done(dev.with_policy(|p| p.row_threads = Some(threads), || softmax(s)))
        })?;
    }
    r.run("rms_norm", Work::Bytes(8.0 * (rows * cols) as f64), &|| done(rms_norm(s.get()?, w.get()?, 1e-5)))?;
    let delta = r.randn(&[rows, cols]);
    r.run("add_rms_norm", Work::Bytes(16.0 * (rows * cols) as f64), &|| done(add_rms_norm(s.get()?, delta.get()?, w.get()?, 1e-5)))?;
    let targets = r.input(|_| Ok(Tensor::from_u32(&dev, &(0..rows as u32).map(|i| i % cols as u32).collect::<Vec<_>>(), &[rows])?));
    r.run("cross_entropy", Work::Bytes(4.0 * (rows * cols) as f64), &|| done(cross_entropy(s.get()?, targets.get()?, CrossEntropyOptions::default())))?;
    let tokens = if scale == Scale::Gpu { 65536 } else { 4096 };
    let logits = r.randn(&[tokens, 64]);
    let routed = r.input(|_| Ok(route(logits.get()?, 2, false)));
    let plan = r.input(|_| Ok(plan_routing(&routed.get()?.indices, 64)));
    r.run(&format!("router_with_stats_{tokens}x64"), Work::Latency, &|| done(route_with_stats(logits.get()?, 2, false)))?;
    r.run("permute", Work::Tokens((tokens * 2) as f64), &|| done(plan_routing(&routed.get()?.indices, 64)))?;
    r.run("load_balancing_loss", Work::Bytes(4.0 * (tokens * 64) as f64), &|| done(load_balancing_loss(&routed.get()?.probs, plan.get()?, 0.01)))?;
    // The LM step's embedding at its shape (8,192 tokens of a 50,304 x 512 table), forward
    // and backward: the gather reads and writes the tokens' rows, the backward pass fills
    // the table's gradient, reads the rows' gradients and writes the table's.
    let (lm_tokens, vocab, width) = if scale == Scale::Gpu { (8192, 50304, 512) } else { (256, 512, 64) };
    let (table, rows_grad) = (r.leaf(&[vocab, width]), r.randn(&[lm_tokens, width]));
    let ids = r.input(|rng| Ok(Tensor::from_u32(&dev, &(0..lm_tokens).map(|_| rng.random_range(0..vocab as u32)).collect::<Vec<_>>(), &[lm_tokens])?));
    r.run("embedding_fwd_bwd", Work::Bytes(4.0 * (3 * lm_tokens * width + 2 * vocab * width) as f64), &|| {
        let table = table.get()?;
        embedding(table, ids.get()?).backward_with(rows_grad.get()?);
        table.zero_grad();
        Ok(())
    })?;
    let d = if scale == Scale::Gpu { 1024 } else { 64 };
    let h = r.randn(&[tokens, d]);
    r.run("gather_slots", Work::Bytes(16.0 * (tokens * d) as f64), &|| done(gather_slots(h.get()?, plan.get()?)))?;
    let rows_sorted = r.randn(&[tokens * 2, d]);
    r.run("combine_slots", Work::Bytes(12.0 * (tokens * d) as f64), &|| done(combine_slots(rows_sorted.get()?, &routed.get()?.weights, plan.get()?)))?;
    // With its backward pass: each slot's row gradient (read the token's gradient, write
    // the slot's row) and its weight's gradient (read both rows), 16 bytes a slot's float
    // (two slots a token) on top of the forward pass's 12 a token's.
    let (combined_rows, gate_weights, combined_grad) = (r.leaf(&[tokens * 2, d]), r.leaf(&[tokens, 2]), r.randn(&[tokens, d]));
    r.run("combine_slots_fwd_bwd", Work::Bytes(44.0 * (tokens * d) as f64), &|| {
        let (rows, weights) = (combined_rows.get()?, gate_weights.get()?);
        combine_slots(rows, weights, plan.get()?).backward_with(combined_grad.get()?);
        rows.zero_grad();
        weights.zero_grad();
        Ok(())
    })?;
    let ew = r.randn(&[64, d, d]);
    r.run("grouped_matmul", Work::Flops(2.0 * (tokens * 2 * d * d) as f64), &|| done(grouped_matmul(rows_sorted.get()?, ew.get()?, &plan.get()?.offsets)))?;
    // Attention forward and backward at the LM step's shape (batch x heads, positions,
    // head width), causal and full: six products of 2 (bh t^2 hd) FLOPs each, of which
    // the causal mask leaves half to compute.
    let (bh, t, hd) = if scale == Scale::Gpu { (128, 512, 64) } else { (8, 256, 32) };
    let (q, k, v, seed) = (r.leaf(&[bh, t, hd]), r.leaf(&[bh, t, hd]), r.leaf(&[bh, t, hd]), r.randn(&[bh, t, hd]));
    let full_flops = 12.0 * (bh * t * t * hd) as f64;
    for (causal, name, flops) in [(true, "causal", full_flops / 2.0), (false, "full", full_flops)] {
        r.run(&format!("attention_{name}_fwd_bwd_{bh}x{t}x{hd}"), Work::Flops(flops), &|| {
            let qkv = [q.get()?, k.get()?, v.get()?];
            attention(qkv[0], qkv[1], qkv[2], causal).backward_with(seed.get()?);
            qkv.iter().for_each(|t| t.zero_grad());
            Ok(())
        })?;
    }
    // Attention's causal softmax at the same shape, at each row size a row kernel may use,
    // for tuning `row_threads` on short rows as `softmax_threads_*` does on long ones; the
    // masked half of the scores is never read, so it moves 6 bytes a score.
    let scores = r.randn(&[bh, t, t]);
    let score_bytes = 6.0 * (bh * t * t) as f64;
    for threads in row_threads_allowed(&dev) {
        r.run(&format!("causal_softmax_{t}_threads_{threads}"), Work::Bytes(score_bytes), &|| {
            let scores = scores.get()?;
            done(dev.with_policy(|p| p.row_threads = Some(threads), || causal_softmax(scores)))
        })?;
    }
    // And as it runs by default: rows packed several to a workgroup where subgroups allow.
    let layout = row_layout(&dev, t);
    r.run(&format!("causal_softmax_{t}_layout_{}x{}", layout.threads, layout.rows), Work::Bytes(score_bytes), &|| done(causal_softmax(scores.get()?)))?;
    // Attention's layout changes at the same shape, 8 heads: the fused projection into
    // rotated heads, and the heads back into token rows (each value read and written once).
    let (batch, heads) = (bh / 8, 8);
    let projection = r.randn(&[batch * t, 3 * heads * hd]);
    let table = r.input(|_| Ok(RopeTable::new(&dev, t, hd, 10_000.0)?));
    r.run("split_heads", Work::Bytes(8.0 * (batch * t * 3 * heads * hd) as f64), &|| done(split_heads(projection.get()?, batch, heads, table.get()?, 0)))?;
    r.run("merge_heads", Work::Bytes(8.0 * (bh * t * hd) as f64), &|| done(merge_heads(seed.get()?, batch)))?;
    Ok(())
}

/// What to run besides the suite's name.
#[derive(Clone, Debug)]
pub struct Options {
    pub scale: Scale,
    /// Timed runs per workload (the median is reported).
    pub iters: usize,
    pub seed: u64,
    /// Run each workload once more with every kernel timed.
    pub profile: bool,
    /// Only the workloads whose key contains one of these comma-separated parts, which
    /// are also the only ones whose inputs are set up.
    pub only: Option<String>,
}

impl Options {
    pub fn new(scale: Scale) -> Self {
        Options { scale, iters: 10, seed: 0, profile: false, only: None }
    }
}

/// Runs `suite`; `--only` parts that select no workload are an error.
pub fn run(device: &Device, suite: Suite, options: &Options) -> Result<Report> {
    if options.iters == 0 {
        bail!("bench: iters must be at least 1");
    }
    let mut runner = Runner {
        device: device.clone(),
        iters: options.iters,
        profile: options.profile,
        only: options.only.clone(),
        results: Vec::new(),
        runs: Cell::default(),
        seed: options.seed,
        inputs: Cell::default(),
    };
    // Forward-only workloads record nothing (their inputs track no gradient); the
    // training workloads and attention's backward need the tape.
    let counters = match suite {
        Suite::Pytorch => pytorch_suite(&mut runner, options.scale)?,
        Suite::Kernels => kernels_suite(&mut runner, options.scale).map(|_| None)?,
        Suite::Data => bail!("the data suite times the CPU, not a device: run it with data::run_data_suite"),
        Suite::Dist => bail!("the dist suite needs the job's ranks: run it with dist::run_dist_suite"),
    };
    if let (Some(only), true) = (&options.only, runner.results.is_empty()) {
        bail!("--only {only:?} selects no workload of the {} suite (run it without --only to see the keys)", suite.name());
    }
    let f16_matmul = f16_matmul_kernel(device).to_string();
    let router_exchange = router_exchange(device).to_string();
    let row_reduction = workgroup_reduction(device).to_string();
    let tuning = if device.tuned_for_cpu() { "cpu" } else { "gpu" }.to_string();
    Ok(Report {
        suite: suite.name().to_string(),
        device: device.name().to_string(),
        results: runner.results,
        counters,
        f16_matmul,
        router_exchange,
        row_reduction,
        tuning,
    })
}
