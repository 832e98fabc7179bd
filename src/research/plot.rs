//! Figures written as PNG and SVG side by side, drawn as a paper needs them: real
//! logarithmic axes with ticks at 1, 2 and 5 times powers of ten (fewer when they would
//! crowd), y-limits that the first steps and a single spike do not set, series told apart
//! by dash and marker as well as colour (so they stay apart in grey), shaded bands for a
//! spread, notes such as R² in a corner, and heatmaps with a colour bar. Every figure is a
//! list of [`Chart`]s laid out in a grid; `moegrad plot`, `compare`, `sweep` and `fit` all
//! draw through here. The PNG text uses the DejaVu Sans font embedded in the binary, so no
//! system fonts are needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::CoordTranslate;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub(crate) const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(90, 90, 90),
];

/// The colour index of the grey kept for reference lines and legend keys.
pub const GREY: usize = 7;

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_err() {
            panic!("the embedded DejaVu Sans font failed to load");
        }
    });
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Linear,
    Log,
}

/// An axis: its description, with the unit (`eval loss (nats/token)`), and its scale.
pub struct Axis {
    pub label: String,
    pub scale: Scale,
}

impl Axis {
    pub fn linear(label: impl Into<String>) -> Axis {
        Axis { label: label.into(), scale: Scale::Linear }
    }

    pub fn log(label: impl Into<String>) -> Axis {
        Axis { label: label.into(), scale: Scale::Log }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dash {
    Solid,
    Dashed,
    Dotted,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
    Cross,
    /// Larger, outlined in black: a minimum or an optimum.
    Star,
}

const DASHES: [Dash; 3] = [Dash::Solid, Dash::Dashed, Dash::Dotted];
const MARKERS: [Marker; 5] = [Marker::Circle, Marker::Triangle, Marker::Square, Marker::Diamond, Marker::Cross];

/// How a series is drawn: a colour (an index into the palette), a line (or none) and a
/// marker at each point (or none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Style {
    pub color: usize,
    pub line: Option<Dash>,
    pub marker: Option<Marker>,
    /// Line width in pixels.
    pub width: u32,
}

impl Style {
    /// A solid line without markers.
    pub fn line(color: usize) -> Style {
        Style { color, line: Some(Dash::Solid), marker: None, width: 2 }
    }

    /// Markers without a line.
    pub fn dots(color: usize, marker: Marker) -> Style {
        Style { color, line: None, marker: Some(marker), width: 2 }
    }

    /// The `k`-th of several series: colour, dash and marker all change with `k`.
    pub fn nth(k: usize) -> Style {
        Style { color: k, line: Some(DASHES[k % DASHES.len()]), marker: Some(MARKERS[k % MARKERS.len()]), width: 2 }
    }

    /// A feed-forward kind's dash and marker, the same in every figure (dense solid with
    /// circles, TopK dashed with triangles, Default MoE dotted with squares, DenseMixer
    /// solid with diamonds); an unknown kind gets crosses.
    pub fn ffn(kind: &str, color: usize) -> Style {
        let (line, marker) = match kind {
            "dense" => (Dash::Solid, Marker::Circle),
            "topk" => (Dash::Dashed, Marker::Triangle),
            "default" => (Dash::Dotted, Marker::Square),
            "densemixer" => (Dash::Solid, Marker::Diamond),
            _ => (Dash::Dashed, Marker::Cross),
        };
        Style { color, line: Some(line), marker: Some(marker), width: 2 }
    }

    pub fn dash(self, line: Option<Dash>) -> Style {
        Style { line, ..self }
    }

    pub fn marker(self, marker: Option<Marker>) -> Style {
        Style { marker, ..self }
    }
}

/// One line or scatter. A series without points draws only its legend entry (a key such
/// as "dashed: depth 4").
pub struct Series {
    /// The legend entry; empty for none.
    pub label: String,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
    /// A shaded band behind the line: (x, low, high), in x order.
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    pub fn new(label: impl Into<String>, style: Style, points: Vec<(f64, f64)>) -> Series {
        Series { label: label.into(), style, points, band: Vec::new() }
    }

    pub fn with_band(self, band: Vec<(f64, f64, f64)>) -> Series {
        Series { band, ..self }
    }
}

/// How a chart's y-range is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limits {
    /// Every point and band.
    Data,
    /// The bulk of each series ([`robust_range`]).
    Robust,
}

