//! Research at scale: parameter and FLOP accounting, comparisons of MoE variants with
//! expert-load heatmaps, Gemstones-style width x depth sweeps, scaling-law fits and their
//! plots.

pub mod accounting;
pub mod compare;
pub mod fit;
pub mod fit_plots;
pub mod load_plot;
pub mod plot;
pub mod run_curves;
pub mod sweep;
pub mod sweep_report;
pub mod table;
