//! `moegrad fit`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use moegrad::research::fit::{
    approach1, approach2, approach3, bootstrap_envelopes, bootstrap_with_progress, compute_optimal, degeneracies, fit_with_progress, frontier, r_squared, Law,
    OptimalScaling, StartGrid,
};
use moegrad::research::fit_plots::{approaches_chart, law_charts, table_isoflop_chart};
use moegrad::research::plot::figure;
use moegrad::research::table::{parse_columns, read_table, Filter, TableOptions};

/// Fit a scaling law to a table of results: a sweep's results.jsonl, the Gemstones rows,
/// or anyone's CSV or JSON lines.
#[derive(Args)]
pub struct FitArgs {
    /// The rows to fit: .csv (with a header line) or JSON lines.
    results: PathBuf,
    /// params-tokens (Chinchilla approach 3), width-depth-tokens or width-depth-params-tokens.
    #[arg(long, value_enum, default_value = "params-tokens")]
    law: Law,
    /// The table's own column names: ROLE=COLUMN,... with roles params, tokens, loss,
    /// width, depth, flops, non_embedding_params, run_name (defaults: the Gemstones names,
    /// then params, tokens, loss, name).
    #[arg(long, value_name = "ROLE=COLUMN,...")]
    columns: Option<String>,
    /// Tokens = FLOPs / (6 x params), for a table that gives training FLOPs only.
    #[arg(long)]
    tokens_from_flops: bool,
    /// Keep only rows with COLUMN<VALUE or COLUMN>VALUE (a role or a column; repeatable).
    #[arg(long = "filter", value_name = "COLUMN<VALUE")]
    filters: Vec<String>,
    /// Huber delta of the objective (on log loss).
    #[arg(long, default_value_t = 1e-4, value_parser = positive_finite, allow_negative_numbers = true)]
    delta: f64,
    /// Count parameters without embeddings.
    #[arg(long)]
    no_embeddings: bool,
    /// Bootstrap resamples for confidence intervals (0: none).
    #[arg(long, default_value_t = 100)]
    bootstrap: usize,
    /// FLOP budget for the compute-optimal prediction (params-tokens law).
    #[arg(long, default_value_t = 1e21, value_parser = positive_finite, allow_negative_numbers = true)]
    budget: f64,
    /// Write <STEM>.png and .svg: the fitted law against the rows (R² and residuals) and,
    /// for the params-tokens law, the iso-FLOP slices and the three approaches' N_opt(C).
    #[arg(long, value_name = "STEM")]
    plot: Option<PathBuf>,
    /// Print one JSON object on one line.
    #[arg(long)]
    json: bool,
}

/// A flag's value that must be a positive, finite number (clap names the flag).
fn positive_finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        Ok(v) => Err(format!("{v} must be positive and finite")),
        Err(e) => Err(format!("{s:?} is not a number ({e})")),
    }
}

/// The params-tokens law's three approaches side by side, with bootstrap intervals.
fn approaches(
    rows: &[moegrad::research::fit::Row],
    best: &moegrad::research::fit::Fit,
    budget: f64,
    ci: Option<&moegrad::research::fit::Bootstrap>,
    samples: usize,
) -> Vec<OptimalScaling> {
    let mut all = vec![approach1(rows, budget)];
    all.extend(approach2(rows, budget));
    let mut third = approach3(best, budget);
    if let Some([a, b]) = ci.and_then(|c| c.optimal_exponents) {
        (third.params_exponent_interval, third.tokens_exponent_interval) = (Some(a), Some(b));
    }
    all.push(third);
    bootstrap_envelopes(rows, &mut all, samples, 0);
    all
}