/// One panel of a figure.
pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub limits: Limits,
    pub series: Vec<Series>,
    /// Lines of text in the upper left corner (a fit's R², say).
    pub notes: Vec<String>,
}

impl Chart {
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Chart {
        Chart { title: title.into(), x, y, limits: Limits::Data, series: Vec::new(), notes: Vec::new() }
    }

    pub fn limits(self, limits: Limits) -> Chart {
        Chart { limits, ..self }
    }

    pub fn note(mut self, note: impl Into<String>) -> Chart {
        self.notes.push(note.into());
        self
    }

    pub fn series(mut self, series: Series) -> Chart {
        self.series.push(series);
        self
    }
}

/// The y-range that shows the bulk of `curves`: each curve without its first tenth, the
/// values up to their 98th percentile, padded by 5% (`log`: of the decades).
pub fn robust_range(curves: &[&[(f64, f64)]], log: bool) -> (f64, f64) {
    let mut values: Vec<f64> = curves.iter().flat_map(|c| c[c.len() / 10..].iter().map(|p| p.1)).filter(|v| v.is_finite() && (!log || *v > 0.0)).collect();
    if values.is_empty() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    values.sort_by(f64::total_cmp);
    let hi = values[((values.len() - 1) as f64 * 0.98).round() as usize];
    padded(values[0], hi, log)
}

/// `lo..hi` widened by 5% on each side (`log`: of the decades), never empty.
fn padded(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if log {
        let (a, b) = (lo.log10(), hi.log10().max(lo.log10() + 1e-3));
        let pad = ((b - a) * 0.05).max(0.02);
        (10f64.powf(a - pad), 10f64.powf(b + pad))
    } else {
        let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-12);
        (lo - pad, hi + pad)
    }
}

/// The range of the values `of` each series' points and band gives (positive ones only
/// on a logarithmic axis), padded.
fn data_range(chart: &Chart, scale: Scale, of: impl Fn(&Series) -> Vec<f64>) -> (f64, f64) {
    let log = scale == Scale::Log;
    let values: Vec<f64> = chart.series.iter().flat_map(of).filter(|v| v.is_finite() && (!log || *v > 0.0)).collect();
    match values.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v))) {
        (lo, hi) if lo <= hi => padded(lo, hi, log),
        _ if log => (0.1, 10.0),
        _ => (0.0, 1.0),
    }
}

/// `v` in a few characters: 20k, 1.5M, 2B, 3e18, 7.09k, 640, 3e-4, 2.4.
pub fn short(v: f64) -> String {
    let a = v.abs();
    let trim = |x: f64, unit: &str| format!("{}{unit}", format!("{x:.2}").trim_end_matches('0').trim_end_matches('.'));
    match a {
        _ if a == 0.0 => "0".into(),
        _ if a >= 1e12 => format!("{v:.1e}").replace(".0e", "e"),
        _ if a >= 1e9 => trim(v / 1e9, "B"),
        _ if a >= 1e6 => trim(v / 1e6, "M"),
        _ if a >= 1e3 => trim(v / 1e3, "k"),
        _ if a >= 100.0 => format!("{v:.0}"),
        _ if a >= 0.01 => trim(v, ""),
        _ => format!("{v:.1e}").replace(".0e", "e"),
    }
}

/// Tick positions for `lo..hi`. Linear: 4 to 8 steps of 1, 2 or 5 times a power of ten.
/// Logarithmic: linear ticks over less than half a decade; 1, 2 and 5 times each power of ten over up to 2.5 decades, the powers of
/// ten alone up to 8, every k-th power beyond; 1 to 9 times each power where that leaves
/// too few ticks to read a position off, and linear ticks where even those are too few.
pub fn ticks(lo: f64, hi: f64, scale: Scale) -> Vec<f64> {
    if !(lo < hi) {
        return vec![lo];
    }
    if scale == Scale::Linear {
        let raw = (hi - lo) / 8.0;
        let power = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|s| *s >= raw).unwrap_or(10.0 * power);
        // A step below 1 is 1 / an integer: dividing by it keeps 3.1 from being
        // 3.1000000000000005.
        let per_unit = (1.0 / step).round();
        let at = |k: i64| if step < 1.0 { k as f64 / per_unit } else { k as f64 * step };
        let (first, last) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
        return (first..=last).map(at).collect();
    }
    let decades = (hi / lo).log10();
    let with = |mantissas: &[f64], every: i32| -> Vec<f64> {
        let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (a..=b)
            .filter(|e| e.rem_euclid(every) == 0)
            .flat_map(|e| mantissas.iter().map(move |m| if e < 0 { m / 10f64.powi(-e) } else { m * 10f64.powi(e) }))
            .filter(|&v| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9))
            .collect()
    };
    if decades < 0.5 {
        return ticks(lo, hi, Scale::Linear);
    }
    let chosen = match decades {
        d if d <= 2.5 => with(&[1.0, 2.0, 5.0], 1),
        d if d <= 8.0 => with(&[1.0], 1),
        d => with(&[1.0], (d / 8.0).ceil() as i32),
    };
    // Within about a decade, two labels are too few to read a position off.
    if chosen.len() >= 3 || (chosen.len() == 2 && decades > 1.5) {
        return chosen;
    }
    let finer = with(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 1);
    if finer.len() >= 2 {
        return finer;
    }
    ticks(lo, hi, Scale::Linear)
}

