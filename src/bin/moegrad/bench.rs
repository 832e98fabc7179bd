//! `moegrad bench`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use moegrad::bench::data::run_data_suite;
use moegrad::bench::dist::run_dist_suite;
use moegrad::bench::table::{load_references, side_by_side, SavedReport};
use moegrad::bench::{run, Options, Scale, Suite};
use moegrad::dist::Collective;
use moegrad::Device;

/// Benchmark suites, timed with GPU timestamp queries: `pytorch` (the workloads of the
/// PyTorch comparison; see benches/pytorch_reference.py) or `kernels`; or `data`, on the
/// CPU: tokenization and shard-loader throughput (see benches/tiktoken_prepare.py); or
/// `dist`, under `mpirun -np N` (or alone): the gradient exchange of data-parallel
/// training, and how much of it overlapping hides.
#[derive(Args)]
pub struct BenchArgs {
    /// Which workloads to run.
    #[arg(long, value_enum, default_value = "pytorch")]
    suite: Suite,
    /// Problem sizes: gpu (the H100 table's) or tiny; default: tiny on CPU adapters, else gpu.
    #[arg(long, value_enum)]
    scale: Option<Scale>,
    /// Timed runs per workload; the median is reported, with the range.
    #[arg(long, default_value_t = 10, value_parser = crate::at_least_one)]
    iters: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also run each workload once with every kernel timed, and list where the time went.
    #[arg(long)]
    profile: bool,
    /// Run only the workloads whose key contains this, or one of several parts
    /// separated by commas, e.g. `moe_layer` or `softmax,router`.
    #[arg(long)]
    only: Option<String>,
    /// A saved report to set beside the results as a Markdown table (repeatable): the
    /// output of `benches/pytorch_reference.py --json`, or of another `moegrad bench --json`.
    #[arg(long, conflicts_with = "json")]
    against: Vec<PathBuf>,
    /// With --against: a saved `moegrad bench --json` report to compare, instead of
    /// running the suite.
    #[arg(long, requires = "against")]
    report: Option<PathBuf>,
}

impl BenchArgs {
    pub fn run(self, comm: &dyn Collective) -> Result<()> {
        let BenchArgs { suite, scale, iters, json, profile, only, against, report } = self;
        let against = &against;
        // Read the references first: a wrong path fails before minutes of benchmarks.
        let references = load_references(against)?;
        if let Some(path) = report {
            println!("{}", side_by_side(&SavedReport::load(&path)?, &path.display().to_string(), &references));
            return Ok(());
        }
        if suite == Suite::Data {
            return data_suite(iters, json);
        }
        let device = if comm.size() > 1 { Device::for_local_rank(comm.local_rank())? } else { Device::new()? };
        let scale = match scale {
            Some(scale) => scale,
            None if device.adapter_info().device_type == moegrad::wgpu::DeviceType::Cpu => Scale::Tiny,
            None => Scale::Gpu,
        };
        if suite == Suite::Dist {
            return dist_suite(&device, comm, scale, iters, json);
        }
        let report = run(&device, suite, &Options { iters, profile, only, ..Options::new(scale) })?;
        if json {
            println!("{}", serde_json::to_string(&report)?);
            return Ok(());
        }
        let timer = report.results.first().map_or("-", |r| r.timer);
        println!(
            "{} on {} ({:?} shapes; timer: {timer}; tuning: {}; f16 matmuls: {}; router: {}; row reductions: {})",
            report.suite, report.device, scale, report.tuning, report.f16_matmul, report.router_exchange, report.row_reduction
        );
        for r in &report.results {
            let peak = r.peak_fraction.map_or(String::new(), |p| format!("  {:.0}% of peak", 100.0 * p));
            println!(
                "  {:<52} {:>10.3} ms ({:.3}..{:.3}, host {:.3})  {:>12.3} {}{peak}  {:.1} MiB",
                r.key, r.ms, r.ms_range[0], r.ms_range[1], r.host_ms, r.value, r.unit, r.memory_mib
            );
            for k in r.profile.iter().flatten() {
                println!("      {:>5.1}%  {:>9.3} ms  {:>5} x  {}", 100.0 * k.share, k.ms, k.calls, k.kernel);
            }
        }
        if let Some(c) = &report.counters {
            println!(
                "  training step: {} buffers created after warm-up, {:.1} submissions and {:.0} dispatches per step, {:.0} MiB beyond the model and optimizer",
                c.buffers_created_after_warmup, c.submissions_per_step, c.dispatches_per_step, c.step_memory_mib
            );
        }
        if !references.is_empty() {
            println!("\n{}", side_by_side(&SavedReport::from(&report), "this run", &references));
        }
        Ok(())
    }
}

fn data_suite(iters: usize, json: bool) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("moegrad-bench-data-{}", std::process::id()));
    let results = run_data_suite(&scratch, iters)?;
    if json {
        println!("{}", serde_json::to_string(&serde_json::json!({"suite": "data", "results": results}))?);
        return Ok(());
    }
    println!("data on the CPU ({} threads; best of {iters})", rayon::current_num_threads());
    for r in &results {
        println!("  {:<44} {:>14.1} {:<9} {}", r.key, r.value, r.unit, r.note);
    }
    Ok(())
}

fn dist_suite(device: &Device, comm: &dyn Collective, scale: Scale, iters: usize, json: bool) -> Result<()> {
    // The tiny model's gradients (1.3 MB) would fill one bucket: smaller ones let the
    // overlap show.
    let bucket_mb = if scale == Scale::Tiny { 0.1 } else { moegrad::train::config::DistConfig::default().bucket_mb };
    let report = run_dist_suite(device, comm, scale, iters, bucket_mb)?;
    if !comm.is_leader() {
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "dist on {} x {} ({}, {:.2}M parameters, buckets of {} MB; median of {iters} steps)",
        report.ranks,
        report.device,
        report.model,
        report.params as f64 / 1e6,
        report.bucket_mb
    );
    println!("  {:<26} {:>10} {:>12} {:>8} {:>13} {:>10} {:>10}", "mode", "step ms", "MB reduced", "buckets", "read-back ms", "reduce ms", "upload ms");
    for r in &report.results {
        println!(
            "  {:<26} {:>10.2} {:>12.2} {:>8} {:>13.2} {:>10.2} {:>10.2}",
            r.mode,
            r.step_ms,
            r.bytes as f64 / 1e6,
            r.buckets,
            r.read_back_ms,
            r.reduce_ms,
            r.upload_ms
        );
    }
    match report.hidden_fraction {
        Some(h) => println!("  overlapping hid {:.0}% of the exchange's cost", 100.0 * h),
        None => println!("  the exchange cost nothing measurable beyond the step"),
    }
    Ok(())
}
