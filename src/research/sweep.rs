//! Gemstones-style sweeps: a grid of widths and depths (or explicit pairs), optionally
//! crossed with learning rates and feed-forward kinds, every run on the same data and
//! schedule with a token budget (fixed, or tokens per parameter).
//!
//! Runs execute one after another, each in `out/runs/<name>/` with the trainer's metrics
//! and checkpoints. Finished runs of the same config are skipped and an unfinished one
//! resumes from its checkpoint, so an interrupted sweep continues where it stopped; a run
//! folder trained with another config is refused (naming the keys) unless `--force`. `--shard i/n` runs the
//! i-th of n disjoint subsets (for a scheduler's job array; `plan --emit slurm` writes the
//! script); `results.jsonl` is rebuilt from every run folder present, merging shards.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use moegrad_core::Device;
use moegrad_models::FfnKind;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::durable::write_atomic;
use crate::research::accounting::{account, Accounting};
use crate::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use crate::train::config::{from_table, RunConfig};
use crate::train::interrupt::{Interrupt, Stopped};
use crate::train::run_folder::{reuse_or_start, Start};
use crate::train::tokenizer::padded_vocab;
use crate::train::{train, TrainOptions};

/// The `[sweep]` table; the rest of the file is the base run config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepGrid {
    pub widths: Vec<usize>,
    pub depths: Vec<usize>,
    /// Explicit (width, depth) pairs, instead of the widths x depths grid.
    pub pairs: Vec<(usize, usize)>,
    /// Fixed head size: heads = width / head_dim.
    pub head_dim: usize,
    /// Learning rates to cross with the shapes; empty means the base `train.lr`.
    pub learning_rates: Vec<f32>,
    /// Feed-forward kinds to cross with the shapes; empty means the base `model.ffn`.
    pub ffn: Vec<FfnKind>,
    /// Tokens per run; 0 means `tokens_per_param` x parameters.
    pub tokens: u64,
    pub tokens_per_param: f64,
}

impl Default for SweepGrid {
    fn default() -> Self {
        SweepGrid {
            widths: Vec::new(),
            depths: Vec::new(),
            pairs: Vec::new(),
            head_dim: 16,
            learning_rates: Vec::new(),
            ffn: Vec::new(),
            tokens: 0,
            tokens_per_param: 20.0,
        }
    }
}

/// One run of the sweep, fully resolved.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    pub name: String,
    pub width: usize,
    pub depth: usize,
    pub ffn: FfnKind,
    pub lr: f32,
    pub config: RunConfig,
    pub accounting: Accounting,
    pub tokens: u64,
}

impl PlannedRun {
    pub fn total_flops(&self) -> f64 {
        self.accounting.flops_per_token * self.tokens as f64
    }
}

pub struct Sweep {
    pub grid: SweepGrid,
    pub base: RunConfig,
    pub source: PathBuf,
}

