//! The charts of scaling-law work, which `sweep` and `fit` both draw: iso-FLOP slices with
//! the parabola fitted to each and its minimum marked, the three approaches' compute-optimal
//! model sizes, and a fitted law against the data with its R² and residuals.

use crate::research::fit::{frontier, iso_flop_groups, iso_flop_slices, parabola_minimum, r_squared, Fit, Law, OptimalScaling, Row};
use crate::research::plot::{short, Axis, Chart, Dash, Marker, Series, Style, GREY};

const LOSS: &str = "eval loss (nats/token)";

/// Iso-FLOP slices: for each `(budget, [(params, loss)])`, the points, the least-squares
/// parabola in ln N through them (drawn over their sizes) and its minimum as a star, where
/// the parabola has one among the sizes (Chinchilla's approach 2).
pub fn isoflop_chart(title: &str, slices: &[(f64, Vec<(f64, f64)>)]) -> Chart {
    let mut chart = Chart::new(title, Axis::log("parameters"), Axis::linear(LOSS));
    for (k, (flops, points)) in slices.iter().enumerate() {
        let logs: Vec<(f64, f64)> = points.iter().filter(|p| p.0 > 0.0).map(|&(n, l)| (n.ln(), l)).collect();
        let dots = Style::dots(k, Style::nth(k).marker.unwrap_or(Marker::Circle));
        let Some((at, loss, [p, q, r])) = parabola_minimum(&logs) else {
            chart = chart.series(Series::new(format!("{} FLOPs (no minimum among the sizes)", short(*flops)), dots, points.clone()));
            continue;
        };
        let (lo, hi) = logs.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let curve = (0..=40).map(|i| lo + (hi - lo) * i as f64 / 40.0).map(|x| (x.exp(), p * x * x + q * x + r)).collect();
        chart = chart
            .series(Series::new(format!("{} FLOPs: minimum at {} parameters", short(*flops), short(at.exp())), dots.dash(Some(Dash::Solid)), vec![]))
            .series(Series::new("", dots, points.clone()))
            .series(Series::new("", Style::line(k), curve))
            .series(Series::new("", Style::dots(k, Marker::Star), vec![(at.exp(), loss)]));
    }
    chart.series(Series::new("minimum of the fitted parabola", Style::dots(GREY, Marker::Star), vec![]))
}

/// The iso-FLOP slices of a table whose rows share budgets (`fit`'s approach 2): those
/// with a minimum among their sizes, at most `MAX_SLICES` spread over the budgets.
pub fn table_isoflop_chart(rows: &[Row]) -> Chart {
    let groups: Vec<Vec<usize>> = iso_flop_groups(rows)
        .into_iter()
        .filter(|g| parabola_minimum(&g.iter().map(|&i| (rows[i].params.ln(), rows[i].loss)).collect::<Vec<_>>()).is_some())
        .collect();
    let step = groups.len().div_ceil(MAX_SLICES).max(1);
    let slices: Vec<(f64, Vec<(f64, f64)>)> = groups
        .iter()
        .step_by(step)
        .map(|g| {
            let flops = (g.iter().map(|&i| rows[i].flops.ln()).sum::<f64>() / g.len() as f64).exp();
            (flops, g.iter().map(|&i| (rows[i].params, rows[i].loss)).collect())
        })
        .collect();
    let title = match groups.len() > slices.len() {
        true => format!("Iso-FLOP slices with fitted parabolas ({} of {})", slices.len(), groups.len()),
        false => "Iso-FLOP slices with fitted parabolas".to_string(),
    };
    isoflop_chart(&title, &slices)
}

/// More slices than this crowd a chart.
const MAX_SLICES: usize = 6;

/// The compute-optimal model size of each approach against the budget, with the rows each
/// rests on: approach 1's envelope and approach 2's slice minima.
pub fn approaches_chart(rows: &[Row], all: &[OptimalScaling]) -> Chart {
    let (lo, hi) = rows.iter().filter(|r| r.flops > 0.0).fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r.flops.log10()), b.max(r.flops.log10())));
    let grid: Vec<f64> = (0..=40).map(|i| 10f64.powf(lo + (hi - lo) * i as f64 / 40.0)).collect();
    let mut chart = Chart::new("Compute-optimal model size by approach", Axis::log("training FLOPs C"), Axis::log("compute-optimal parameters N_opt"));
    for s in all {
        let how = ["the loss envelope", "iso-FLOP parabolas", "the parametric law"][s.approach as usize - 1];
        let style = Style::nth(s.approach as usize - 1).marker(None);
        let label = format!("approach {} ({how}): N_opt ~ C^{:.3}", s.approach, s.params_exponent);
        chart = chart.series(Series::new(label, style, grid.iter().map(|&c| (c, s.params_at(c))).collect()));
    }
    let envelope = frontier(rows).optimal.iter().map(|&i| (rows[i].flops, rows[i].params)).collect();
    let minima = iso_flop_slices(rows).iter().map(|s| (s.flops, s.params_opt)).collect();
    chart.series(Series::new("envelope rows (approach 1)", Style::dots(0, Marker::Circle), envelope)).series(Series::new(
        "slice minima (approach 2)",
        Style::dots(1, Marker::Star),
        minima,
    ))
}

/// A fitted law against its rows: predicted against observed loss with R² and the line
/// of a perfect fit, and the residuals against tokens.
pub fn law_charts(rows: &[Row], fit: &Fit, law: Law, non_embedding: bool) -> [Chart; 2] {
    let pairs: Vec<(f64, f64)> = rows.iter().map(|r| (r.loss, fit.predict(&law.values(r, non_embedding)))).collect();
    let (lo, hi) = pairs.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0.min(p.1)), b.max(p.0.max(p.1))));
    let rms = (pairs.iter().map(|p| (p.0 - p.1).powi(2)).sum::<f64>() / pairs.len() as f64).sqrt();
    let agreement =
        Chart::new(format!("Fitted {} law against the data", fit.law), Axis::linear(format!("observed {LOSS}")), Axis::linear(format!("predicted {LOSS}")))
            .note(format!("R² = {:.4} over {} rows", r_squared(&pairs), pairs.len()))
            .series(Series::new("perfect fit", Style::line(GREY).dash(Some(Dash::Dashed)), vec![(lo, lo), (hi, hi)]))
            .series(Series::new("rows", Style::dots(0, Marker::Circle), pairs.clone()));
    let residuals: Vec<(f64, f64)> = rows.iter().zip(&pairs).map(|(r, p)| (r.tokens, p.0 - p.1)).collect();
    let (t0, t1) = residuals.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let residual = Chart::new("Residuals of the fit", Axis::log("tokens"), Axis::linear("observed - predicted loss (nats/token)"))
        .note(format!("RMS {rms:.2e} nats/token"))
        .series(Series::new("", Style::line(GREY).dash(Some(Dash::Dashed)), vec![(t0, 0.0), (t1, 0.0)]))
        .series(Series::new("", Style::dots(0, Marker::Circle), residuals));
    [agreement, residual]
}
