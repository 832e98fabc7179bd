//! `moegrad fit`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use moegrad::research::fit::{bootstrap, compute_optimal, degeneracies, fit_with_progress, frontier, read_rows, Law, StartGrid};

/// Fit a scaling law to results (a sweep's results.jsonl or the Gemstones rows).
#[derive(Args)]
pub struct FitArgs {
    /// The rows to fit: JSON lines with the Gemstones columns.
    results: PathBuf,
    /// params-tokens (Chinchilla approach 3), width-depth-tokens or width-depth-params-tokens.
    #[arg(long, value_enum, default_value = "params-tokens")]
    law: Law,
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
}

impl FitArgs {
    pub fn run(self) -> Result<()> {
        let FitArgs { results, law, delta, no_embeddings, bootstrap: samples, budget, json } = self;
        let rows = read_rows(&results)?;
        // Progress on stderr (where there is a terminal), so that --json output stays one line.
        let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("searching {bar:30} {pos}/{len} L-BFGS starts [{elapsed} < {eta}]").expect("valid template"));
        let best = fit_with_progress(&rows, law, delta, &StartGrid::for_law(law), no_embeddings, &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        if samples > 0 && !json {
            eprintln!("bootstrap: refitting {samples} resamples of the {} rows", rows.len());
        }
        let ci = if samples > 0 { Some(bootstrap(&rows, law, delta, &best, samples, 0, no_embeddings)?) } else { None };
        let warnings = degeneracies(&best, &rows);
        for w in &warnings {
            eprintln!("warning: degenerate fit: {w}");
        }
        let optimal = (law == Law::ParamsTokens).then(|| compute_optimal(&best, budget));
        let approach1 = frontier(&rows);
        if json {
            let mut v = serde_json::to_value(&best)?;
            v["variables"] = serde_json::json!(law.variables());
            v["delta"] = serde_json::json!(delta);
            v["rows"] = serde_json::json!(rows.len());
            v["bootstrap"] = serde_json::to_value(&ci)?;
            v["compute_optimal"] = serde_json::to_value(&optimal)?;
            v["warnings"] = serde_json::json!(warnings);
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
}