/// A tick's label: `short` on a logarithmic axis; on a linear one, as many decimals as the
/// step between ticks needs.
fn tick_label(v: f64, step: f64, scale: Scale) -> String {
    if scale == Scale::Log || v.abs() >= 1e4 || step <= 0.0 {
        return short(v);
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// The parts of a polyline inside the box `x` by `y`, clipped at its edges. On a
/// logarithmic axis the clipping happens in log space (where the drawn segment is straight)
/// and a point at or below zero breaks the line.
pub fn clip_polyline(points: &[(f64, f64)], x: (f64, f64), y: (f64, f64), scales: (Scale, Scale)) -> Vec<Vec<(f64, f64)>> {
    let to = |v: f64, s: Scale| {
        if s == Scale::Log {
            if v > 0.0 {
                v.log10()
            } else {
                f64::NAN
            }
        } else {
            v
        }
    };
    let from = |v: f64, s: Scale| if s == Scale::Log { 10f64.powf(v) } else { v };
    let (bx, by) = ((to(x.0, scales.0), to(x.1, scales.0)), (to(y.0, scales.1), to(y.1, scales.1)));
    let mut pieces: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let mut flush = |current: &mut Vec<(f64, f64)>| {
        if current.len() >= 2 {
            pieces.push(current.iter().map(|&(a, b)| (from(a, scales.0), from(b, scales.1))).collect());
        }
        current.clear();
    };
    for w in points.windows(2) {
        let (a, b) = ((to(w[0].0, scales.0), to(w[0].1, scales.1)), (to(w[1].0, scales.0), to(w[1].1, scales.1)));
        if ![a.0, a.1, b.0, b.1].iter().all(|v| v.is_finite()) {
            flush(&mut current);
            continue;
        }
        match clip_segment(a, b, bx, by) {
            Some((p, q, start_clipped, end_clipped)) => {
                if start_clipped || current.is_empty() {
                    flush(&mut current);
                    current.push(p);
                }
                current.push(q);
                if end_clipped {
                    flush(&mut current);
                }
            }
            None => flush(&mut current),
        }
    }
    flush(&mut current);
    pieces
}

/// Liang-Barsky: the part of `a`-`b` inside the box, and whether each end was cut.
type Clipped = ((f64, f64), (f64, f64), bool, bool);
fn clip_segment(a: (f64, f64), b: (f64, f64), x: (f64, f64), y: (f64, f64)) -> Option<Clipped> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.0 - x.0), (dx, x.1 - a.0), (-dy, a.1 - y.0), (dy, y.1 - a.1)] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else if p < 0.0 {
            t0 = t0.max(q / p);
        } else {
            t1 = t1.min(q / p);
        }
        if t0 > t1 {
            return None;
        }
    }
    Some(((a.0 + t0 * dx, a.1 + t0 * dy), (a.0 + t1 * dx, a.1 + t1 * dy), t0 > 0.0, t1 < 1.0))
}

