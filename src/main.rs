//! The `moegrad` command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use moegrad::checkpoint::Checkpoint;
use moegrad::config::RunConfig;
use moegrad::data::{load_text, Corpus};
use moegrad::demo::{train_mlp, DemoConfig};
use moegrad::models::Transformer;
use moegrad::sample::{generate, SampleOptions};
use moegrad::train::{evaluate, train, TrainOptions};
use moegrad::Device;
use rand::SeedableRng;

#[derive(Parser)]
#[command(name = "moegrad", version, about = "Train Mixture-of-Experts transformers on any GPU wgpu reaches")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SweepAction {
    Plan,
    Run,
    Report,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter with its backend, type, features and limits.
    Devices,
    /// Train a transformer language model (dense, TopK MoE or Default MoE).
    Train {
        /// A TOML run config (see configs/); with --resume, the checkpoint's own by default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override a config key, e.g. --set model.ffn=topk --set train.steps=100.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Training text: a file or a folder of .txt files (default: bundled Shakespeare).
        #[arg(long)]
        data: Option<String>,
        /// Folder for checkpoint.safetensors, metrics.jsonl, config.toml, tokenizer.json.
        #[arg(long)]
        out: PathBuf,
        /// Continue from the checkpoint in --out.
        #[arg(long)]
        resume: bool,
        /// Stop after this many steps (with a checkpoint), as if interrupted.
        #[arg(long)]
        stop_after: Option<u64>,
        #[arg(long)]
        quiet: bool,
    },
    /// Loss, perplexity and bits per byte of a checkpoint on held-out text.
    Eval {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Text file or folder to evaluate on (all of it); default: the run's held-out split.
        #[arg(long)]
        data: Option<String>,
        #[arg(long, default_value_t = 16)]
        batches: usize,
    },
    /// Generate text from a checkpoint.
    Sample {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value = "")]
        prompt: String,
        #[arg(long, default_value_t = 200)]
        tokens: usize,
        #[arg(long, default_value_t = 0.8)]
        temperature: f32,
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Train the same model with several feed-forward kinds and seeds; table and plot.
    Compare {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Comma-separated kinds: dense, topk, default.
        #[arg(long, default_value = "topk,default")]
        ffn: String,
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        quiet: bool,
    },
    /// Width x depth sweeps: `plan` (table, or a Slurm script), `run` (the default),
    /// `report` (results.jsonl, the fit and the plots from whatever runs exist).
    Sweep {
        #[arg(value_enum, default_value = "run")]
        action: SweepAction,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run the i-th of n disjoint subsets, e.g. 0/4.
        #[arg(long)]
        shard: Option<String>,
        /// With `plan`: write a job-array script for this scheduler (slurm) into --out.
        #[arg(long)]
        emit: Option<String>,
        /// With `plan --emit`: how many array tasks (shards).
        #[arg(long, default_value_t = 4)]
        shards: usize,
        /// Law fitted by `report` (and after a complete `run`).
        #[arg(long, default_value = "params-tokens")]
        law: String,
        /// Interrupt the first run started after this many steps (to test resumption).
        #[arg(long)]
        stop_after: Option<u64>,
        #[arg(long)]
        quiet: bool,
    },
    /// Benchmark suites, timed with GPU timestamp queries: `pytorch` (the workloads of the
    /// PyTorch comparison; see benches/pytorch_reference.py) or `kernels`.
    Bench {
        #[arg(long, default_value = "pytorch")]
        suite: String,
        /// gpu (the H100-sized shapes) or tiny; default: tiny on CPU adapters, else gpu.
        #[arg(long)]
        scale: Option<String>,
        /// Timed runs per workload; the median is reported, with the range.
        #[arg(long, default_value_t = 10)]
        iters: usize,
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
    },
    /// Fit a scaling law to results (a sweep's results.jsonl or the Gemstones rows).
    Fit {
        results: PathBuf,
        /// params-tokens (Chinchilla approach 3), width-depth-tokens or width-depth-params-tokens.
        #[arg(long, default_value = "params-tokens")]
        law: String,
        /// Huber delta of the objective (on log loss).
        #[arg(long, default_value_t = 1e-4)]
        delta: f64,
        /// Count parameters without embeddings.
        #[arg(long)]
        no_embeddings: bool,
        /// Bootstrap resamples for confidence intervals (0: none).
        #[arg(long, default_value_t = 100)]
        bootstrap: usize,
        /// FLOP budget for the compute-optimal prediction (params-tokens law).
        #[arg(long, default_value_t = 1e21)]
        budget: f64,
        /// Print one JSON object on one line.
        #[arg(long)]
        json: bool,
    },
    /// Train a small MLP on a synthetic regression task (the engine end to end).
    Demo {
        #[arg(long, default_value_t = 400)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 0.1)]
        lr: f32,
    },
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn devices() -> Result<()> {
    let adapters = Device::adapters();
    if adapters.is_empty() {
        return Err(moegrad::Error::NoAdapter.into());
    }
    for (i, a) in adapters.iter().enumerate() {
        println!("[{i}] {} ({:?}, {:?}){}", a.name, a.backend, a.device_type, if i == 0 { "  <- default" } else { "" });
        println!("    driver: {}", a.driver);
        println!(
            "    f16: {}  subgroups: {} (size {}..{})  timestamp queries: {}  cooperative matrix: {}",
            yes_no(a.shader_f16),
            yes_no(a.subgroups),
            a.subgroup_size.0,
            a.subgroup_size.1,
            yes_no(a.timestamp_query),
            yes_no(a.cooperative_matrix)
        );
        println!(
            "    max storage binding: {} MiB  max buffer: {} MiB  workgroup memory: {} KiB  invocations/workgroup: {}",
            a.max_storage_binding >> 20,
            a.max_buffer >> 20,
            a.max_workgroup_storage >> 10,
            a.max_invocations_per_workgroup
        );
    }
    println!("Pick one with {}=<part of its name>.", moegrad::ADAPTER_ENV);
    Ok(())
}

