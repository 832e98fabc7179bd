//! Line charts written as PNG and SVG side by side (compare curves; sweeps reuse it). The
//! PNG text uses the DejaVu Sans font embedded in the binary, so no system fonts are needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One line (or scatter): its legend label, colour index, stroke width and points.
pub struct Series {
    pub label: String,
    pub color: usize,
    pub points: Vec<(f64, f64)>,
    /// Line width in pixels; 0 draws the points as dots instead of a line.
    pub stroke: u32,
}

impl Series {
    pub fn line(label: impl Into<String>, color: usize, points: Vec<(f64, f64)>) -> Self {
        Series { label: label.into(), color, points, stroke: 2 }
    }

    pub fn dots(label: impl Into<String>, color: usize, points: Vec<(f64, f64)>) -> Self {
        Series { label: label.into(), color, points, stroke: 0 }
    }
}

pub(crate) const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_err() {
            panic!("the embedded DejaVu Sans font failed to load");
        }
    });
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot {title}: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
        .map_err(err)?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style(("sans-serif", 14)).draw().map_err(err)?;
    for s in series {
        let color = COLORS[s.color % COLORS.len()];
        let stroke = s.stroke.max(1);
        let drawn = if s.stroke == 0 {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(err)?
        } else {
            chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(stroke))).map_err(err)?
        };
        if !s.label.is_empty() {
            drawn.label(s.label.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(stroke)));
        }
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).label_font(("sans-serif", 14)).draw().map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Writes `<stem>.png` and `<stem>.svg`.
pub fn line_chart(stem: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    register_font();
    let png = stem.with_extension("png");
    draw(BitMapBackend::new(&png, (900, 560)).into_drawing_area(), title, x_label, y_label, series)?;
    let svg = stem.with_extension("svg");
    draw(SVGBackend::new(&svg, (900, 560)).into_drawing_area(), title, x_label, y_label, series)?;
    Ok(())
}

fn draw_heatmap<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_labels: &[String],
    y_labels: &[String],
    values: &[Vec<Option<f64>>],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot {title}: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let known: Vec<f64> = values.iter().flatten().flatten().copied().collect();
    let (lo, hi) = known.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (nx, ny) = (x_labels.len(), y_labels.len());
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..nx as f64, 0.0..ny as f64)
        .map_err(err)?;
    // Each cell is labelled with its own width and depth, so the axes carry no ticks.
    chart.configure_mesh().disable_mesh().x_labels(0).y_labels(0).x_desc("width").y_desc("depth").draw().map_err(err)?;
    for (yi, row) in values.iter().enumerate() {
        for (xi, v) in row.iter().enumerate() {
            let Some(v) = v else { continue };
            // Lower loss is darker.
            let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            let shade = RGBColor((30.0 + 200.0 * t) as u8, (60.0 + 170.0 * t) as u8, 160);
            let (x, y) = (xi as f64, yi as f64);
            chart.draw_series([Rectangle::new([(x, y), (x + 1.0, y + 1.0)], shade.filled())]).map_err(err)?;
            let label = format!("{} x {}: {v:.3}", x_labels[xi], y_labels[yi]);
            chart.draw_series([Text::new(label, (x + 0.15, y + 0.55), ("sans-serif", 16).into_font().color(&BLACK))]).map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// A grid of values (`values[y][x]`, None for missing cells) as `<stem>.png` and `.svg`.
pub fn heatmap(stem: &Path, title: &str, x_labels: &[String], y_labels: &[String], values: &[Vec<Option<f64>>]) -> Result<()> {
    register_font();
    let png = stem.with_extension("png");
    draw_heatmap(BitMapBackend::new(&png, (700, 520)).into_drawing_area(), title, x_labels, y_labels, values)?;
    let svg = stem.with_extension("svg");
    draw_heatmap(SVGBackend::new(&svg, (700, 520)).into_drawing_area(), title, x_labels, y_labels, values)?;
    Ok(())
}