/// Draws marker `m` at `at`, in the area's own coordinates (data or pixels).
fn put_marker<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    m: Marker,
    at: CT::From,
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    CT::From: Clone,
{
    let (fill, here) = (color.filled(), EmptyElement::at(at));
    match m {
        Marker::Circle => area.draw(&(here + Circle::new((0, 0), 4, fill))),
        Marker::Triangle => area.draw(&(here + TriangleMarker::new((0, 0), 5, fill))),
        Marker::Square => area.draw(&(here + Rectangle::new([(-4, -4), (4, 4)], fill))),
        Marker::Diamond => area.draw(&(here + Polygon::new(vec![(0, -5), (5, 0), (0, 5), (-5, 0)], fill))),
        Marker::Cross => area.draw(&(here + Cross::new((0, 0), 4, color.stroke_width(2)))),
        Marker::Star => {
            let star: Vec<(i32, i32)> = (0..10)
                .map(|i| {
                    let (r, angle) = (if i % 2 == 0 { 9.0 } else { 4.0 }, std::f64::consts::PI * (i as f64 / 5.0 - 0.5));
                    ((r * angle.cos()).round() as i32, (r * angle.sin()).round() as i32)
                })
                .collect();
            let outline = [star.clone(), vec![star[0]]].concat();
            area.draw(&(here + Polygon::new(star, fill) + PathElement::new(outline, BLACK.stroke_width(1))))
        }
    }
}

/// The top left corner of a legend box of `size` in a plotting area of `area` pixels: of
/// the four corners and the top middle (in that order of preference), the place whose box
/// covers the fewest `occupied` pixels.
fn legend_origin((w, h): (i32, i32), area: (u32, u32), occupied: &[(i32, i32)]) -> (i32, i32) {
    let (width, height) = (area.0 as i32, area.1 as i32);
    let (left, middle, right, top, bottom) = (10, (width - w) / 2, width - w - 10, 10, height - h - 10);
    let covered = |&(x, y): &(i32, i32)| occupied.iter().filter(|p| p.0 >= x && p.0 <= x + w && p.1 >= y && p.1 <= y + h).count();
    [(right, top), (left, top), (right, bottom), (left, bottom), (middle, top)].into_iter().min_by_key(covered).unwrap_or((left, top))
}

/// The legend of `entries` in a box of the plotting area (pixels) clear of the drawn
/// points `occupied`: each entry's key (its band's shade, its line in its dash, its
/// marker) and label.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[&Series],
    occupied: &[(i32, i32)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let font = TextStyle::from(("sans-serif", 13).into_font());
    let text_width = entries.iter().map(|s| area.estimate_text_size(&s.label, &font).map_or(0, |(w, _)| w)).max().unwrap_or(0) as i32;
    let (line, key, pad) = (18, 24, 6);
    let (w, h) = (pad + key + 8 + text_width + pad, pad * 2 + line * entries.len() as i32);
    let (x0, y0) = legend_origin((w, h), area.dim_in_pixel(), occupied);
    area.draw(&Rectangle::new([(x0, y0), (x0 + w, y0 + h)], WHITE.mix(0.85).filled()))?;
    area.draw(&Rectangle::new([(x0, y0), (x0 + w, y0 + h)], BLACK.stroke_width(1)))?;
    for (i, s) in entries.iter().enumerate() {
        let (x, y) = (x0 + pad, y0 + pad + line * i as i32 + line / 2);
        let color = COLORS[s.style.color % COLORS.len()];
        if s.band.len() >= 2 {
            area.draw(&Rectangle::new([(x, y - 6), (x + key, y + 6)], color.mix(0.2).filled()))?;
        }
        let stroke = color.stroke_width(s.style.width);
        match s.style.line {
            Some(Dash::Solid) => area.draw(&PathElement::new(vec![(x, y), (x + key, y)], stroke))?,
            Some(Dash::Dashed) => area.draw(&DashedPathElement::new(vec![(x, y), (x + key, y)], 6, 4, stroke))?,
            Some(Dash::Dotted) => area.draw(&DashedPathElement::new(vec![(x, y), (x + key, y)], 2, 3, stroke))?,
            None => {}
        }
        if let Some(m) = s.style.marker {
            put_marker(area, m, (x + key / 2, y), color)?;
        }
        area.draw(&Text::new(s.label.clone(), (x + key + 8, y), font.pos(Pos::new(HPos::Left, VPos::Center))))?;
    }
    Ok(())
}