fn demo(steps: usize, seed: u64, lr: f32) -> Result<()> {
    let device = Device::new()?;
    println!("device: {}", device.name());
    let cfg = DemoConfig { steps, seed, lr, ..DemoConfig::default() };
    let started = std::time::Instant::now();
    let result = train_mlp(&device, &cfg, |step, loss| println!("step {step:5}  train mse {loss:.5}"))?;
    let stats = device.stats();
    println!(
        "eval mse: {:.5} untrained -> {:.5} trained ({:.1}s, {} dispatches in {} submissions, {} buffers created)",
        result.initial_loss,
        result.final_loss,
        started.elapsed().as_secs_f32(),
        stats.dispatches,
        stats.submissions,
        stats.buffers_created
    );
    Ok(())
}

fn run_train(
    config: Option<PathBuf>,
    mut overrides: Vec<String>,
    data: Option<String>,
    out: PathBuf,
    resume: bool,
    stop_after: Option<u64>,
    quiet: bool,
) -> Result<()> {
    if let Some(d) = data {
        overrides.push(format!("data.path={}", toml::Value::String(d)));
    }
    let config = match (&config, resume) {
        (None, true) => Checkpoint::load(&out.join(moegrad::checkpoint::CHECKPOINT_FILE))?.meta.config.with_overrides(&overrides)?,
        _ => RunConfig::load(config.as_deref(), &overrides)?,
    };
    config.validate()?;
    let device = Device::new()?;
    if !quiet {
        println!(
            "device: {}  model: {} layers x d={} ({})  out: {}",
            device.name(),
            config.model.layers,
            config.model.d_model,
            config.model.ffn.name(),
            out.display()
        );
        if config.train.precision == moegrad::ops::Precision::F16 {
            println!("precision: f16 matmuls on {}, loss scale {}", moegrad::ops::f16_matmul_kernel(&device), config.train.loss_scale);
        }
    }
    let s = train(&device, TrainOptions { config, out, resume, quiet, stop_after })?;
    println!(
        "done: {} steps, train loss {:.4}, eval loss {:.4} (from {:.4}), peak memory {:.0} MiB",
        s.steps, s.final_train_loss, s.final_eval_loss, s.initial_eval_loss, s.peak_memory_mib
    );
    Ok(())
}

