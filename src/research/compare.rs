//! `moegrad compare`: the same model trained with each feed-forward kind on the same data
//! and seeds (TopK vs Default MoE is the headline experiment), a table of final eval
//! losses, and a plot of the eval-loss curves. Finished runs of the same config are
//! reused and unfinished ones resumed, so an interrupted comparison picks up where it
//! stopped; a run folder trained with another config is refused unless `force`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use moegrad_core::Device;
use moegrad_models::FfnKind;

use crate::durable::write_atomic;
use crate::research::plot::{line_chart, Series};
use crate::train::config::RunConfig;
use crate::train::run_folder::{reuse_or_start, Start};
use crate::train::{train, TrainOptions};

pub struct CompareOptions {
    pub config: RunConfig,
    pub kinds: Vec<FfnKind>,
    pub seeds: u64,
    pub out: PathBuf,
    pub quiet: bool,
    /// Start every run over, even one that finished or was trained with another config.
    pub force: bool,
}

/// One feed-forward kind's results over the seeds.
pub struct CompareRow {
    pub kind: FfnKind,
    pub final_eval: Vec<f32>,
}

impl CompareRow {
    pub fn mean(&self) -> f64 {
        self.final_eval.iter().map(|&v| v as f64).sum::<f64>() / self.final_eval.len() as f64
    }

    /// Sample standard deviation (0 for a single seed).
    pub fn std(&self) -> f64 {
        let n = self.final_eval.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.final_eval.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
}

/// (step, eval loss) pairs of a run's metrics.jsonl.
pub fn eval_curve(run: &std::path::Path) -> Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).with_context(|| format!("no metrics in {}", run.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()?, v["eval_loss"].as_f64()?)))
        .collect())
}

pub fn compare(device: &Device, opts: &CompareOptions) -> Result<Vec<CompareRow>> {
    if opts.seeds == 0 || opts.kinds.is_empty() {
        anyhow::bail!("compare needs at least one seed and one feed-forward kind (got {} seeds, {} kinds)", opts.seeds, opts.kinds.len());
    }
    let mut rows = Vec::new();
    let mut series = Vec::new();
    for (k, &kind) in opts.kinds.iter().enumerate() {
        let mut row = CompareRow { kind, final_eval: Vec::new() };
        for s in 0..opts.seeds {
            let mut config = opts.config.clone();
            config.model.ffn = kind;
            config.model.ffn_layers.clear();
            config.train.seed = opts.config.train.seed + s;
            let run = opts.out.join(format!("{}-seed{}", kind.name(), config.train.seed));
            if let Some(start) = reuse_or_start(&run, &config, opts.force)? {
                if !opts.quiet {
                    println!("training {} (seed {}){}", kind.name(), config.train.seed, if start == Start::Resume { ", resuming" } else { "" });
                }
                train(device, TrainOptions { config: config.clone(), out: run.clone(), start, quiet: opts.quiet, stop_after: None })?;
            }
            let curve = eval_curve(&run)?;
            row.final_eval.push(curve.last().map_or(f32::NAN, |&(_, l)| l as f32));
            series.push(Series::line(format!("{} seed {}", kind.name(), config.train.seed), k, curve));
        }
        rows.push(row);
    }
    line_chart(&opts.out.join("compare"), "Eval loss by feed-forward kind", "step", "eval loss (nats/token)", &series)?;
    let summary: Vec<serde_json::Value> =
        rows.iter().map(|r| serde_json::json!({"ffn": r.kind.name(), "final_eval_loss": r.final_eval, "mean": r.mean(), "std": r.std()})).collect();
    write_atomic(&opts.out.join("compare.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(rows)
}

/// The comparison as a text table.
pub fn table(rows: &[CompareRow]) -> String {
    let mut out = format!("{:<10} {:>5} {:>12} {:>10}\n", "ffn", "runs", "eval loss", "std");
    for r in rows {
        out += &format!("{:<10} {:>5} {:>12.4} {:>10.4}\n", r.kind.name(), r.final_eval.len(), r.mean(), r.std());
    }
    out
}