impl Sweep {
    pub fn load(path: &Path) -> Result<Sweep> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read sweep config {}", path.display()))?;
        let mut table: toml::Table = toml::from_str(&text).with_context(|| format!("sweep config {} is not valid TOML", path.display()))?;
        let grid = table.remove("sweep").ok_or_else(|| anyhow::anyhow!("sweep config {} has no [sweep] table", path.display()))?;
        let grid: SweepGrid =
            serde_path_to_error::deserialize(grid).map_err(|e| anyhow::anyhow!("sweep config {}: key `sweep.{}`: {}", path.display(), e.path(), e.inner()))?;
        let base = from_table(table, &path.display().to_string())?;
        Ok(Sweep { grid, base, source: path.to_path_buf() })
    }

    /// Every run, in a fixed order; shapes that do not fit are refused up front.
    pub fn plan(&self) -> Result<Vec<PlannedRun>> {
        let g = &self.grid;
        let shapes: Vec<(usize, usize)> =
            if g.pairs.is_empty() { g.widths.iter().flat_map(|&w| g.depths.iter().map(move |&d| (w, d))).collect() } else { g.pairs.clone() };
        if shapes.is_empty() {
            bail!("sweep: no shapes (set sweep.widths and sweep.depths, or sweep.pairs)");
        }
        if g.head_dim == 0 {
            bail!("sweep.head_dim must be positive");
        }
        for &(w, _) in &shapes {
            if w % g.head_dim != 0 {
                bail!("sweep: width {w} is not a multiple of sweep.head_dim = {}; every width must divide into heads", g.head_dim);
            }
        }
        let lrs = if g.learning_rates.is_empty() { vec![self.base.train.lr] } else { g.learning_rates.clone() };
        let kinds = if g.ffn.is_empty() { vec![self.base.model.ffn] } else { g.ffn.clone() };
        let vocab = match self.base.model.vocab_size {
            0 => padded_vocab(self.base.data.tokenizer.known_vocab(self.base.data.bpe_vocab).ok_or_else(|| {
                anyhow!("sweep: a Hugging Face tokenizer's vocabulary is not known before it is read; set model.vocab_size in the base config")
            })?),
            v => v,
        };
        let mut runs = Vec::new();
        for &(width, depth) in &shapes {
            for &ffn in &kinds {
                for &lr in &lrs {
                    let mut config = self.base.clone();
                    let m = &mut config.model;
                    (m.d_model, m.layers, m.heads, m.head_dim, m.ffn, m.vocab_size) = (width, depth, width / g.head_dim, g.head_dim, ffn, vocab);
                    m.ffn_layers.clear();
                    config.train.lr = lr;
                    config.train.min_lr = config.train.min_lr.min(lr);
                    let accounting = account(&config.model);
                    let tokens = if g.tokens > 0 { g.tokens } else { (g.tokens_per_param * accounting.params as f64) as u64 };
                    let per_step = (config.train.batch_size * config.train.grad_accum * config.model.context) as u64;
                    config.train.steps = tokens.div_ceil(per_step).max(1);
                    config.train.warmup = config.train.warmup.min(config.train.steps);
                    let name = format!("w{width}-d{depth}-{}-lr{lr:e}", ffn.name());
                    config.validate().with_context(|| format!("sweep run {name}"))?;
                    let tokens = config.train.steps * per_step;
                    runs.push(PlannedRun { name, width, depth, ffn, lr, config, accounting, tokens });
                }
            }
        }
        Ok(runs)
    }
}

/// The plan as a table.
pub fn plan_table(runs: &[PlannedRun]) -> String {
    let mut out = format!(
        "{:<28} {:>6} {:>5} {:>8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>8}\n",
        "run", "width", "depth", "ffn", "params", "non-embed", "active", "FLOPs/token", "6N/token", "total FLOPs", "steps"
    );
    for r in runs {
        let a = &r.accounting;
        out += &format!(
            "{:<28} {:>6} {:>5} {:>8} {:>12} {:>12} {:>12} {:>12.4e} {:>12.4e} {:>12.4e} {:>8}\n",
            r.name,
            r.width,
            r.depth,
            r.ffn.name(),
            a.params,
            a.non_embedding_params,
            a.active_params,
            a.flops_per_token,
            a.flops_per_token_6n,
            r.total_flops(),
            r.config.train.steps
        );
    }
    out
}

/// A Slurm script for the sweep: a job array of `shards` tasks, one GPU each (`--shard`),
/// or with `mpi` one job of `shards` ranks on one allocation that hands the runs to its
/// ranks (`srun moegrad sweep run`, built with `--features mpi`) and reports at the end.
pub fn slurm_script(config: &Path, out: &Path, shards: usize, mpi: bool) -> String {
    let (config, out) = (config.display(), out.display());
    let header = format!("#!/bin/bash\n#SBATCH --job-name=moegrad-sweep\n#SBATCH --output={out}/slurm-%A_%a.log\n");
    let resume = "finished runs are skipped and unfinished ones resume, so resubmitting is safe";
    if mpi {
        format!(
            "{header}#SBATCH --ntasks={shards}\n#SBATCH --gpus-per-task=1\n\
             # {shards} ranks share the grid's runs (rank r trains what --shard r/{shards} would);\n\
             # {resume}. Rank 0 merges the results and fits when all are done.\n\
             srun moegrad sweep run --config {config} --out {out}\n"
        )
    } else {
        format!(
            "{header}#SBATCH --array=0-{last}\n#SBATCH --gpus=1\n\
             # Each array task runs one of {shards} disjoint shards of the sweep; {resume}.\n\
             moegrad sweep run --config {config} --out {out} --shard \"$SLURM_ARRAY_TASK_ID/{shards}\"\n\
             # When every task is done, merge the results from the run folders:\n\
             #   moegrad sweep report --config {config} --out {out}\n",
            last = shards.saturating_sub(1)
        )
    }
}