/// Rebuilds the model a checkpoint describes and loads its weights.
fn load_model(device: &Device, path: &std::path::Path) -> Result<(Checkpoint, Transformer)> {
    let ckpt = Checkpoint::load(path)?;
    let cfg = &ckpt.meta.config;
    cfg.model.validate().map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", path.display()))?;
    let model = Transformer::new(device, &cfg.model, &mut rand::rngs::StdRng::seed_from_u64(0))?;
    ckpt.restore(&model, None).with_context(|| format!("checkpoint {} does not fit its own config", path.display()))?;
    Ok((ckpt, model))
}

fn run_eval(checkpoint: PathBuf, data: Option<String>, batches: usize) -> Result<()> {
    let device = Device::new()?;
    let (ckpt, model) = load_model(&device, &checkpoint)?;
    let cfg = &ckpt.meta.config;
    let corpus = match &data {
        // The whole of the given text is held out: evaluate on all of it.
        Some(path) => {
            let text = load_text(path)?;
            Corpus::new(&text, &text, &ckpt.meta.tokenizer, cfg.model.context)?
        }
        None => {
            let text = load_text(&cfg.data.path)?;
            let (train_text, eval_text) = moegrad::data::split_text(&text, cfg.data.eval_fraction);
            Corpus::new(train_text, eval_text, &ckpt.meta.tokenizer, cfg.model.context)?
        }
    };
    let loss = evaluate(&device, &model, &corpus.eval, cfg.train.batch_size, batches)?;
    let bits_per_byte = loss as f64 / corpus.eval_bytes_per_token / std::f64::consts::LN_2;
    println!("step {}  loss {loss:.4} nats/token  perplexity {:.2}  {bits_per_byte:.4} bits/byte", ckpt.meta.step, (loss as f64).exp());
    Ok(())
}

fn run_sample(checkpoint: PathBuf, prompt: String, opts: SampleOptions) -> Result<()> {
    let device = Device::new()?;
    let (ckpt, model) = load_model(&device, &checkpoint)?;
    println!("{}", generate(&device, &model, &ckpt.meta.tokenizer, &prompt, &opts)?);
    Ok(())
}

fn run_compare(config: Option<PathBuf>, overrides: Vec<String>, ffn: String, seeds: u64, out: PathBuf, quiet: bool) -> Result<()> {
    let config = RunConfig::load(config.as_deref(), &overrides)?;
    config.validate()?;
    let kinds = ffn.split(',').map(|k| k.trim().parse().map_err(|e: String| anyhow::anyhow!("--ffn: {e}"))).collect::<Result<Vec<_>>>()?;
    let device = Device::new()?;
    let rows = moegrad::compare::compare(&device, &moegrad::compare::CompareOptions { config, kinds, seeds, out: out.clone(), quiet })?;
    print!("{}", moegrad::compare::table(&rows));
    println!("curves: {} and .svg", out.join("compare.png").display());
    Ok(())
}

