//! A sweep's plots, written next to its results (`out/plots/`, PNG and SVG): loss against
//! tokens per run (colour by width, line weight by depth), loss against FLOPs with the
//! compute-optimal hull, iso-FLOP slices, the fitted law against the data, a width x
//! depth heatmap of final loss, and, for MoE sweeps, each feed-forward kind side by side.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::research::fit::{frontier, Fit, Law, Row};
use crate::research::plot::{heatmap, line_chart, Series};

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

pub fn write_plots(dir: &Path, rows: &[Row], fit: Option<(&Fit, Law)>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let by_run = runs(rows);
    let widths = sorted_unique(rows.iter().map(|r| r.width));
    let depths = sorted_unique(rows.iter().map(|r| r.depth));

    let per_run: Vec<Series> = by_run
        .iter()
        .map(|(name, rs)| Series {
            label: name.to_string(),
            color: index_of(&widths, rs[0].width),
            points: rs.iter().map(|r| (r.tokens.log10(), r.loss)).collect(),
            stroke: 1 + index_of(&depths, rs[0].depth) as u32,
        })
        .collect();
    line_chart(&dir.join("loss_vs_tokens"), "Loss by run (colour: width, weight: depth)", "log10 tokens", "eval loss", &per_run)?;

    let f = frontier(rows);
    let all = Series::dots("checkpoints", 7, rows.iter().map(|r| (r.flops.log10(), r.loss)).collect());
    let hull = Series::line("compute-optimal frontier", 3, f.optimal.iter().map(|&i| (rows[i].flops.log10(), rows[i].loss)).collect());
    line_chart(&dir.join("loss_vs_flops"), "Loss against compute, with the convex hull", "log10 FLOPs", "eval loss", &[all, hull])?;

    let (lo, hi) = rows.iter().fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r.flops.log10()), b.max(r.flops.log10())));
    let slices: Vec<Series> = (1..=4)
        .map(|i| {
            let level = 10f64.powf(lo + (hi - lo) * i as f64 / 5.0);
            let mut pts: Vec<(f64, f64)> = by_run.values().filter_map(|rs| loss_at(rs, level).map(|l| (rs[0].params.log10(), l))).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series::line(format!("{level:.2e} FLOPs"), i, pts)
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    line_chart(&dir.join("isoflop"), "Iso-FLOP slices", "log10 parameters", "eval loss", &slices)?;

    if let Some((fit, law)) = fit {
        let predicted: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| {
                let v = match law {
                    Law::ParamsTokens => vec![r.params, r.tokens],
                    Law::WidthDepthTokens => vec![r.width, r.depth, r.tokens],
                    Law::WidthDepthParamsTokens => vec![r.width, r.depth, r.params, r.tokens],
                };
                (r.loss, fit.predict(&v))
            })
            .collect();
        let (a, b) = predicted.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let series = [Series::dots("checkpoints", 0, predicted), Series::line("perfect fit", 3, vec![(a, a), (b, b)])];
        line_chart(&dir.join("fit"), &format!("Fitted {} law against the data", fit.law), "observed loss", "predicted loss", &series)?;
    }

    let mut grid = vec![vec![None; widths.len()]; depths.len()];
    for rs in by_run.values() {
        let last = rs[rs.len() - 1];
        let cell = &mut grid[index_of(&depths, last.depth)][index_of(&widths, last.width)];
        *cell = Some(cell.map_or(last.loss, |c: f64| c.min(last.loss)));
    }
    let labels = |v: &[f64]| v.iter().map(|x| format!("{x}")).collect::<Vec<_>>();
    heatmap(&dir.join("width_depth"), "Final loss by width and depth (best over runs)", &labels(&widths), &labels(&depths), &grid)?;

    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = by_run.keys().map(|n| ffn_of(n)).filter(|k| !k.is_empty()).collect();
        k.sort();
        k.dedup();
        k
    };
    if kinds.len() > 1 {
        let series: Vec<Series> = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let mut pts: Vec<(f64, f64)> =
                    by_run.iter().filter(|(n, _)| ffn_of(n) == *kind).map(|(_, rs)| (rs[0].params.log10(), rs[rs.len() - 1].loss)).collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series::dots(*kind, i, pts)
            })
            .collect();
        line_chart(&dir.join("ffn_kinds"), "Final loss by feed-forward kind", "log10 active parameters", "eval loss", &series)?;
    }
    Ok(())
}
