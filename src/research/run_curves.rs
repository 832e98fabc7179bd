//! `moegrad plot`'s training curves: for one or several runs, four panels against tokens
//! seen on a real logarithmic axis: train and eval loss, learning rate, gradient norm (on a
//! logarithmic axis too) and tokens/s. Each run has its colour; train lines are solid,
//! eval lines dashed with a marker at each evaluation, so the curves stay apart in grey.
//! The y-limits leave out the first tenth of each curve and the top 2% of its values, so
//! the first steps' loss and a single spike do not flatten the rest.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::research::plot::{register_font, COLORS};

/// One run's logged values: `(tokens, value)` pairs by quantity.
struct Curves {
    name: String,
    train_loss: Vec<(f64, f64)>,
    eval_loss: Vec<(f64, f64)>,
    lr: Vec<(f64, f64)>,
    grad_norm: Vec<(f64, f64)>,
    tokens_per_s: Vec<(f64, f64)>,
}

fn read_curves(run: &Path) -> Result<Curves> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {} (is {} a run folder?)", path.display(), run.display()))?;
    let name = run.file_name().map_or_else(|| run.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut c = Curves { name, train_loss: vec![], eval_loss: vec![], lr: vec![], grad_norm: vec![], tokens_per_s: vec![] };
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| anyhow!("{} line {}: {e}", path.display(), i + 1))?;
        // A logarithmic axis has no place for the 0 tokens of the untrained evaluation.
        let Some(tokens) = v["tokens"].as_f64().filter(|&t| t > 0.0) else { continue };
        for (key, into) in [
            ("train_loss", &mut c.train_loss),
            ("eval_loss", &mut c.eval_loss),
            ("lr", &mut c.lr),
            ("grad_norm", &mut c.grad_norm),
            ("tokens_per_s", &mut c.tokens_per_s),
        ] {
            if let Some(x) = v[key].as_f64().filter(|x| x.is_finite()) {
                into.push((tokens, x));
            }
        }
    }
    if c.train_loss.is_empty() && c.eval_loss.is_empty() {
        bail!("{} has no logged steps yet", path.display());
    }
    Ok(c)
}

/// The y-range that shows the bulk of `curves`: each curve without its first tenth, the
/// values up to their 98th percentile, padded by 5% (`log`: of the decades).
pub fn robust_range(curves: &[&[(f64, f64)]], log: bool) -> (f64, f64) {
    let mut values: Vec<f64> = curves.iter().flat_map(|c| c[c.len() / 10..].iter().map(|p| p.1)).filter(|v| !log || *v > 0.0).collect();
    if values.is_empty() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    values.sort_by(f64::total_cmp);
    let lo = values[0];
    let hi = values[((values.len() - 1) as f64 * 0.98).round() as usize];
    if log {
        let (a, b) = (lo.log10(), hi.log10().max(lo.log10() + 1e-3));
        let pad = (b - a) * 0.05;
        (10f64.powf(a - pad), 10f64.powf(b + pad))
    } else {
        let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-12);
        (lo - pad, hi + pad)
    }
}

/// `v` in a few characters: 20k, 1.5M, 3e-4, 2.4.
pub fn short(v: f64) -> String {
    let a = v.abs();
    let trim = |x: f64, unit: &str| format!("{}{unit}", format!("{x:.2}").trim_end_matches('0').trim_end_matches('.'));
    match a {
        _ if a == 0.0 => "0".into(),
        _ if a >= 1e9 => trim(v / 1e9, "G"),
        _ if a >= 1e6 => trim(v / 1e6, "M"),
        _ if a >= 1e4 => trim(v / 1e3, "k"),
        _ if a >= 0.01 => trim(v, ""),
        _ => format!("{v:.1e}").replace(".0e", "e"),
    }
}

/// A logarithmic axis's label: only at 1, 2 and 5 times a power of ten, so labels never
/// crowd.
pub fn log_tick(v: f64) -> String {
    if v <= 0.0 {
        return String::new();
    }
    let mantissa = v / 10f64.powf(v.log10().floor());
    match [1.0, 2.0, 5.0, 10.0].iter().any(|m| (mantissa - m).abs() < 1e-6 * m) {
        true => short(v),
        false => String::new(),
    }
}

/// A curve's (tokens, value) points.
type Points<'a> = &'a [(f64, f64)];

