//! `moegrad compare`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use moegrad::research::compare::{compare, table, CompareOptions};
use moegrad::train::config::RunConfig;
use moegrad::Device;

/// Train the same model with several feed-forward kinds and seeds; table and plot.
#[derive(Args)]
pub struct CompareArgs {
    /// A TOML run config (see configs/).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. --set train.steps=100.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Comma-separated kinds: dense, topk, default.
    #[arg(long, default_value = "topk,default")]
    ffn: String,
    /// Seeds per kind.
    #[arg(long, default_value_t = 3, value_parser = crate::at_least_one)]
    seeds: usize,
    /// Folder for the runs, compare.json and the plots.
    #[arg(long)]
    out: PathBuf,
    /// No progress bars or log lines: only the table.
    #[arg(long)]
    quiet: bool,
    /// Start every run over, even finished ones or ones trained with another config.
    #[arg(long)]
    force: bool,
}

impl CompareArgs {
    pub fn run(self) -> Result<()> {
        let CompareArgs { config, overrides, ffn, seeds, out, quiet, force } = self;
        let config = RunConfig::load(config.as_deref(), &overrides)?;
        config.validate()?;
        let kinds = ffn.split(',').map(|k| k.trim().parse().map_err(|e: String| anyhow::anyhow!("--ffn: {e}"))).collect::<Result<Vec<_>>>()?;
        let device = Device::new()?;
        let rows = compare(&device, &CompareOptions { config, kinds, seeds: seeds as u64, out: out.clone(), quiet, force })?;
        print!("{}", table(&rows));
        println!("curves: {} and .svg", out.join("compare.png").display());
        Ok(())
    }
}
