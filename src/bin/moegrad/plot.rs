//! `moegrad plot`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use moegrad::research::load_plot::load_heatmap;

/// Draw each MoE layer's expert load over training as a heatmap, for one or more runs.
#[derive(Args)]
pub struct PlotArgs {
    /// Run folders (each with its metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where to write: <OUT>.png and <OUT>.svg (default: expert-load in the first run).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl PlotArgs {
    pub fn run(self) -> Result<()> {
        let out = self.out.unwrap_or_else(|| self.runs[0].join("expert-load"));
        load_heatmap(&self.runs, &out)?;
        println!("expert load: {} and .svg", out.with_extension("png").display());
        Ok(())
    }
}
