//! `moegrad compare`: the same model trained as each of several named variants on the same
//! data and seeds (TopK vs the dense-gradient family is the headline experiment): a table
//! of final eval losses with their spread, tokens per second and the share of a step's
//! time the MoE layers take, a plot of the eval-loss curves, and a heatmap of expert load
//! over training per variant. The plot draws each variant's mean over seeds with a band
//! from the lowest to the highest seed, over the whole run and over its second half. Finished runs of the same config are reused and unfinished
//! ones resumed, so an interrupted comparison picks up where it stopped; a run folder
//! trained with another config is refused unless `force`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use moegrad_core::ops::{cross_entropy, CrossEntropyOptions};
use moegrad_core::{Device, Module, Tensor};
use moegrad_models::{FfnKind, Transformer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::durable::write_atomic;
use crate::research::load_plot::load_heatmap;
use crate::research::plot::{figure, Axis, Chart, Limits, Series, Style};
use crate::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use crate::train::config::RunConfig;
use crate::train::interrupt::{Interrupt, Stopped};
use crate::train::run_folder::{reuse_or_start, Start};
use crate::train::{train, TrainOptions};

/// A named variant: `NAME` or `NAME:KEY=VALUE,KEY=VALUE...`. A NAME that is a feed-forward
/// kind (dense, topk, default, densemixer) sets `model.ffn` first; the overrides follow
/// (values as `--set` takes them; a value cannot hold a comma).
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    /// As the table shows it: a name of the user's own, or a kind with its overrides
    /// (`default:default_estimator=batch_mean`).
    pub label: String,
    /// `--set` overrides, in order.
    pub overrides: Vec<String>,
}

impl std::str::FromStr for Variant {
    type Err = anyhow::Error;
    fn from_str(spec: &str) -> Result<Variant> {
        let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let name = name.trim();
        if name.is_empty() {
            bail!("variant {spec:?} has no name (expected NAME or NAME:KEY=VALUE,...)");
        }
        let mut overrides = Vec::new();
        let kind = name.parse::<FfnKind>().ok();
        if let Some(kind) = kind {
            overrides.push(format!("model.ffn=\"{}\"", kind.name()));
        }
        let sets: Vec<&str> = rest.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if let Some(bad) = sets.iter().find(|s| !s.contains('=')) {
            bail!("variant {spec:?}: {bad:?} is not KEY=VALUE");
        }
        overrides.extend(sets.iter().map(|s| s.to_string()));
        if overrides.is_empty() {
            bail!("variant {name:?} is neither a feed-forward kind (dense, topk, default, densemixer) nor has overrides (NAME:KEY=VALUE,...)");
        }
        // A name of the user's own is the label; a kind's changes are spelt out.
        let short: Vec<String> = sets.iter().map(|s| s.trim_start_matches("model.moe.").trim_start_matches("model.").replace('"', "")).collect();
        let label = if short.is_empty() || kind.is_none() { name.to_string() } else { format!("{name}:{}", short.join(",")) };
        Ok(Variant { label, overrides })
    }
}

impl Variant {
    /// The run folder's name for `seed`: the label with anything but letters, digits, `_`
    /// and `-` as `-` (plain kinds keep the `topk-seed0` names of earlier comparisons).
    fn folder(&self, seed: u64) -> String {
        let safe: String = self.label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).collect();
        format!("{safe}-seed{seed}")
    }
}

pub struct CompareOptions {
    pub config: RunConfig,
    pub variants: Vec<Variant>,
    pub seeds: u64,
    pub out: PathBuf,
    pub quiet: bool,
    /// Start every run over, even one that finished or was trained with another config.
    pub force: bool,
    /// A signal stops the run in training (with its checkpoint) and the comparison with
    /// a `Stopped` error; running the comparison again goes on.
    pub interrupt: Interrupt,
}