/// Parses `i/n` (0 <= i < n).
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let parsed = s.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("--shard {s:?}: expected i/n with 0 <= i < n, e.g. 0/4"),
    }
}

fn run_dir(out: &Path, run: &PlannedRun) -> PathBuf {
    out.join("runs").join(&run.name)
}

/// Whether the run's checkpoint has all its steps.
pub fn finished(out: &Path, run: &PlannedRun) -> bool {
    let ckpt = run_dir(out, run).join(CHECKPOINT_FILE);
    ckpt.exists() && Checkpoint::load(&ckpt).is_ok_and(|c| c.meta.step >= run.config.train.steps)
}

/// How `run_sweep` trains its share of the runs.
#[derive(Clone, Default)]
pub struct SweepRunOptions {
    /// `(i, n)`: the runs whose index is i modulo n.
    pub shard: (usize, usize),
    pub quiet: bool,
    /// Interrupts the first run it starts after this many steps (for testing resumption).
    pub stop_after: Option<u64>,
    /// Start each run over.
    pub force: bool,
    /// A signal stops the run in training (with its checkpoint) and the sweep with a
    /// `Stopped` error; running the sweep again goes on.
    pub interrupt: Interrupt,
}

/// Trains this shard's runs in order.
pub fn run_sweep(device: &Device, runs: &[PlannedRun], out: &Path, opts: &SweepRunOptions) -> Result<()> {
    let SweepRunOptions { shard, quiet, stop_after, force, interrupt } = opts.clone();
    for (i, run) in runs.iter().enumerate().filter(|(i, _)| i % shard.1 == shard.0) {
        let dir = run_dir(out, run);
        let Some(start) = reuse_or_start(&dir, &run.config, force)? else {
            if !quiet {
                println!("[{}/{}] {} already finished", i + 1, runs.len(), run.name);
            }
            continue;
        };
        if !quiet {
            println!("[{}/{}] {}{}", i + 1, runs.len(), run.name, if start == Start::Resume { " (resuming)" } else { "" });
        }
        let summary = train(device, TrainOptions { config: run.config.clone(), out: dir.clone(), start, quiet, stop_after, interrupt: interrupt.clone() })?;
        if let Some(signal) = summary.interrupted {
            return Err(Stopped { signal, run: dir }.into());
        }
        if stop_after.is_some() {
            break;
        }
    }
    Ok(())
}

/// Rebuilds `out/results.jsonl` from every run folder present: one row per evaluated
/// checkpoint, in the Gemstones columns plus ffn, learning rate, FLOPs and wall time.
pub fn write_results(runs: &[PlannedRun], out: &Path) -> Result<usize> {
    let mut lines = Vec::new();
    for run in runs {
        let Ok(text) = std::fs::read_to_string(run_dir(out, run).join("metrics.jsonl")) else { continue };
        for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            let (Some(loss), Some(step), Some(tokens)) = (v["eval_loss"].as_f64(), v["step"].as_u64(), v["tokens"].as_u64()) else { continue };
            if step == 0 {
                continue;
            }
            let a = &run.accounting;
            lines.push(
                json!({
                    "run_name": run.name, "width": run.width, "depth": run.depth,
                    "params_active_precise": a.active_params, "params": a.params, "non_embedding_params": a.non_embedding_params,
                    "tokens": tokens, "step": step, "final_loss": loss,
                    "ffn": run.ffn.name(), "lr": run.lr, "flops": a.flops_per_token * tokens as f64,
                    "wall_seconds": v["wall_s"].as_f64(),
                })
                .to_string(),
            );
        }
    }
    std::fs::create_dir_all(out)?;
    write_atomic(&out.join("results.jsonl"), lines.iter().map(|l| format!("{l}\n")).collect::<String>().as_bytes())?;
    Ok(lines.len())
}