fn run_fit(results: PathBuf, law: String, delta: f64, no_embeddings: bool, samples: usize, budget: f64, json: bool) -> Result<()> {
    use moegrad::fit::{bootstrap, compute_optimal, fit, frontier, read_rows, Law, StartGrid};
    let law = Law::parse(&law)?;
    let rows = read_rows(&results)?;
    let best = fit(&rows, law, delta, &StartGrid::for_law(law), no_embeddings)?;
    let ci = if samples > 0 { Some(bootstrap(&rows, law, delta, &best, samples, 0, no_embeddings)?) } else { None };
    let optimal = (law == Law::ParamsTokens).then(|| compute_optimal(&best, budget));
    let approach1 = frontier(&rows);
    if json {
        let mut v = serde_json::to_value(&best)?;
        v["variables"] = serde_json::json!(law.variables());
        v["delta"] = serde_json::json!(delta);
        v["rows"] = serde_json::json!(rows.len());
        v["bootstrap"] = serde_json::to_value(&ci)?;
        v["compute_optimal"] = serde_json::to_value(&optimal)?;
        v["approach1"] = serde_json::json!({
            "params_exponent": approach1.params_exponent, "params_coefficient": approach1.params_coefficient,
            "tokens_exponent": approach1.tokens_exponent, "tokens_coefficient": approach1.tokens_coefficient,
            "optimal_runs": approach1.optimal.iter().map(|&i| &rows[i].run_name).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    println!("law: L = exp(e) + sum_j exp(c_j) / v_j^x_j over {:?}, {} rows, Huber delta {delta}", law.variables(), rows.len());
    for (j, name) in law.variables().iter().enumerate() {
        let interval = ci.as_ref().map_or(String::new(), |c| {
            format!("  (95%: x {:.4}..{:.4}, c {:.3}..{:.3})", c.exponents[j].0, c.exponents[j].1, c.coefficients[j].0, c.coefficients[j].1)
        });
        println!("  {name:<7} exponent x = {:.4}  coefficient c = {:.4}{interval}", best.exponents[j], best.coefficients[j]);
    }
    println!("  irreducible e = {:.4} (exp(e) = {:.4})  objective {:.6e}", best.irreducible_error, best.irreducible_error.exp(), best.objective);
    if let Some(o) = optimal {
        println!("compute-optimal at {:.3e} FLOPs: {:.3e} parameters, {:.3e} tokens, predicted loss {:.4}", o.flops, o.params, o.tokens, o.loss);
    }
    println!(
        "approach 1: {} compute-optimal checkpoints; N_opt ~ C^{:.3}, D_opt ~ C^{:.3}",
        approach1.optimal.len(),
        approach1.params_exponent,
        approach1.tokens_exponent
    );
    Ok(())
}

fn sweep_report(runs: &[moegrad::sweep::PlannedRun], out: &std::path::Path, law: &str) -> Result<()> {
    use moegrad::fit::{fit, read_rows, Law, StartGrid};
    let count = moegrad::sweep::write_results(runs, out)?;
    println!("{count} evaluated checkpoints in {}", out.join("results.jsonl").display());
    let rows = read_rows(&out.join("results.jsonl"))?;
    let law = Law::parse(law)?;
    let fitted = if rows.len() > 2 * law.variables().len() + 1 {
        let f = fit(&rows, law, 1e-4, &StartGrid::for_law(law), false)?;
        std::fs::write(out.join("fit.json"), serde_json::to_string(&f)?)?;
        println!("fit: exponents {:?} coefficients {:?} e {:.4} objective {:.3e}", f.exponents, f.coefficients, f.irreducible_error, f.objective);
        Some(f)
    } else {
        println!("too few rows to fit {law:?}");
        None
    };
    moegrad::sweep_report::write_plots(&out.join("plots"), &rows, fitted.as_ref().map(|f| (f, law)))?;
    println!("plots in {}", out.join("plots").display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_sweep_command(
    action: SweepAction,
    config: PathBuf,
    out: Option<PathBuf>,
    shard: Option<String>,
    emit: Option<String>,
    shards: usize,
    law: String,
    stop_after: Option<u64>,
    quiet: bool,
) -> Result<()> {
    use moegrad::sweep::{finished, parse_shard, plan_table, run_sweep, slurm_script, Sweep};
    let sweep = Sweep::load(&config)?;
    let runs = sweep.plan()?;
    let out_dir = || out.clone().ok_or_else(|| anyhow::anyhow!("--out is required"));
    match action {
        SweepAction::Plan => {
            print!("{}", plan_table(&runs));
            let total: f64 = runs.iter().map(|r| r.total_flops()).sum();
            println!("{} runs, {total:.3e} FLOPs in all", runs.len());
            match emit.as_deref() {
                None => {}
                Some("slurm") => {
                    let out = out_dir()?;
                    std::fs::create_dir_all(&out)?;
                    let script = out.join("sweep.slurm");
                    std::fs::write(&script, slurm_script(&config, &out, shards))?;
                    println!("wrote {} ({shards} array tasks): sbatch {}", script.display(), script.display());
                }
                Some(other) => anyhow::bail!("--emit {other:?}: only slurm is supported"),
            }
            Ok(())
        }
        SweepAction::Run => {
            let out = out_dir()?;
            let shard = shard.as_deref().map(parse_shard).transpose()?.unwrap_or((0, 1));
            let device = Device::new()?;
            run_sweep(&device, &runs, &out, shard, quiet, stop_after)?;
            if runs.iter().all(|r| finished(&out, r)) {
                sweep_report(&runs, &out, &law)
            } else {
                println!("shard {}/{} done; other shards' runs are unfinished (report with `moegrad sweep report`)", shard.0, shard.1);
                Ok(())
            }
        }
        SweepAction::Report => sweep_report(&runs, &out_dir()?, &law),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_bench(
    suite: String,
    scale: Option<String>,
    iters: usize,
    json: bool,
    profile: bool,
    only: Option<String>,
    against: &[PathBuf],
    report: Option<PathBuf>,
) -> Result<()> {
    use moegrad::bench::{run, Options, Scale};
    use moegrad::bench_table::{load_references, side_by_side, SavedReport};
    // Read the references first: a wrong path fails before minutes of benchmarks.
    let references = load_references(against)?;
    if let Some(path) = report {
        println!("{}", side_by_side(&SavedReport::load(&path)?, &path.display().to_string(), &references));
        return Ok(());
    }
    let device = Device::new()?;
    let scale = match scale.as_deref() {
        Some("gpu") => Scale::Gpu,
        Some("tiny") => Scale::Tiny,
        Some(other) => anyhow::bail!("--scale {other:?}: expected gpu or tiny"),
        None if device.adapter_info().device_type == moegrad::wgpu::DeviceType::Cpu => Scale::Tiny,
        None => Scale::Gpu,
    };
    let report = run(&device, &suite, &Options { iters, profile, only, ..Options::new(scale) })?;
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
        println!("  {:<52} {:>10.3} ms ({:.3}..{:.3}, host {:.3})  {:>12.3} {}{peak}", r.key, r.ms, r.ms_range[0], r.ms_range[1], r.host_ms, r.value, r.unit);
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

fn main() {
    // Mesa's device-select layer, loaded into every Vulkan program, connects to a Wayland
    // display to rank GPUs and, on a headless machine, prints two false "error:
    // XDG_RUNTIME_DIR is invalid" lines; moegrad ranks adapters itself. Set while the
    // process is still one thread, before anything reads the environment.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    if let Err(e) = run(Cli::parse().command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Devices => devices(),
        Command::Train { config, overrides, data, out, resume, stop_after, quiet } => run_train(config, overrides, data, out, resume, stop_after, quiet),
        Command::Eval { checkpoint, data, batches } => run_eval(checkpoint, data, batches),
        Command::Sample { checkpoint, prompt, tokens, temperature, top_k, seed } => {
            run_sample(checkpoint, prompt, SampleOptions { max_tokens: tokens, temperature, top_k, seed })
        }
        Command::Compare { config, overrides, ffn, seeds, out, quiet } => run_compare(config, overrides, ffn, seeds, out, quiet),
        Command::Sweep { action, config, out, shard, emit, shards, law, stop_after, quiet } => {
            run_sweep_command(action, config, out, shard, emit, shards, law, stop_after, quiet)
        }
        Command::Bench { suite, scale, iters, json, profile, only, against, report } => run_bench(suite, scale, iters, json, profile, only, &against, report),
        Command::Fit { results, law, delta, no_embeddings, bootstrap, budget, json } => run_fit(results, law, delta, no_embeddings, bootstrap, budget, json),
        Command::Demo { steps, seed, lr } => demo(steps, seed, lr),
    }
}
