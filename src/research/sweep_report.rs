//! A sweep's plots, written next to its results (`out/plots/`, PNG and SVG): loss against
//! tokens per run (colour by width, dash by depth, marker by feed-forward kind), loss
//! against FLOPs with the compute-optimal frontier, iso-FLOP slices with fitted parabolas
//! and their minima, the fitted law against the data with R² and residuals, a width x
//! depth heatmap of final loss with a colour bar, and, for MoE sweeps, each feed-forward
//! kind side by side.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::research::fit::{frontier, Fit, Law, Row};
use crate::research::fit_plots::{isoflop_chart, law_charts};
use crate::research::plot::{figure, heatmap, Axis, Chart, Dash, Limits, Series, Style, GREY};

const LOSS: &str = "eval loss (nats/token)";

/// Rows of one run, in token order.
fn runs(rows: &[Row]) -> BTreeMap<&str, Vec<&Row>> {
    let mut by_run: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_run.entry(&r.run_name).or_default().push(r);
    }
    by_run.values_mut().for_each(|v| v.sort_by(|a, b| a.tokens.total_cmp(&b.tokens)));
    by_run
}

fn index_of(values: &[f64], v: f64) -> usize {
    values.iter().position(|&x| x == v).unwrap_or(0)
}

fn sorted_unique(it: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = it.collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// The feed-forward kind in a run name (`w32-d2-default-lr1e-2`), if any.
fn ffn_of(run: &str) -> &str {
    run.split('-').nth(2).unwrap_or("")
}

/// Loss at `flops` for one run, interpolated in log FLOPs between its checkpoints.
fn loss_at(run: &[&Row], flops: f64) -> Option<f64> {
    run.windows(2).find(|w| w[0].flops <= flops && flops <= w[1].flops).map(|w| {
        let t = if w[1].flops > w[0].flops { (flops.ln() - w[0].flops.ln()) / (w[1].flops.ln() - w[0].flops.ln()) } else { 0.0 };
        w[0].loss + t * (w[1].loss - w[0].loss)
    })
}

/// Writes the sweep's plots into `dir`.
pub fn write_plots(dir: &Path, rows: &[Row], fit: Option<(&Fit, Law)>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let by_run = runs(rows);
    let widths = sorted_unique(rows.iter().map(|r| r.width));
    let depths = sorted_unique(rows.iter().map(|r| r.depth));
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = by_run.keys().map(|n| ffn_of(n)).filter(|k| !k.is_empty()).collect();
        k.sort();
        k.dedup();
        k
    };
    let dashes = [Dash::Solid, Dash::Dashed, Dash::Dotted];

    // Colour by width, dash by depth, marker by feed-forward kind; the legend keys each
    // once instead of naming every run.
    let mut by_tokens = Chart::new("Loss by run", Axis::log("tokens seen"), Axis::linear(LOSS)).limits(Limits::Robust);
    for rs in by_run.values() {
        let style = Style::ffn(ffn_of(&rs[0].run_name), index_of(&widths, rs[0].width)).dash(Some(dashes[index_of(&depths, rs[0].depth) % dashes.len()]));
        by_tokens = by_tokens.series(Series::new("", style, rs.iter().map(|r| (r.tokens, r.loss)).collect()));
    }
    for (i, w) in widths.iter().enumerate() {
        by_tokens = by_tokens.series(Series::new(format!("width {w}"), Style::line(i), vec![]));
    }
    for (i, d) in depths.iter().enumerate() {
        by_tokens = by_tokens.series(Series::new(format!("depth {d}"), Style::line(GREY).dash(Some(dashes[i % dashes.len()])), vec![]));
    }
    for kind in &kinds {
        by_tokens = by_tokens.series(Series::new(*kind, Style::ffn(kind, GREY).dash(None), vec![]));
    }
    figure(&dir.join("loss_vs_tokens"), &[by_tokens], 1)?;

    let f = frontier(rows);
    let mut by_flops =
        Chart::new("Loss against compute, with the compute-optimal frontier", Axis::log("training FLOPs"), Axis::linear(LOSS)).limits(Limits::Robust);
    let groups: Vec<&str> = if kinds.is_empty() { vec![""] } else { kinds.clone() };
    for (k, kind) in groups.iter().enumerate() {
        let mut points: Vec<(f64, f64)> = rows.iter().filter(|r| ffn_of(&r.run_name) == *kind).map(|r| (r.flops, r.loss)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let label = if kind.is_empty() { "checkpoints".to_string() } else { format!("{kind} checkpoints") };
        by_flops = by_flops.series(Series::new(label, Style::ffn(kind, k).dash(None), points));
    }
    let hull = f.optimal.iter().map(|&i| (rows[i].flops, rows[i].loss)).collect();
    by_flops = by_flops.series(Series::new("compute-optimal frontier", Style::line(3).dash(Some(Dash::Dashed)), hull));
    figure(&dir.join("loss_vs_flops"), &[by_flops], 1)?;

    // The runs' checkpoints rarely share budgets: each run's loss is read at four budgets
    // spread over the sweep's, interpolated in log FLOPs between its checkpoints; one
    // panel per feed-forward kind, since a slice compares sizes of one kind.
    let (lo, hi) = rows.iter().fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r.flops.log10()), b.max(r.flops.log10())));
    let isoflop: Vec<Chart> = groups
        .iter()
        .map(|kind| {
            let slices: Vec<(f64, Vec<(f64, f64)>)> = (1..=4)
                .map(|i| {
                    let level = 10f64.powf(lo + (hi - lo) * i as f64 / 5.0);
                    let mut pts: Vec<(f64, f64)> =
                        by_run.values().filter(|rs| ffn_of(&rs[0].run_name) == *kind).filter_map(|rs| loss_at(rs, level).map(|l| (rs[0].params, l))).collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (level, pts)
                })
                .filter(|(_, pts)| !pts.is_empty())
                .collect();
            let title =
                if kind.is_empty() { "Iso-FLOP slices with fitted parabolas".to_string() } else { format!("Iso-FLOP slices with fitted parabolas: {kind}") };
            isoflop_chart(&title, &slices)
        })
        .collect();
    figure(&dir.join("isoflop"), &isoflop, 2)?;

    if let Some((fit, law)) = fit {
        figure(&dir.join("fit"), &law_charts(rows, fit, law, false), 2)?;
    }

    let mut grid = vec![vec![None; widths.len()]; depths.len()];
    for rs in by_run.values() {
        let last = rs[rs.len() - 1];
        let cell = &mut grid[index_of(&depths, last.depth)][index_of(&widths, last.width)];
        *cell = Some(cell.map_or(last.loss, |c: f64| c.min(last.loss)));
    }
    let labels = |v: &[f64]| v.iter().map(|x| format!("{x}")).collect::<Vec<_>>();
    let (w, d) = (labels(&widths), labels(&depths));
    heatmap(
        &dir.join("width_depth"),
        "Final loss by width and depth (best over runs)",
        [("width (d_model)", &w), ("depth (layers)", &d)],
        &grid,
        "final eval loss (nats/token)",
    )?;

    if kinds.len() > 1 {
        let mut chart = Chart::new("Final loss by feed-forward kind", Axis::log("active parameters"), Axis::linear(LOSS));
        for (i, kind) in kinds.iter().enumerate() {
            let mut pts: Vec<(f64, f64)> = by_run.iter().filter(|(n, _)| ffn_of(n) == *kind).map(|(_, rs)| (rs[0].params, rs[rs.len() - 1].loss)).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart = chart.series(Series::new(*kind, Style::ffn(kind, i), pts));
        }
        figure(&dir.join("ffn_kinds"), &[chart], 1)?;
    }
    Ok(())
}