/// Draws `chart` on an area whose coordinates are built (linear or logarithmic).
fn fill<DB, X, Y>(mut ctx: ChartContext<'_, DB, Cartesian2d<X, Y>>, chart: &Chart, xr: (f64, f64), yr: (f64, f64)) -> Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot {}: {e:?}", chart.title);
    let font = ("sans-serif", 13).into_font();
    ctx.configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|_| String::new())
        .set_all_tick_mark_size(0)
        .x_desc(chart.x.label.as_str())
        .y_desc(chart.y.label.as_str())
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    // The grid, tick marks and labels at positions of our own choosing (plotters' own
    // logarithmic ticks leave a span inside one decade bare).
    let grid = RGBColor(225, 225, 225).stroke_width(1);
    let (xt, yt) = (ticks(xr.0, xr.1, chart.x.scale), ticks(yr.0, yr.1, chart.y.scale));
    let step = |t: &[f64]| if t.len() >= 2 { t[1] - t[0] } else { 0.0 };
    let (xs, ys) = (step(&xt), step(&yt));
    for &t in &xt {
        let label = tick_label(t, xs, chart.x.scale);
        let text = Text::new(label, (0, 7), TextStyle::from(font.clone()).pos(Pos::new(HPos::Center, VPos::Top)));
        ctx.draw_series([PathElement::new(vec![(t, yr.0), (t, yr.1)], grid)]).map_err(err)?;
        ctx.draw_series([EmptyElement::at((t, yr.0)) + PathElement::new(vec![(0, 0), (0, 5)], BLACK) + text]).map_err(err)?;
    }
    for &t in &yt {
        let label = tick_label(t, ys, chart.y.scale);
        let text = Text::new(label, (-8, 0), TextStyle::from(font.clone()).pos(Pos::new(HPos::Right, VPos::Center)));
        ctx.draw_series([PathElement::new(vec![(xr.0, t), (xr.1, t)], grid)]).map_err(err)?;
        ctx.draw_series([EmptyElement::at((xr.0, t)) + PathElement::new(vec![(0, 0), (-5, 0)], BLACK) + text]).map_err(err)?;
    }
    let clamp_y = |v: f64| v.clamp(yr.0, yr.1);
    let inside = |p: &&(f64, f64)| p.0 >= xr.0 && p.0 <= xr.1 && p.1 >= yr.0 && p.1 <= yr.1;
    for s in chart.series.iter().filter(|s| s.band.len() >= 2) {
        let color = COLORS[s.style.color % COLORS.len()];
        let upper = s.band.iter().map(|&(x, _, hi)| (x, clamp_y(hi)));
        let lower = s.band.iter().rev().map(|&(x, lo, _)| (x, clamp_y(lo)));
        ctx.draw_series([Polygon::new(upper.chain(lower).collect::<Vec<_>>(), color.mix(0.2).filled())]).map_err(err)?;
    }
    for s in &chart.series {
        let color = COLORS[s.style.color % COLORS.len()];
        let stroke = color.stroke_width(s.style.width);
        for piece in s.style.line.map_or_else(Vec::new, |_| clip_polyline(&s.points, xr, yr, (chart.x.scale, chart.y.scale))) {
            match s.style.line {
                Some(Dash::Dashed) => ctx.draw_series(DashedLineSeries::new(piece, 7, 4, stroke)),
                Some(Dash::Dotted) => ctx.draw_series(DashedLineSeries::new(piece, 2, 3, stroke)),
                _ => ctx.draw_series(LineSeries::new(piece, stroke)),
            }
            .map_err(err)?;
        }
        if let Some(m) = s.style.marker {
            for &p in s.points.iter().filter(inside) {
                put_marker(ctx.plotting_area(), m, p, color).map_err(err)?;
            }
        }
    }
    let pixels = ctx.plotting_area().strip_coord_spec();
    // Where the points and lines lie, in the plotting area's pixels, for the legend to avoid.
    let base = pixels.get_base_pixel();
    let to_pixels = |p: &(f64, f64)| {
        let (x, y) = ctx.backend_coord(p);
        (x - base.0, y - base.1)
    };
    let mut occupied: Vec<(i32, i32)> = Vec::new();
    for s in &chart.series {
        occupied.extend(s.points.iter().filter(inside).map(to_pixels));
        // Lines cover the pixels between their points too: a sample every 8 pixels.
        for piece in s.style.line.map_or_else(Vec::new, |_| clip_polyline(&s.points, xr, yr, (chart.x.scale, chart.y.scale))) {
            for w in piece.windows(2) {
                let (a, b) = (to_pixels(&w[0]), to_pixels(&w[1]));
                let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) / 8).max(1);
                occupied.extend((0..=n).map(|k| (a.0 + (b.0 - a.0) * k / n, a.1 + (b.1 - a.1) * k / n)));
            }
        }
    }
    for (i, note) in chart.notes.iter().enumerate() {
        let style = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Top));
        let (at, width) = ((12, 10 + 18 * i as i32), pixels.estimate_text_size(note, &style).map_or(0, |(w, _)| w as i32));
        occupied.extend((0..=width / 8).map(|k| (at.0 + 8 * k, at.1 + 8)));
        pixels.draw(&Text::new(note.clone(), at, style)).map_err(err)?;
    }
    let labelled: Vec<&Series> = chart.series.iter().filter(|s| !s.label.is_empty()).collect();
    if !labelled.is_empty() {
        draw_legend(&pixels, &labelled, &occupied).map_err(err)?;
    }
    Ok(())
}

