//! `moegrad bench`: the workloads of the PyTorch comparison (and a per-kernel set), timed
//! with GPU timestamp queries where the adapter has them (wall clock with a full wait
//! otherwise), reported as throughput and, for known GPUs, as a fraction of peak.
//! `benches/pytorch_reference.py` prints the same keys for PyTorch on the same GPU.

use std::time::{Duration, Instant};

use anyhow::Result;
use moegrad_engine::{Device, KernelTime, Tensor};
use moegrad_models::{FfnActivation, FfnKind, ModelConfig, MoeConfig, MoeFfn, Transformer};
use moegrad_ops::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Problem sizes: `Gpu` is the H100 table, `Tiny` the same workloads for lavapipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Gpu,
    Tiny,
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
}

/// Dense peaks of adapters we know (SXM parts).
struct Peaks {
    fp32_flops: f64,
    fp16_tensor_flops: f64,
    bytes: f64,
}

fn peaks(device: &Device) -> Option<Peaks> {
    let name = device.name().to_lowercase();
    if name.contains("h100") {
        Some(Peaks { fp32_flops: 67e12, fp16_tensor_flops: 989e12, bytes: 3.35e12 })
    } else if name.contains("h200") {
        Some(Peaks { fp32_flops: 67e12, fp16_tensor_flops: 989e12, bytes: 4.8e12 })
    } else {
        None
    }
}

enum Work {
    Flops(f64),
    /// Floating-point operations at f16 precision (against the tensor-core peak).
    F16Flops(f64),
    Bytes(f64),
    Tokens(f64),
    Latency,
}

const WARM_UP: Duration = Duration::from_millis(300);

struct Runner {
    device: Device,
    iters: usize,
    profile: bool,
    /// Only workloads whose key contains one of these comma-separated parts run.
    only: Option<String>,
    results: Vec<BenchResult>,
    /// Runs of workloads so far, warm-ups included (for per-step counters).
    runs: std::cell::Cell<usize>,
}