impl FitArgs {
    pub fn run(self) -> Result<()> {
        let FitArgs { results, law, columns, tokens_from_flops, filters, delta, no_embeddings, bootstrap: samples, budget, plot, json } = self;
        let options = TableOptions {
            columns: columns.as_deref().map(parse_columns).transpose()?.unwrap_or_default(),
            tokens_from_flops,
            filters: filters.iter().map(|f| f.parse::<Filter>()).collect::<Result<_>>()?,
        };
        let variables: Vec<&str> = law.variables().iter().map(|&v| if v == "params" && no_embeddings { "non_embedding_params" } else { v }).collect();
        // Said from the first moment: a table of a million rows takes seconds to read.
        eprintln!("reading {}", results.display());
        let rows = read_table(&results, &variables, &options)?;
        eprintln!("fitting the {} law to its {} rows", law.gemstones_name(), rows.len());
        // Progress on stderr (where there is a terminal), so that --json output stays one line.
        let bar = |template: &str| {
            let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
            bar
        };
        let follow = |bar: &ProgressBar| {
            let bar = bar.clone();
            move |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        };
        let search = bar("searching {bar:30} {pos}/{len} L-BFGS starts [{elapsed} < {eta}]");
        let best = fit_with_progress(&rows, law, delta, &StartGrid::for_law(law), no_embeddings, &follow(&search))?;
        search.finish_and_clear();
        let refits = bar("bootstrap {bar:30} {pos}/{len} refits [{elapsed} < {eta}]");
        let ci = if samples > 0 { Some(bootstrap_with_progress(&rows, law, delta, &best, (samples, 0), no_embeddings, &follow(&refits))?) } else { None };
        refits.finish_and_clear();
        let warnings = degeneracies(&best, &rows);
        for w in &warnings {
            eprintln!("warning: degenerate fit: {w}");
        }
        let optimal = (law == Law::ParamsTokens).then(|| compute_optimal(&best, budget));
        let three = (law == Law::ParamsTokens).then(|| approaches(&rows, &best, budget, ci.as_ref(), samples));
        if let Some(stem) = &plot {
            let mut charts = Vec::new();
            if let Some(all) = &three {
                charts.extend([table_isoflop_chart(&rows), approaches_chart(&rows, all)]);
            }
            charts.extend(law_charts(&rows, &best, law, no_embeddings));
            figure(stem, &charts, 2)?;
        }
        let fitted: Vec<(f64, f64)> = rows.iter().map(|r| (r.loss, best.predict(&law.values(r, no_embeddings)))).collect();
        let r2 = r_squared(&fitted);
        let approach1 = frontier(&rows);
        if json {
            let mut v = serde_json::to_value(&best)?;
            v["variables"] = serde_json::json!(law.variables());
            v["delta"] = serde_json::json!(delta);
            v["rows"] = serde_json::json!(rows.len());
            v["r_squared"] = serde_json::json!(r2);
            v["bootstrap"] = serde_json::to_value(&ci)?;
            v["compute_optimal"] = serde_json::to_value(&optimal)?;
            v["warnings"] = serde_json::json!(warnings);
            v["approaches"] = serde_json::to_value(&three)?;
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
        println!(
            "  irreducible e = {:.4} (exp(e) = {:.4})  objective {:.6e}  R² {r2:.4}",
            best.irreducible_error,
            best.irreducible_error.exp(),
            best.objective
        );
        if let Some(o) = optimal {
            println!("compute-optimal at {:.3e} FLOPs: {:.3e} parameters, {:.3e} tokens, predicted loss {:.4}", o.flops, o.params, o.tokens, o.loss);
        }
        match &three {
            Some(all) => {
                println!("compute-optimal scaling N_opt ~ C^a, D_opt ~ C^b, and D/N at {budget:.3e} FLOPs:");
                let range = |i: Option<(f64, f64)>| i.map_or(String::new(), |(lo, hi)| format!(" ({lo:.3}..{hi:.3})"));
                for s in all {
                    let how = ["the loss envelope", "iso-FLOP parabolas", "the parametric law"][s.approach as usize - 1];
                    println!(
                        "  approach {} ({how}): a = {:.3}{}  b = {:.3}{}  N_opt {:.3e}  D/N {:.1}",
                        s.approach,
                        s.params_exponent,
                        range(s.params_exponent_interval),
                        s.tokens_exponent,
                        range(s.tokens_exponent_interval),
                        s.params_at_budget,
                        s.tokens_per_param
                    );
                }
                if !all.iter().any(|s| s.approach == 2) {
                    println!("  approach 2: fewer than two iso-FLOP slices with 3 or more model sizes around a minimum");
                }
            }
            None => println!(
                "approach 1: {} compute-optimal checkpoints; N_opt ~ C^{:.3}, D_opt ~ C^{:.3}",
                approach1.optimal.len(),
                approach1.params_exponent,
                approach1.tokens_exponent
            ),
        }
        if let Some(stem) = &plot {
            println!("plot: {} and .svg", stem.with_extension("png").display());
        }
        Ok(())
    }
}