fn draw_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot {}: {e:?}", chart.title);
    let xr = data_range(chart, chart.x.scale, |s| s.points.iter().map(|p| p.0).chain(s.band.iter().map(|b| b.0)).collect());
    let yr = match chart.limits {
        Limits::Data => data_range(chart, chart.y.scale, |s| s.points.iter().map(|p| p.1).chain(s.band.iter().flat_map(|b| [b.1, b.2])).collect()),
        Limits::Robust => {
            let bands: Vec<Vec<(f64, f64)>> =
                chart.series.iter().flat_map(|s| [s.band.iter().map(|b| (b.0, b.1)).collect(), s.band.iter().map(|b| (b.0, b.2)).collect()]).collect();
            let curves: Vec<&[(f64, f64)]> =
                chart.series.iter().map(|s| s.points.as_slice()).chain(bands.iter().map(Vec::as_slice)).filter(|c| !c.is_empty()).collect();
            robust_range(&curves, chart.y.scale == Scale::Log)
        }
    };
    let mut builder = ChartBuilder::on(area);
    builder.caption(chart.title.as_str(), ("sans-serif", 18)).margin(12).x_label_area_size(44).y_label_area_size(70);
    let linear = |r: (f64, f64)| -> RangedCoordf64 { (r.0..r.1).into() };
    match (chart.x.scale, chart.y.scale) {
        (Scale::Linear, Scale::Linear) => fill(builder.build_cartesian_2d(linear(xr), linear(yr)).map_err(err)?, chart, xr, yr),
        (Scale::Log, Scale::Linear) => fill(builder.build_cartesian_2d((xr.0..xr.1).log_scale(), linear(yr)).map_err(err)?, chart, xr, yr),
        (Scale::Linear, Scale::Log) => fill(builder.build_cartesian_2d(linear(xr), (yr.0..yr.1).log_scale()).map_err(err)?, chart, xr, yr),
        (Scale::Log, Scale::Log) => fill(builder.build_cartesian_2d((xr.0..xr.1).log_scale(), (yr.0..yr.1).log_scale()).map_err(err)?, chart, xr, yr),
    }
}

fn draw_figure<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, charts: &[Chart], columns: usize) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e:?}"))?;
    let rows = charts.len().div_ceil(columns);
    for (area, chart) in root.split_evenly((rows, columns)).iter().zip(charts) {
        draw_chart(area, chart)?;
    }
    root.present().map_err(|e| anyhow!("plot: {e:?}"))?;
    Ok(())
}

/// Writes `<stem>.png` and `<stem>.svg`: `charts` in a grid of `columns` (a single chart at
/// 900 x 560 pixels, each of several at 640 x 440).
pub fn figure(stem: &Path, charts: &[Chart], columns: usize) -> Result<()> {
    register_font();
    let columns = columns.clamp(1, charts.len().max(1));
    let rows = charts.len().div_ceil(columns).max(1) as u32;
    let (w, h) = if charts.len() == 1 { (900, 560) } else { (640, 440) };
    let size = (w * columns as u32, h * rows);
    draw_figure(BitMapBackend::new(&stem.with_extension("png"), size).into_drawing_area(), charts, columns)?;
    draw_figure(SVGBackend::new(&stem.with_extension("svg"), size).into_drawing_area(), charts, columns)?;
    Ok(())
}

