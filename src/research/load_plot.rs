//! The expert load over training as heatmaps, one panel per MoE layer of each run (`moegrad
//! plot`, and `compare` for each variant): time along x, experts along y, and each cell's
//! colour the expert's share of the routed slots over a balanced share (1 = even; the
//! colour bar caps it at 3), from the loads a run logs.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::research::plot::{colour_bar, register_font, viridis};

/// One panel: a run's layer, its logged steps and each step's loads.
struct Panel {
    title: String,
    steps: Vec<f64>,
    loads: Vec<Vec<f64>>,
}

/// Highest ratio to a balanced load the colours tell apart.
const CAP: f64 = 3.0;

/// The panels of a run's metrics.jsonl: one per MoE layer.
fn panels(run: &Path) -> Result<Vec<Panel>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).with_context(|| format!("no metrics in {}", run.display()))?;
    let name = run.file_name().map_or_else(|| run.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut panels: Vec<Panel> = Vec::new();
    for line in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        let (Some(step), Some(layers)) = (line["step"].as_f64(), line["moe"].as_array()) else { continue };
        for (i, layer) in layers.iter().enumerate() {
            let load: Vec<f64> = layer["load"].as_array().map(|l| l.iter().filter_map(|v| v.as_f64()).collect()).unwrap_or_default();
            if panels.len() <= i {
                panels.push(Panel { title: format!("{name}, MoE layer {i}"), steps: Vec::new(), loads: Vec::new() });
            }
            panels[i].steps.push(step);
            panels[i].loads.push(load);
        }
    }
    if panels.is_empty() {
        bail!("{} logged no expert loads (a dense model, or no step logged yet)", run.display());
    }
    Ok(panels)
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot {}: {e:?}", panel.title);
    let experts = panel.loads.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (width, _) = area.dim_in_pixel();
    let (main, bar) = area.split_horizontally(width.saturating_sub(110));
    let last = panel.steps.last().copied().unwrap_or(1.0);
    let mut chart = ChartBuilder::on(&main)
        .caption(format!("{}: expert load / balanced load", panel.title), ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..last, 0.0..experts as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("training step")
        .y_desc("expert")
        .y_labels(2 * experts + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| expert_label(*y, experts))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let mut before = 0.0;
    for (step, loads) in panel.steps.iter().zip(&panel.loads) {
        let balanced = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
        let cells = loads.iter().enumerate().map(|(e, &l)| {
            let ratio = if balanced > 0.0 { l / balanced } else { 0.0 };
            Rectangle::new([(before, e as f64), (*step, e as f64 + 1.0)], viridis(ratio / CAP).filled())
        });
        chart.draw_series(cells).map_err(err)?;
        before = *step;
    }
    colour_bar(&bar, (0.0, CAP), "load / balanced load", &|v| format!("{v:.1}x"))
}

/// The label at `y` on the expert axis: an expert's number at its row's centre, every
/// k-th one where more than 16 would crowd.
fn expert_label(y: f64, experts: usize) -> String {
    let row = y - 0.5;
    let every = experts.div_ceil(16);
    match row.fract().abs() < 1e-6 && row >= 0.0 && (row as usize) < experts && (row as usize).is_multiple_of(every) {
        true => format!("{}", row as usize),
        false => String::new(),
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, panels: &[Panel]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("plot expert load: {e:?}"))?;
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(|e| anyhow!("plot expert load: {e:?}"))?;
    Ok(())
}

/// Writes `<stem>.png` and `<stem>.svg`: a panel per MoE layer of each run in `runs`.
pub fn load_heatmap(runs: &[PathBuf], stem: &Path) -> Result<()> {
    let mut all = Vec::new();
    for run in runs {
        all.extend(panels(run)?);
    }
    register_font();
    let size = (900, 60 + 240 * all.len() as u32);
    draw(BitMapBackend::new(&stem.with_extension("png"), size).into_drawing_area(), &all)?;
    draw(SVGBackend::new(&stem.with_extension("svg"), size).into_drawing_area(), &all)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::expert_label;

    #[test]
    fn experts_are_labelled_at_their_rows_centres() {
        let labels = |experts: usize| (0..=2 * experts).map(|i| expert_label(i as f64 / 2.0, experts)).filter(|l| !l.is_empty()).collect::<Vec<_>>();
        assert_eq!(labels(4), ["0", "1", "2", "3"]);
        assert_eq!(labels(64).len(), 16);
        assert_eq!(labels(64)[1], "4");
    }
}