impl Runner {
    /// The time of each of `iters` runs of `f` (sorted), after warming up for at least
    /// WARM_UP: an idle GPU runs at a fraction of its clock for a while, which would
    /// otherwise land in the first workloads' times. Also the host's time to record each
    /// run (sorted): a step is only as fast as the slower of the two.
    fn time(&self, f: &dyn Fn()) -> (Vec<Duration>, Vec<Duration>, &'static str) {
        let start = Instant::now();
        while start.elapsed() < WARM_UP {
            f();
            self.device.synchronize();
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

    fn run(&mut self, key: &str, work: Work, f: &dyn Fn()) {
        if self.only.as_ref().is_some_and(|only| !only.split(',').any(|part| !part.is_empty() && key.contains(part))) {
            return;
        }
        let f = &|| {
            self.runs.set(self.runs.get() + 1);
            f()
        };
        let (times, host, timer) = self.time(f);
        let host_ms = host[host.len() / 2].as_secs_f64() * 1e3;
        let s = times[times.len() / 2].as_secs_f64().max(1e-12);
        let ms_range = [times[0].as_secs_f64() * 1e3, times[times.len() - 1].as_secs_f64() * 1e3];
        let peak = peaks(&self.device);
        let (value, unit, peak_fraction) = match work {
            Work::Flops(n) => (n / s / 1e12, "TFLOP/s", peak.map(|p| n / s / p.fp32_flops)),
            Work::F16Flops(n) => (n / s / 1e12, "TFLOP/s", peak.map(|p| n / s / p.fp16_tensor_flops)),
            Work::Bytes(n) => (n / s / 1e12, "TB/s", peak.map(|p| n / s / p.bytes)),
            Work::Tokens(n) => (n / s, "tokens/s", None),
            Work::Latency => (s * 1e6, "us", None),
        };
        let profile = if self.profile { self.device.profile_gpu(f).1.map(kernel_shares) } else { None };
        self.results.push(BenchResult { key: key.to_string(), ms: s * 1e3, ms_range, host_ms, value, unit, peak_fraction, timer, profile });
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

fn randn(dev: &Device, shape: &[usize], rng: &mut StdRng) -> Result<Tensor> {
    Ok(Tensor::randn(dev, shape, 1.0, rng)?)
}

/// The workloads of the PyTorch table.
fn pytorch_suite(r: &mut Runner, scale: Scale, rng: &mut StdRng) -> Result<Option<StepCounters>> {
    let dev = r.device.clone();
    let n = if scale == Scale::Gpu { 4096 } else { 256 };
    let (a, b) = (randn(&dev, &[n, n], rng)?, randn(&dev, &[n, n], rng)?);
    r.run(&format!("matmul_{n}_fp32"), Work::Flops(2.0 * (n * n * n) as f64), &|| drop(matmul(&a, &b)));
    r.run(&format!("matmul_{n}_fp16"), Work::F16Flops(2.0 * (n * n * n) as f64), &|| drop(with_matmul_precision(Precision::F16, || matmul(&a, &b))));

    let (rows, cols) = if scale == Scale::Gpu { (16384, 4096) } else { (512, 1024) };
    let x = randn(&dev, &[rows, cols], rng)?;
    r.run(&format!("softmax_{rows}x{cols}"), Work::Bytes(8.0 * (rows * cols) as f64), &|| drop(softmax(&x)));
    r.run(&format!("log_softmax_{rows}x{cols}"), Work::Bytes(8.0 * (rows * cols) as f64), &|| drop(log_softmax(&x)));

    let tokens = if scale == Scale::Gpu { 65536 } else { 4096 };
    let logits = randn(&dev, &[tokens, 64], rng)?;
    r.run(&format!("router_softmax_top2_{tokens}x64"), Work::Latency, &|| drop(route(&logits, 2, false)));

    let (t, d, f) = if scale == Scale::Gpu { (16384, 1024, 2048) } else { (512, 64, 128) };
    let cfg = MoeConfig { experts: 8, top_k: 2, expert_hidden: f, activation: FfnActivation::Gelu, aux_loss_coef: 0.0, z_loss_coef: 0.0, ..MoeConfig::default() };
    let moe = MoeFfn::new(&dev, FfnKind::Topk, d, f, &cfg, 0.02, rng)?;
    let x = randn(&dev, &[t, d], rng)?.requires_grad();
    let seed = randn(&dev, &[t, d], rng)?;
    let moe_flops = 3.0 * 2.0 * 2.0 * (t * 2 * d * f) as f64; // two grouped matmuls, forward + 2x backward
    r.run(&format!("moe_layer_fwd_bwd_T{t}_d{d}_f{f}_E8_k2"), Work::Flops(moe_flops), &|| {
        moe.forward(&x, true).0.backward_with(&seed);
        moe.parameters().iter().for_each(|(_, p)| p.zero_grad());
        x.zero_grad();
    });

    let (d, layers, batch, context, vocab) = if scale == Scale::Gpu { (512, 8, 16, 512, 50304) } else { (64, 2, 4, 64, 512) };
    let model_cfg = ModelConfig {
        vocab_size: vocab,
        d_model: d,
        layers,
        heads: d / 64,
        context,
        ffn: FfnKind::Topk,
        moe: MoeConfig { experts: 8, top_k: 2, expert_hidden: 2 * d, ..MoeConfig::default() },
        ..ModelConfig::default()
    };
    let model = Transformer::new(&dev, &model_cfg, rng)?;
    let mut opt = AdamW::new(model.parameters(), AdamWConfig::default())?;
    let ids: Vec<u32> = (0..batch * (context + 1)).map(|_| rng.random_range(0..vocab as u32)).collect();
    let inputs = Tensor::from_u32(&dev, &ids[..batch * context], &[batch, context])?;
    let targets = Tensor::from_u32(&dev, &ids[batch..batch + batch * context], &[batch * context])?;
    let opt = std::cell::RefCell::new(&mut opt);
    let step = || {
        let out = model.forward(&inputs, true);
        let loss = cross_entropy(&out.logits, &targets, CrossEntropyOptions::default());
        match out.aux_loss() {
            Some(aux) => loss.add(&aux).backward(),
            None => loss.backward(),
        }
        let norm = grad_norm(opt.borrow().parameters(), 1.0, 1.0).expect("the model has gradients");
        let lr = opt.borrow().config.lr;
        opt.borrow_mut().step_clipped(lr, &norm);
        opt.borrow().zero_grad();
        model.commit_defaults();
    };
    step();
    dev.synchronize();
    let (before, runs_before) = (dev.stats(), r.runs.get());
    dev.reset_peak_memory();
    let lm_key = format!("moe_lm_train_step_d{d}_L{layers}_E8_k2_b{batch}x{context}_V{vocab}");
    r.run(&lm_key, Work::Tokens((batch * context) as f64), &step);
    let after = dev.stats();
    let steps = (r.runs.get() - runs_before) as f64;
    // Mixed precision: f16 matmul operands (the loss scale changes no kernel's speed).
    r.run(&format!("{lm_key}_f16"), Work::Tokens((batch * context) as f64), &|| with_matmul_precision(Precision::F16, step));
    // None when --only left the training step out.
    Ok((steps > 0.0).then(|| StepCounters {
        buffers_created_after_warmup: after.buffers_created - before.buffers_created,
        submissions_per_step: (after.submissions - before.submissions) as f64 / steps,
        dispatches_per_step: (after.dispatches - before.dispatches) as f64 / steps,
        step_memory_mib: (after.peak_bytes_in_use - before.bytes_in_use) as f64 / (1u64 << 20) as f64,
    }))
}

/// One forward run of every kernel family.
fn kernels_suite(r: &mut Runner, scale: Scale, rng: &mut StdRng) -> Result<()> {
    let dev = r.device.clone();
    let n = if scale == Scale::Gpu { 2048 } else { 256 };
    let (a, b) = (randn(&dev, &[n, n], rng)?, randn(&dev, &[n, n], rng)?);
    for (ta, tb, name) in [(false, false, "nn"), (false, true, "nt"), (true, false, "tn")] {
        r.run(&format!("matmul_{name}_{n}"), Work::Flops(2.0 * (n * n * n) as f64), &|| drop(matmul_t(&a, &b, ta, tb)));
    }
    // Each entry of the register-tile table, for tuning `Tiles::for_device` on this adapter.
    for tiles in Tiles::ALL {
        r.run(&format!("matmul_{n}_tiles_{tiles}"), Work::Flops(2.0 * (n * n * n) as f64), &|| drop(with_matmul_tiles(tiles, || matmul(&a, &b))));
    }
    // And each tensor-core shape worth trying, where the adapter has tensor cores.
    if f16_matmul_kernel(&dev).starts_with("tensor cores") {
        for coop in CoopTiles::CANDIDATES {
            let f16_product = || with_matmul_precision(Precision::F16, || with_coop_tiles(coop, || matmul(&a, &b)));
            r.run(&format!("matmul_{n}_fp16_coop_{coop}"), Work::F16Flops(2.0 * (n * n * n) as f64), &|| drop(f16_product()));
        }
    }
    let len = if scale == Scale::Gpu { 1 << 26 } else { 1 << 18 };
    let (x, y) = (randn(&dev, &[len], rng)?, randn(&dev, &[len], rng)?);
    r.run("add", Work::Bytes(12.0 * len as f64), &|| drop(x.add(&y)));
    r.run("gelu", Work::Bytes(8.0 * len as f64), &|| drop(x.gelu()));
    // A bias over the rows of a matrix, forward (read the rows, write the sums) and
    // backward (read the rows' gradient to sum the bias's; the rows' own passes through).
    let width = if scale == Scale::Gpu { 1024 } else { 64 };
    let (rows, bias) = (randn(&dev, &[len / width, width], rng)?.requires_grad(), randn(&dev, &[width], rng)?.requires_grad());
    let seed = randn(&dev, &[len / width, width], rng)?;
    r.run("bias_add_fwd_bwd", Work::Bytes(12.0 * len as f64), &|| {
        rows.add(&bias).backward_with(&seed);
        rows.zero_grad();
        bias.zero_grad();
    });
    r.run("sum_all", Work::Bytes(4.0 * len as f64), &|| drop(x.sum_all()));
    // The optimizer's pass over a parameter: the gradient norm (reads the gradient), then
    // a clipped AdamW step (reads parameter, gradient and moments, writes all but the
    // gradient).
    let param = randn(&dev, &[len], rng)?.requires_grad();
    param.set_grad(y.clone());
    let mut opt = AdamW::new(vec![param.clone()], AdamWConfig::default())?;
    let opt = std::cell::RefCell::new(&mut opt);
    r.run("adamw_clipped", Work::Bytes(32.0 * len as f64), &|| {
        let norm = grad_norm(std::slice::from_ref(&param), 1.0, 1.0).expect("the parameter has a gradient");
        opt.borrow_mut().step_clipped(1e-3, &norm);
    });
    let (rows, cols) = if scale == Scale::Gpu { (16384, 4096) } else { (512, 1024) };
    let s = randn(&dev, &[rows, cols], rng)?;
    let w = randn(&dev, &[cols], rng)?;
    r.run("stablemax", Work::Bytes(8.0 * (rows * cols) as f64), &|| drop(stablemax(&s)));
    // Each row size a row kernel may use, for tuning the default (`row_threads`) on this
    // adapter.
    for threads in row_threads_allowed(&dev) {
        r.run(&format!("softmax_threads_{threads}"), Work::Bytes(8.0 * (rows * cols) as f64), &|| drop(with_row_threads(threads, || softmax(&s))));
    }
    r.run("rms_norm", Work::Bytes(8.0 * (rows * cols) as f64), &|| drop(rms_norm(&s, &w, 1e-5)));
    let delta = randn(&dev, &[rows, cols], rng)?;
    r.run("add_rms_norm", Work::Bytes(16.0 * (rows * cols) as f64), &|| drop(add_rms_norm(&s, &delta, &w, 1e-5)));
    let targets = Tensor::from_u32(&dev, &(0..rows as u32).map(|i| i % cols as u32).collect::<Vec<_>>(), &[rows])?;
    r.run("cross_entropy", Work::Bytes(4.0 * (rows * cols) as f64), &|| drop(cross_entropy(&s, &targets, CrossEntropyOptions::default())));
    let tokens = if scale == Scale::Gpu { 65536 } else { 4096 };
    let logits = randn(&dev, &[tokens, 64], rng)?;
    let routed = route(&logits, 2, false);
    r.run(&format!("router_with_stats_{tokens}x64"), Work::Latency, &|| drop(route_with_stats(&logits, 2, false)));
    r.run("permute", Work::Tokens((tokens * 2) as f64), &|| drop(plan_routing(&routed.indices, 64)));
    let plan = plan_routing(&routed.indices, 64);
    r.run("load_balancing_loss", Work::Bytes(4.0 * (tokens * 64) as f64), &|| drop(load_balancing_loss(&routed.probs, &plan, 0.01)));
    // The LM step's embedding at its shape (8,192 tokens of a 50,304 x 512 table), forward
    // and backward: the gather reads and writes the tokens' rows, the backward pass fills
    // the table's gradient, reads the rows' gradients and writes the table's.
    let (lm_tokens, vocab, width) = if scale == Scale::Gpu { (8192, 50304, 512) } else { (256, 512, 64) };
    let table = randn(&dev, &[vocab, width], rng)?.requires_grad();
    let ids = Tensor::from_u32(&dev, &(0..lm_tokens).map(|_| rng.random_range(0..vocab as u32)).collect::<Vec<_>>(), &[lm_tokens])?;
    let rows_grad = randn(&dev, &[lm_tokens, width], rng)?;
    r.run("embedding_fwd_bwd", Work::Bytes(4.0 * (3 * lm_tokens * width + 2 * vocab * width) as f64), &|| {
        embedding(&table, &ids).backward_with(&rows_grad);
        table.zero_grad();
    });
    let d = if scale == Scale::Gpu { 1024 } else { 64 };
    let h = randn(&dev, &[tokens, d], rng)?;
    r.run("gather_slots", Work::Bytes(16.0 * (tokens * d) as f64), &|| drop(gather_slots(&h, &plan)));
    let rows_sorted = randn(&dev, &[tokens * 2, d], rng)?;
    r.run("combine_slots", Work::Bytes(12.0 * (tokens * d) as f64), &|| drop(combine_slots(&rows_sorted, &routed.weights, &plan)));
    let ew = randn(&dev, &[64, d, d], rng)?;
    r.run("grouped_matmul", Work::Flops(2.0 * (tokens * 2 * d * d) as f64), &|| drop(grouped_matmul(&rows_sorted, &ew, &plan.offsets)));
    // Attention forward and backward at the LM step's shape (batch x heads, positions,
    // head width), causal and full: six products of 2 (bh t^2 hd) FLOPs each, of which
    // the causal mask leaves half to compute.
    let (bh, t, hd) = if scale == Scale::Gpu { (128, 512, 64) } else { (8, 256, 32) };
    let qkv = (0..3).map(|_| Ok(randn(&dev, &[bh, t, hd], rng)?.requires_grad())).collect::<Result<Vec<Tensor>>>()?;
    let seed = randn(&dev, &[bh, t, hd], rng)?;
    let full_flops = 12.0 * (bh * t * t * hd) as f64;
    for (causal, name, flops) in [(true, "causal", full_flops / 2.0), (false, "full", full_flops)] {
        r.run(&format!("attention_{name}_fwd_bwd_{bh}x{t}x{hd}"), Work::Flops(flops), &|| {
            attention(&qkv[0], &qkv[1], &qkv[2], causal).backward_with(&seed);
            qkv.iter().for_each(Tensor::zero_grad);
        });
    }
    // Attention's causal softmax at the same shape, at each row size a row kernel may use,
    // for tuning `row_threads` on short rows as `softmax_threads_*` does on long ones; the
    // masked half of the scores is never read, so it moves 6 bytes a score.
    let scores = randn(&dev, &[bh, t, t], rng)?;
    for threads in row_threads_allowed(&dev) {
        r.run(&format!("causal_softmax_{t}_threads_{threads}"), Work::Bytes(6.0 * scores.numel() as f64), &|| drop(with_row_threads(threads, || causal_softmax(&scores))));
    }
    // And as it runs by default: rows packed several to a workgroup where subgroups allow.
    let layout = row_layout(&dev, t);
    r.run(&format!("causal_softmax_{t}_layout_{}x{}", layout.threads, layout.rows), Work::Bytes(6.0 * scores.numel() as f64), &|| drop(causal_softmax(&scores)));
    // Attention's layout changes at the same shape, 8 heads: the fused projection into
    // rotated heads, and the heads back into token rows (each value read and written once).
    let (batch, heads) = (bh / 8, 8);
    let projection = randn(&dev, &[batch * t, 3 * heads * hd], rng)?;
    let table = RopeTable::new(&dev, t, hd, 10_000.0)?;
    r.run("split_heads", Work::Bytes(8.0 * projection.numel() as f64), &|| drop(split_heads(&projection, batch, heads, &table, 0)));
    r.run("merge_heads", Work::Bytes(8.0 * seed.numel() as f64), &|| drop(merge_heads(&seed, batch)));
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
    /// Only the workloads whose key contains one of these comma-separated parts (each
    /// invocation sets up every workload's data, so one with several parts beats several).
    pub only: Option<String>,
}

impl Options {
    pub fn new(scale: Scale) -> Self {
        Options { scale, iters: 10, seed: 0, profile: false, only: None }
    }
}

/// Runs `suite` (`pytorch` or `kernels`).
pub fn run(device: &Device, suite: &str, options: &Options) -> Result<Report> {
    let (scale, seed) = (options.scale, options.seed);
    let mut runner = Runner {
        device: device.clone(),
        iters: options.iters.max(1),
        profile: options.profile,
        only: options.only.clone(),
        results: Vec::new(),
        runs: Default::default(),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    // Forward-only workloads record nothing (their inputs track no gradient); the
    // training workloads and attention's backward need the tape.
    let counters = match suite {
        "pytorch" => pytorch_suite(&mut runner, scale, &mut rng)?,
        "kernels" => kernels_suite(&mut runner, scale, &mut rng).map(|_| None)?,
        other => anyhow::bail!("--suite {other:?}: expected pytorch or kernels"),
    };
    let f16_matmul = f16_matmul_kernel(device).to_string();
    let router_exchange = router_exchange(device).to_string();
    let row_reduction = workgroup_reduction(device).to_string();
    Ok(Report { suite: suite.to_string(), device: device.name().to_string(), results: runner.results, counters, f16_matmul, router_exchange, row_reduction })
}