/// A colour for `t` in [0, 1] on viridis (dark blue, teal, green, yellow), which stays
/// ordered in grey and for colour-blind readers.
pub(crate) fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 4] = [(68.0, 1.0, 84.0), (49.0, 104.0, 142.0), (53.0, 183.0, 121.0), (253.0, 231.0, 37.0)];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let (i, f) = ((x.floor() as usize).min(STOPS.len() - 2), x - x.floor().min((STOPS.len() - 2) as f64));
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f) as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A vertical colour bar for values `lo..hi` on viridis, labelled `label` and its ticks by
/// `format`.
pub(crate) fn colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, (lo, hi): (f64, f64), label: &str, format: &dyn Fn(f64) -> String) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot colour bar: {e:?}");
    let hi = if hi > lo { hi } else { lo + 1e-9 };
    let mut scale =
        ChartBuilder::on(area).margin_top(34).margin_bottom(44).margin_right(8).y_label_area_size(64).build_cartesian_2d(0.0..1.0, lo..hi).map_err(err)?;
    scale
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(5)
        .y_desc(label)
        .y_label_formatter(&|v| format(*v))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let strips = (0..60).map(|i| {
        let (a, b) = (lo + (hi - lo) * i as f64 / 60.0, lo + (hi - lo) * (i + 1) as f64 / 60.0);
        Rectangle::new([(0.0, a), (1.0, b)], viridis(i as f64 / 59.0).filled())
    });
    scale.draw_series(strips).map_err(err)?;
    Ok(())
}

fn draw_heatmap<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    axes: [(&str, &[String]); 2],
    values: &[Vec<Option<f64>>],
    unit: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot {title}: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let [(x_desc, x_labels), (y_desc, y_labels)] = axes;
    let known: Vec<f64> = values.iter().flatten().flatten().copied().collect();
    let (lo, hi) = known.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let (nx, ny) = (x_labels.len().max(1), y_labels.len().max(1));
    let (width, _) = root.dim_in_pixel();
    let (main, bar) = root.split_horizontally(width.saturating_sub(120));
    let mut chart = ChartBuilder::on(&main)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..nx as f64, 0.0..ny as f64)
        .map_err(err)?;
    // One label per cell, at its centre.
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(nx * 2 + 1)
        .y_labels(ny * 2 + 1)
        .x_label_formatter(&|v| label_at(*v, x_labels))
        .y_label_formatter(&|v| label_at(*v, y_labels))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    for (yi, row) in values.iter().enumerate() {
        for (xi, v) in row.iter().enumerate() {
            let Some(v) = v else { continue };
            let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            let (x, y) = (xi as f64, yi as f64);
            chart.draw_series([Rectangle::new([(x, y), (x + 1.0, y + 1.0)], viridis(t).filled())]).map_err(err)?;
            let ink = if t < 0.6 { WHITE } else { BLACK };
            let text =
                Text::new(format!("{v:.3}"), (0, 0), TextStyle::from(("sans-serif", 16).into_font()).color(&ink).pos(Pos::new(HPos::Center, VPos::Center)));
            chart.draw_series([EmptyElement::at((x + 0.5, y + 0.5)) + text]).map_err(err)?;
        }
    }
    colour_bar(&bar, (lo, hi), unit, &|v| format!("{v:.3}"))?;
    root.present().map_err(err)?;
    Ok(())
}

/// The label of the cell whose centre `v` is (half-way points only).
fn label_at(v: f64, labels: &[String]) -> String {
    let i = v - 0.5;
    match (i.fract().abs() < 1e-6, i.round()) {
        (true, k) if k >= 0.0 && (k as usize) < labels.len() => labels[k as usize].clone(),
        _ => String::new(),
    }
}

