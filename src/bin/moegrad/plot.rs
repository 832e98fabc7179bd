//! `moegrad plot`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use moegrad::research::load_plot::load_heatmap;
use moegrad::research::run_curves::run_curves;

/// Draw the training curves of one or more runs (loss, learning rate, gradient norm,
/// tokens/s against tokens) and, for MoE runs, each MoE layer's expert load as a heatmap.
#[derive(Args)]
pub struct PlotArgs {
    /// Run folders (each with its metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// The folder to write curves.png/.svg and expert-load.png/.svg in (default: the first run's).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl PlotArgs {
    pub fn run(self) -> Result<()> {
        let out = self.out.unwrap_or_else(|| self.runs[0].clone());
        std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
        let curves = out.join("curves");
        run_curves(&self.runs, &curves)?;
        println!("training curves: {} and .svg", curves.with_extension("png").display());
        // The MoE runs among them (a dense run logs no expert loads).
        let moe: Vec<PathBuf> =
            self.runs.iter().filter(|r| std::fs::read_to_string(r.join("metrics.jsonl")).is_ok_and(|t| t.contains("\"load\":"))).cloned().collect();
        if !moe.is_empty() {
            let load = out.join("expert-load");
            load_heatmap(&moe, &load)?;
            println!("expert load: {} and .svg", load.with_extension("png").display());
        }
        Ok(())
    }
}