/// One variant's results over the seeds.
pub struct CompareRow {
    pub variant: Variant,
    pub final_eval: Vec<f32>,
    /// Each seed's median training throughput (tokens/s over the logged windows).
    pub tokens_per_s: Vec<f64>,
    /// The MoE layers' forward and backward time over a whole step's, on the step's shapes
    /// (None for a dense model).
    pub moe_share: Option<f64>,
    /// The runs that failed, each as `seed N: why`; the statistics are over the others.
    pub failures: Vec<String>,
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

impl CompareRow {
    pub fn mean(&self) -> f64 {
        mean(&self.final_eval.iter().map(|&v| v as f64).collect::<Vec<_>>())
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

    pub fn mean_tokens_per_s(&self) -> f64 {
        mean(&self.tokens_per_s)
    }
}

/// The metrics lines of a run's metrics.jsonl.
fn metrics(run: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).with_context(|| format!("no metrics in {}", run.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// (tokens seen, eval loss) pairs of a run's metrics.jsonl.
pub fn eval_curve(run: &Path) -> Result<Vec<(f64, f64)>> {
    Ok(metrics(run)?.iter().filter_map(|v| Some((v["tokens"].as_f64()?, v["eval_loss"].as_f64()?))).collect())
}

/// The median of a run's logged tokens/s (the first window, which compiles the kernels,
/// weighs no more than any other).
fn median_tokens_per_s(run: &Path) -> Result<f64> {
    let mut rates: Vec<f64> = metrics(run)?.iter().filter_map(|v| v["tokens_per_s"].as_f64()).collect();
    rates.sort_by(f64::total_cmp);
    Ok(rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN))
}

/// The median of five timings of `work` after one to warm up: GPU time where the adapter
/// has timestamp queries, the wall clock up to the GPU's finishing otherwise.
fn timed(device: &Device, work: &dyn Fn()) -> Duration {
    work();
    device.synchronize();
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let (_, gpu) = device.time_gpu(work);
            gpu.unwrap_or_else(|| {
                device.synchronize();
                start.elapsed()
            })
        })
        .collect();
    times.sort();
    times[2]
}

/// The share of a training step's forward and backward time that its MoE layers take:
/// the model of `run`'s checkpoint on a batch of the run's shapes, then its MoE layers
/// alone on inputs of the same size.
fn moe_time_share(device: &Device, run: &Path) -> Result<Option<f64>> {
    let ckpt = Checkpoint::load(&run.join(CHECKPOINT_FILE))?;
    let config = &ckpt.meta.config;
    if !config.model.has_moe() {
        return Ok(None);
    }
    device.with_policy(
        |p| p.precision = config.train.precision,
        || {
            let mut rng = StdRng::seed_from_u64(0);
            let model = Transformer::new(device, &config.model, &mut rng)?;
            ckpt.restore(&model, None)?;
            let (batch, context) = (config.train.batch_size, config.model.context);
            let mut tokens = |shape: &[usize]| {
                let ids: Vec<u32> = (0..shape.iter().product()).map(|_| rng.random_range(0..config.model.vocab_size as u32)).collect();
                Tensor::from_u32(device, &ids, shape)
            };
            let (inputs, targets) = (tokens(&[batch, context])?, tokens(&[batch * context])?);
            let params = model.parameters();
            let step = timed(device, &|| {
                let out = model.forward(&inputs, true);
                let loss = cross_entropy(&out.logits, &targets, CrossEntropyOptions::default());
                out.aux_loss().map_or(loss.clone(), |aux| loss.add(&aux)).backward();
                params.iter().for_each(Tensor::zero_grad);
            });
            let x = Tensor::randn(device, &[batch * context, config.model.d_model], 1.0, &mut rng)?.requires_grad();
            let seed = Tensor::randn(device, &[batch * context, config.model.d_model], 1.0, &mut rng)?;
            let layers: Vec<_> = model.blocks.iter().filter_map(|b| if let moegrad_models::Ffn::Moe(m) = &b.ffn { Some(m) } else { None }).collect();
            let moe = timed(device, &|| {
                for layer in &layers {
                    let (y, stats) = layer.forward(&x, true);
                    stats.aux_loss.iter().chain(&stats.z_loss).fold(y.mul(&seed).sum_all(), |acc, l| acc.add(l)).backward();
                }
                params.iter().for_each(Tensor::zero_grad);
                x.zero_grad();
            });
            Ok(Some(moe.as_secs_f64() / step.as_secs_f64()))
        },
    )
}

/// The mean, lowest and highest loss over seeds at each point every seed evaluated,
/// leaving out the untrained evaluation at 0 tokens (the same loss for every variant,
/// which would set the scale): `(tokens, mean, low, high)`.
fn over_seeds(curves: &[Vec<(f64, f64)>]) -> Vec<(f64, f64, f64, f64)> {
    let Some(first) = curves.first() else { return Vec::new() };
    first
        .iter()
        .filter(|&&(tokens, _)| tokens > 0.0)
        .filter_map(|&(tokens, _)| {
            let at: Vec<f64> = curves.iter().filter_map(|c| c.iter().find(|p| p.0 == tokens).map(|p| p.1)).collect();
            let (lo, hi) = at.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            (at.len() == curves.len()).then(|| (tokens, mean(&at), lo, hi))
        })
        .collect()
}

/// A variant's mean eval loss over seeds with the band from the lowest to the highest
/// seed; a variant named by a feed-forward kind keeps that kind's dash and marker.
fn variant_series(variant: &Variant, k: usize, curves: &[Vec<(f64, f64)>]) -> Series {
    let seeds = over_seeds(curves);
    let kind = variant.label.split(':').next().and_then(|n| n.parse::<FfnKind>().ok());
    let style = kind.map_or(Style::nth(k), |kind| Style::ffn(kind.name(), k));
    let series = Series::new(&variant.label, style, seeds.iter().map(|s| (s.0, s.1)).collect());
    if curves.len() > 1 {
        series.with_band(seeds.iter().map(|s| (s.0, s.2, s.3)).collect())
    } else {
        series
    }
}

/// The comparison's two panels: the whole run, and its second half, where variants that
/// differ by hundredths of a nat part.
fn compare_charts(series: Vec<Series>, seeds: u64) -> Vec<Chart> {
    let note = match seeds {
        1 => "one seed each".to_string(),
        n => format!("lines: mean of {n} seeds; shaded: lowest to highest seed"),
    };
    let last = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(0.0, f64::max);
    let second_half = |s: &Series| Series {
        label: s.label.clone(),
        style: s.style,
        points: s.points.iter().copied().filter(|p| p.0 >= last / 2.0).collect(),
        band: s.band.iter().copied().filter(|b| b.0 >= last / 2.0).collect(),
    };
    let (tokens, loss) = (|| Axis::log("tokens seen"), || Axis::linear("eval loss (nats/token)"));
    let zoomed = series.iter().map(second_half).fold(Chart::new("The second half of training", tokens(), loss()), Chart::series);
    // The second half's legend serves both panels.
    let unlabelled = |s: Series| Series { label: String::new(), ..s };
    let whole = series.into_iter().map(unlabelled).fold(Chart::new("Eval loss by variant", tokens(), loss()).limits(Limits::Robust).note(note), Chart::series);
    vec![whole, zoomed]
}

/// A run's (tokens seen, eval loss) points.
type Curve = Vec<(f64, f64)>;

/// One run of a comparison: a variant's config for one seed, its folder, and how to start
/// it (`None`: finished before, reused).
struct PlannedRun {
    config: RunConfig,
    folder: PathBuf,
    start: Option<Start>,
}

/// Every variant's runs, checked before the first trains: a variant whose overrides make
/// no valid config, or whose folder holds another config's run, is refused by name while
/// nothing has been spent.
fn plan(opts: &CompareOptions) -> Result<Vec<Vec<PlannedRun>>> {
    let mut refused = Vec::new();
    let mut plans = Vec::new();
    for variant in &opts.variants {
        let planned = (|| -> Result<Vec<PlannedRun>> {
            let mut base = opts.config.clone();
            if variant.overrides.iter().any(|o| o.starts_with("model.ffn=")) {
                base.model.ffn_layers.clear();
            }
            let base = base.with_overrides(&variant.overrides)?;
            base.validate()?;
            (0..opts.seeds)
                .map(|s| {
                    let mut config = base.clone();
                    config.train.seed = opts.config.train.seed + s;
                    let folder = opts.out.join(variant.folder(config.train.seed));
                    let start = reuse_or_start(&folder, &config, opts.force)?;
                    Ok(PlannedRun { config, folder, start })
                })
                .collect()
        })();
        match planned {
            Ok(runs) => plans.push(runs),
            Err(e) => refused.push(format!("variant {:?}: {e:#}", variant.label)),
        }
    }
    if !refused.is_empty() {
        bail!("nothing was trained: {}", refused.join("; "));
    }
    Ok(plans)
}

/// Trains (or reuses) one variant's runs and gathers its row and eval curves. A run that
/// fails (a loss that diverged, a resource the GPU lacks) is recorded in the row, and the
/// comparison goes on with the next.
fn run_variant(device: &Device, opts: &CompareOptions, variant: &Variant, runs: Vec<PlannedRun>) -> Result<(CompareRow, Vec<Curve>)> {
    let mut row = CompareRow { variant: variant.clone(), final_eval: Vec::new(), tokens_per_s: Vec::new(), moe_share: None, failures: Vec::new() };
    let mut curves = Vec::new();
    for PlannedRun { config, folder, start } in runs {
        let seed = config.train.seed;
        if let Some(start) = start {
            if !opts.quiet {
                println!("training {} (seed {seed}){}", variant.label, if start == Start::Resume { ", resuming" } else { "" });
            }
            let options = TrainOptions { config, out: folder.clone(), start, quiet: opts.quiet, stop_after: None, interrupt: opts.interrupt.clone() };
            match train(device, options) {
                Ok(summary) => {
                    if let Some(signal) = summary.interrupted {
                        return Err(Stopped { signal, run: folder }.into());
                    }
                }
                Err(e) => {
                    eprintln!("variant {} (seed {seed}) failed: {e:#}", variant.label);
                    row.failures.push(format!("seed {seed}: {e:#}"));
                    continue;
                }
            }
        }
        let curve = eval_curve(&folder)?;
        row.final_eval.push(curve.last().map_or(f32::NAN, |&(_, l)| l as f32));
        row.tokens_per_s.push(median_tokens_per_s(&folder)?);
        curves.push(curve);
        if curves.len() == 1 {
            row.moe_share = moe_time_share(device, &folder)?;
            if row.moe_share.is_some() {
                load_heatmap(std::slice::from_ref(&folder), &opts.out.join(format!("{}-load", variant.folder(seed))))?;
            }
        }
    }
    Ok((row, curves))
}

/// Trains every variant over the seeds and writes `compare.json` and the plots. Every
/// variant is checked before the first trains; one that fails while training is reported
/// in its row (`CompareRow::failures`) and in `compare.json`, and the others go on.
pub fn compare(device: &Device, opts: &CompareOptions) -> Result<Vec<CompareRow>> {
    if opts.seeds == 0 || opts.variants.is_empty() {
        bail!("compare needs at least one seed and one variant (got {} seeds, {} variants)", opts.seeds, opts.variants.len());
    }
    if let Some(twice) = opts.variants.iter().enumerate().find(|(i, v)| opts.variants[..*i].iter().any(|w| w.label == v.label)) {
        bail!("variant {:?} is named twice", twice.1.label);
    }
    let mut rows = Vec::new();
    let mut all_series = Vec::new();
    for (k, (variant, runs)) in opts.variants.iter().zip(plan(opts)?).enumerate() {
        let (row, curves) = run_variant(device, opts, variant, runs)?;
        if !curves.is_empty() {
            all_series.push(variant_series(variant, k, &curves));
        }
        rows.push(row);
    }
    if !all_series.is_empty() {
        figure(&opts.out.join("compare"), &compare_charts(all_series, opts.seeds), 2)?;
    }
    let summary: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "variant": r.variant.label, "overrides": r.variant.overrides, "final_eval_loss": r.final_eval, "mean": r.mean(), "std": r.std(),
                "tokens_per_s": r.tokens_per_s, "moe_time_share": r.moe_share, "failures": r.failures,
            })
        })
        .collect();
    write_atomic(&opts.out.join("compare.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(rows)
}

/// The comparison as a text table.
pub fn table(rows: &[CompareRow]) -> String {
    let width = rows.iter().map(|r| r.variant.label.len()).max().unwrap_or(0).max(7);
    let mut out = format!("{:<width$} {:>5} {:>10} {:>8} {:>10} {:>9}\n", "variant", "runs", "eval loss", "std", "tokens/s", "MoE time");
    for r in rows {
        if r.final_eval.is_empty() {
            out += &format!("{:<width$} {:>5} failed: {}\n", r.variant.label, 0, r.failures.join("; "));
            continue;
        }
        let share = r.moe_share.map_or("-".to_string(), |s| format!("{:.0}%", 100.0 * s));
        out += &format!(
            "{:<width$} {:>5} {:>10.4} {:>8.4} {:>10.0} {:>9}\n",
            r.variant.label,
            r.final_eval.len(),
            r.mean(),
            r.std(),
            r.mean_tokens_per_s(),
            share
        );
        for failure in &r.failures {
            out += &format!("{:<width$} failed {failure}\n", "");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::research::plot::{Dash, Marker};

    #[test]
    fn seeds_give_a_mean_with_a_band_from_the_lowest_to_the_highest() {
        let a = vec![(0.0, 5.5), (100.0, 3.0), (200.0, 2.0)];
        let b = vec![(0.0, 5.5), (100.0, 3.5), (200.0, 2.5)];
        let early = vec![(0.0, 5.5), (100.0, 4.0)];
        assert_eq!(over_seeds(&[a.clone(), b.clone()]), [(100.0, 3.25, 3.0, 3.5), (200.0, 2.25, 2.0, 2.5)]);
        assert_eq!(over_seeds(&[a.clone(), b.clone(), early]), [(100.0, 3.5, 3.0, 4.0)], "only where every seed evaluated");
        let topk = variant_series(&"topk".parse().unwrap(), 0, &[a.clone(), b]);
        assert_eq!((topk.band, topk.style.line, topk.style.marker), (vec![(100.0, 3.0, 3.5), (200.0, 2.0, 2.5)], Some(Dash::Dashed), Some(Marker::Triangle)));
        let own = variant_series(&"mine:model.moe.top_k=1".parse().unwrap(), 2, &[a]);
        assert!(own.band.is_empty() && own.label == "mine" && own.style.color == 2, "{}", own.label);
    }
}