/// A grid of values (`values[y][x]`, None for missing cells) as `<stem>.png` and `.svg`,
/// coloured on viridis with a colour bar in `unit`; `axes` gives each axis's description
/// and its cells' labels.
pub fn heatmap(stem: &Path, title: &str, axes: [(&str, &[String]); 2], values: &[Vec<Option<f64>>], unit: &str) -> Result<()> {
    register_font();
    let size = (820, 540);
    draw_heatmap(BitMapBackend::new(&stem.with_extension("png"), size).into_drawing_area(), title, axes, values, unit)?;
    draw_heatmap(SVGBackend::new(&stem.with_extension("svg"), size).into_drawing_area(), title, axes, values, unit)?;
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
    fn labels_are_short() {
        assert_eq!(
            (short(20_000.0), short(1.5e6), short(2e9), short(3e18), short(7094.09), short(640.2), short(3e-4), short(2.4), short(0.0015)),
            ("20k".into(), "1.5M".into(), "2B".into(), "3e18".into(), "7.09k".into(), "640".into(), "3e-4".into(), "2.4".into(), "1.5e-3".into())
        );
        assert_eq!(
            (tick_label(3.05, 0.05, Scale::Linear), tick_label(2.0, 0.5, Scale::Linear), tick_label(4.0, 1.0, Scale::Linear)),
            ("3.05".into(), "2.0".into(), "4".into())
        );
    }

    #[test]
    fn log_ticks_are_readable_over_any_span() {
        let t = |lo: f64, hi: f64| ticks(lo, hi, Scale::Log);
        assert_eq!(t(15e3, 1.2e5), [2e4, 5e4, 1e5]);
        assert_eq!(t(2e12, 3e17), [1e13, 1e14, 1e15, 1e16, 1e17]);
        assert_eq!(t(1e3, 1e21), (1..=7).map(|k| 10f64.powi(3 * k)).collect::<Vec<_>>());
        // Under a decade with too few of 1, 2 and 5: the other mantissas; under half a
        // decade: linear ticks.
        assert_eq!(t(0.12, 0.45), [0.2, 0.3, 0.4]);
        assert_eq!(t(7.5e3, 1.4e4), [8e3, 9e3, 1e4, 1.1e4, 1.2e4, 1.3e4, 1.4e4]);
        let narrow = t(3.1, 3.3);
        assert!(narrow.len() >= 2 && narrow.iter().all(|v| (3.1..=3.3).contains(v)), "{narrow:?}");
    }

    #[test]
    fn linear_ticks_are_round_steps_inside_the_range() {
        assert_eq!(ticks(2.93, 3.61, Scale::Linear), [3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6]);
        assert_eq!(ticks(-0.07, 0.31, Scale::Linear), [-0.05, 0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]);
    }

    #[test]
    fn the_best_legend_place_is_the_emptiest_corner() {
        // Points fill the upper right quarter of a 400 x 300 area: the legend goes upper left.
        let upper_right: Vec<(i32, i32)> = (200..400).step_by(10).flat_map(|x| (0..150).step_by(10).map(move |y| (x, y))).collect();
        assert_eq!(legend_origin((100, 50), (400, 300), &upper_right), (10, 10));
        // Nothing drawn: upper right, the first choice; the top row full: lower right.
        assert_eq!(legend_origin((100, 50), (400, 300), &[]), (290, 10));
        let top_row: Vec<(i32, i32)> = (0..400).step_by(10).map(|x| (x, 30)).collect();
        assert_eq!(legend_origin((100, 50), (400, 300), &top_row), (290, 240));
    }

    #[test]
    fn lines_are_clipped_at_the_box_and_broken_outside_it() {
        let boxed = |p: &[(f64, f64)], s| clip_polyline(p, (0.0, 10.0), (0.0, 10.0), s);
        // A spike above the box: two pieces, each ending on the top edge.
        let spike = [(1.0, 1.0), (2.0, 2.0), (3.0, 30.0), (4.0, 3.0), (5.0, 4.0)];
        let pieces = boxed(&spike, (Scale::Linear, Scale::Linear));
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        let (end, start) = (pieces[0].last().unwrap(), pieces[1][0]);
        assert!((end.1 - 10.0).abs() < 1e-12 && (end.0 - (2.0 + 8.0 / 28.0)).abs() < 1e-12, "{end:?}");
        assert!((start.1 - 10.0).abs() < 1e-12 && start.0 > 3.0 && start.0 < 4.0, "{start:?}");
        assert_eq!(&pieces[1][1..], &[(4.0, 3.0), (5.0, 4.0)]);
        // Wholly outside: nothing; inside: unchanged.
        assert!(boxed(&[(20.0, 1.0), (30.0, 2.0)], (Scale::Linear, Scale::Linear)).is_empty());
        assert_eq!(boxed(&spike[..2], (Scale::Linear, Scale::Linear)), vec![spike[..2].to_vec()]);
        // On a log axis the cut lies where the straight log-space segment meets the edge,
        // and a zero breaks the line.
        let log = clip_polyline(&[(1.0, 1.0), (100.0, 1.0)], (2.0, 1000.0), (0.0, 10.0), (Scale::Log, Scale::Linear));
        assert!((log[0][0].0 - 2.0).abs() < 1e-9, "{log:?}");
        let broken = clip_polyline(&[(1.0, 1.0), (2.0, 0.0), (3.0, 2.0), (4.0, 3.0)], (0.5, 10.0), (0.5, 10.0), (Scale::Linear, Scale::Log));
        assert_eq!(broken, vec![vec![(3.0, 2.0), (4.0, 3.0)]]);
    }
}