struct Panel<'a> {
    title: &'a str,
    y_label: &'a str,
    log_y: bool,
    /// Per run: (solid, dashed with markers).
    lines: Vec<(Points<'a>, Points<'a>)>,
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel, names: &[String], x: (f64, f64)) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot {}: {e:?}", panel.title);
    let curves: Vec<&[(f64, f64)]> = panel.lines.iter().flat_map(|(a, b)| [*a, *b]).filter(|c| !c.is_empty()).collect();
    let (y0, y1) = robust_range(&curves, panel.log_y);
    let mut builder = ChartBuilder::on(area);
    builder.caption(panel.title, ("sans-serif", 18)).margin(10).x_label_area_size(36).y_label_area_size(64);
    let x_range = (x.0..x.1).log_scale();
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("tokens seen")
                .y_desc(panel.y_label)
                .x_labels(30)
                .x_label_formatter(&|v| log_tick(*v))
                .y_label_formatter(&|v| if panel.log_y { log_tick(*v) } else { short(*v) })
                .light_line_style(WHITE.mix(0.0))
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(err)?;
            for (i, (solid, dashed)) in panel.lines.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let inside = |p: &&(f64, f64)| p.1 >= y0 && p.1 <= y1;
                let drawn = chart.draw_series(LineSeries::new(solid.iter().filter(inside).copied(), color.stroke_width(2))).map_err(err)?;
                if !solid.is_empty() {
                    drawn.label(format!("{} (train)", names[i])).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                }
                if !dashed.is_empty() {
                    chart.draw_series(DashedLineSeries::new(dashed.iter().filter(inside).copied(), 6, 4, color.stroke_width(2))).map_err(err)?;
                    chart
                        .draw_series(dashed.iter().filter(inside).map(|&p| TriangleMarker::new(p, 5, color.filled())))
                        .map_err(err)?
                        .label(format!("{} (eval)", names[i]))
                        .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 5, color.filled()));
                }
            }
            if panel.lines.iter().any(|(a, b)| !a.is_empty() || !b.is_empty()) {
                chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).label_font(("sans-serif", 12)).draw().map_err(err)?;
            }
        }};
    }
    if panel.log_y {
        finish!(builder.build_cartesian_2d(x_range, (y0..y1).log_scale()).map_err(err)?);
    } else {
        finish!(builder.build_cartesian_2d(x_range, y0..y1).map_err(err)?);
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, runs: &[Curves]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e:?}"))?;
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    let all = runs.iter().flat_map(|r| r.train_loss.iter().chain(&r.eval_loss).chain(&r.lr));
    let (x0, x1) = all.fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let x = (x0 * 0.9, (x1 * 1.1).max(x0 * 1.2));
    let none: &[(f64, f64)] = &[];
    let panels = [
        Panel {
            title: "Loss",
            y_label: "loss (nats/token)",
            log_y: false,
            lines: runs.iter().map(|r| (r.train_loss.as_slice(), r.eval_loss.as_slice())).collect(),
        },
        Panel { title: "Learning rate", y_label: "learning rate", log_y: false, lines: runs.iter().map(|r| (r.lr.as_slice(), none)).collect() },
        Panel {
            title: "Gradient norm (before clipping)",
            y_label: "L2 norm",
            log_y: true,
            lines: runs.iter().map(|r| (r.grad_norm.as_slice(), none)).collect(),
        },
        Panel { title: "Throughput", y_label: "tokens/s", log_y: false, lines: runs.iter().map(|r| (r.tokens_per_s.as_slice(), none)).collect() },
    ];
    for (area, panel) in root.split_evenly((2, 2)).iter().zip(&panels) {
        draw_panel(area, panel, &names, x)?;
    }
    root.present().map_err(|e| anyhow!("plot: {e:?}"))?;
    Ok(())
}

/// Draws the training curves of `runs` (run folders) to `<stem>.png` and `<stem>.svg`.
pub fn run_curves(runs: &[PathBuf], stem: &Path) -> Result<()> {
    let curves = runs.iter().map(|r| read_curves(r)).collect::<Result<Vec<_>>>()?;
    register_font();
    let size = (1200, 800);
    draw(BitMapBackend::new(&stem.with_extension("png"), size).into_drawing_area(), &curves)?;
    draw(SVGBackend::new(&stem.with_extension("svg"), size).into_drawing_area(), &curves)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_limits_ignore_the_first_steps_and_a_spike() {
        let mut curve: Vec<(f64, f64)> = (1..=100).map(|i| (i as f64, 3.0 - i as f64 * 0.01)).collect();
        curve[0].1 = 11.0; // the untrained loss
        curve[60].1 = 50.0; // one spike
        let (lo, hi) = robust_range(&[&curve], false);
        assert!(lo < 2.0 && lo > 1.9 && hi < 2.95 && hi > 2.8, "({lo}, {hi})");
        let (lo, hi) = robust_range(&[&curve], true);
        assert!(lo > 1.8 && hi < 3.2, "({lo}, {hi})");
    }

    #[test]
    fn ticks_are_short_and_log_ticks_sparse() {
        assert_eq!(
            (short(20_000.0), short(1.5e6), short(3e-4), short(2.4), short(0.0015)),
            ("20k".into(), "1.5M".into(), "3e-4".into(), "2.4".into(), "1.5e-3".into())
        );
        assert_eq!((log_tick(50_000.0), log_tick(30_000.0), log_tick(1e5)), ("50k".into(), String::new(), "100k".into()));
    }
}
