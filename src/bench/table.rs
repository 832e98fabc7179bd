//! `moegrad bench --against FILE`: the side-by-side table of a comparison. Reports saved
//! as JSON (`benches/pytorch_reference.py --json`, or `moegrad bench --json` of another
//! build) are set beside this run's results, or beside a saved report of moegrad's
//! (`--report`), as one Markdown table, so that the numbers of a GPU session go into the
//! README without being copied by hand.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::bench::Report;

/// What every benchmark report's JSON has, whichever side wrote it.
#[derive(Clone, Debug, Deserialize)]
pub struct SavedReport {
    pub device: String,
    pub results: Vec<SavedResult>,
}

/// One workload's median time and throughput.
#[derive(Clone, Debug, Deserialize)]
pub struct SavedResult {
    pub key: String,
    pub ms: f64,
    pub value: f64,
    pub unit: String,
    /// The host's time to record a run (moegrad's reports; PyTorch's have none).
    #[serde(default)]
    pub host_ms: Option<f64>,
}

impl SavedReport {
    /// Reads a report, naming the file and the field that is wrong if it is not one.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the benchmark report {}", path.display()))?;
        let json = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(json).with_context(|| {
            format!("{} is not a benchmark report (the output of `moegrad bench --json` or `benches/pytorch_reference.py --json`)", path.display())
        })
    }
}

impl From<&Report> for SavedReport {
    fn from(report: &Report) -> Self {
        let results = report
            .results
            .iter()
            .map(|r| SavedResult { key: r.key.clone(), ms: r.ms, value: r.value, unit: r.unit.to_string(), host_ms: Some(r.host_ms) })
            .collect();
        SavedReport { device: report.device.clone(), results }
    }
}

/// A report and the column name it goes by: its file's name without `.json`, or the whole
/// path where two files share a name.
pub struct Labelled {
    pub label: String,
    pub path: PathBuf,
    pub report: SavedReport,
}

/// Loads each of `paths`, labelled for the table.
pub fn load_references(paths: &[PathBuf]) -> Result<Vec<Labelled>> {
    let stem = |p: &Path| p.file_stem().map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into_owned());
    let mut seen = HashSet::new();
    let shared: HashSet<String> = paths.iter().map(|p| stem(p)).filter(|s| !seen.insert(s.clone())).collect();
    paths
        .iter()
        .map(|path| {
            let label = if shared.contains(&stem(path)) { path.display().to_string() } else { stem(path) };
            Ok(Labelled { label, path: path.clone(), report: SavedReport::load(path)? })
        })
        .collect()
}

/// A throughput to three significant figures however small (lavapipe's rates are
/// thousandths of a TB/s), thousands as `k` (tokens/s).
fn figure(value: f64, unit: &str) -> String {
    let (v, suffix) = if value >= 1e4 { (value / 1e3, "k") } else { (value, "") };
    let digits = if v > 0.0 { (2 - v.log10().floor() as i32).max(0) as usize } else { 0 };
    format!("{v:.digits$}{suffix} {unit}")
}

/// The Markdown table of `ours` (the `moegrad` column, described by `source`, and the
/// host's time to record a run as a share of the run's time, where the report has it)
/// beside each reference: a row per workload of ours, with each reference's figure for the same key
/// and moegrad's speed relative to it (their time over ours: above 1, moegrad is
/// faster), `-` where a reference lacks the workload. A legend says which device and file
/// each column came from.
pub fn side_by_side(ours: &SavedReport, source: &str, references: &[Labelled]) -> String {
    let mut header = vec!["workload".to_string(), "moegrad".to_string(), "host".to_string()];
    for r in references {
        header.push(r.label.clone());
        header.push(format!("moegrad vs {}", r.label));
    }
    let mut lines = vec![format!("| {} |", header.join(" | ")), format!("| --- |{}", " ---: |".repeat(header.len() - 1))];
    for mine in &ours.results {
        let host = mine.host_ms.map_or_else(|| "-".to_string(), |h| format!("{:.1}%", 100.0 * h / mine.ms));
        let mut row = vec![mine.key.clone(), figure(mine.value, &mine.unit), host];
        for r in references {
            match r.report.results.iter().find(|theirs| theirs.key == mine.key) {
                Some(theirs) => {
                    row.push(figure(theirs.value, &theirs.unit));
                    row.push(format!("{:.2}x", theirs.ms / mine.ms));
                }
                None => row.extend(["-".to_string(), "-".to_string()]),
            }
        }
        lines.push(format!("| {} |", row.join(" | ")));
    }
    lines.push(String::new());
    lines.push(format!("moegrad: {} ({source})", ours.device));
    for r in references {
        lines.push(format!("{}: {} ({})", r.label, r.report.device, r.path.display()));
    }
    lines.push("host: moegrad's median time to record a run over its median time (copies: the host's work is the copy)".to_string());
    lines.push("moegrad vs X: X's median time over moegrad's (above 1: moegrad is faster)".to_string());
    lines.join("\n")
}
