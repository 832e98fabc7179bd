//! `moegrad compare`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use moegrad::research::compare::{compare, table, CompareOptions, Variant};
use moegrad::train::config::RunConfig;
use moegrad::Device;

/// Train the same model as several named variants over the same seeds and data; table,
/// loss curves and expert-load heatmaps.
#[derive(Args)]
pub struct CompareArgs {
    /// A TOML run config (see configs/).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key for every variant, e.g. --set train.steps=100.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Comma-separated feed-forward kinds, each a variant: dense, topk, default, densemixer
    /// (the default, topk,default, applies when no --variant is given).
    #[arg(long)]
    ffn: Option<String>,
    /// A named variant, NAME or NAME:KEY=VALUE,KEY=VALUE (repeatable), e.g.
    /// default:model.moe.default_estimator="batch_mean" or
    /// sigmoid-bias:model.moe.score="sigmoid",model.moe.balance="bias". A NAME that is a
    /// feed-forward kind sets model.ffn.
    #[arg(long = "variant", value_name = "SPEC")]
    variants: Vec<String>,
    /// Seeds per variant.
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
        let CompareArgs { config, overrides, ffn, variants, seeds, out, quiet, force } = self;
        let config = RunConfig::load(config.as_deref(), &overrides)?;
        config.validate()?;
        let kinds = ffn.or_else(|| variants.is_empty().then(|| "topk,default".to_string())).unwrap_or_default();
        let specs = kinds.split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).chain(variants);
        let variants = specs.map(|s| s.parse::<Variant>().map_err(|e| anyhow::anyhow!("--variant: {e}"))).collect::<Result<Vec<_>>>()?;
        let device = Device::new()?;
        let interrupt = moegrad::train::interrupt::Interrupt::on_signals()?;
        let rows = compare(&device, &CompareOptions { config, variants, seeds: seeds as u64, out: out.clone(), quiet, force, interrupt })?;
        print!("{}", table(&rows));
        println!("curves: {} and .svg; expert load: {}", out.join("compare.png").display(), out.join("*-load.png").display());
        let failed: Vec<&str> = rows.iter().filter(|r| !r.failures.is_empty()).map(|r| r.variant.label.as_str()).collect();
        if !failed.is_empty() {
            anyhow::bail!(
                "{} of {} variants had a run fail ({}); the others are compared above and in {}",
                failed.len(),
                rows.len(),
                failed.join(", "),
                out.join("compare.json").display()
            );
        }
        Ok(())
    }
}
