//! `metrics.csv` beside `metrics.jsonl`: the same log as a table with fixed columns, for
//! spreadsheets and plotting tools. Each start rebuilds it from `metrics.jsonl` (which a
//! resume has already cut back to the checkpoint's step), then appends a row for each line
//! logged; a value a line lacks (eval loss between evaluations) is an empty cell.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::durable::write_atomic;

pub const METRICS_CSV_FILE: &str = "metrics.csv";

/// The run-wide columns, then these for each MoE layer as `moe<i>_<key>`.
const RUN_COLUMNS: [&str; 12] =
    ["step", "tokens", "train_loss", "eval_loss", "lr", "grad_norm", "tokens_per_s", "mfu", "wall_s", "peak_memory_mib", "loss_scale", "skipped_steps"];
const LAYER_COLUMNS: [&str; 6] = ["load_cv", "max_violation", "router_entropy", "aux_loss", "z_loss", "dropped"];

pub struct MetricsCsv {
    file: std::fs::File,
    moe_layers: usize,
}

fn header(moe_layers: usize) -> String {
    let layers = (0..moe_layers).flat_map(|i| LAYER_COLUMNS.iter().map(move |c| format!("moe{i}_{c}")));
    RUN_COLUMNS.iter().map(|c| c.to_string()).chain(layers).collect::<Vec<_>>().join(",")
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn row(line: &serde_json::Value, moe_layers: usize) -> String {
    let layers = (0..moe_layers).flat_map(|i| LAYER_COLUMNS.iter().map(move |c| cell(&line["moe"][i][*c])));
    RUN_COLUMNS.iter().map(|c| cell(&line[*c])).chain(layers).collect::<Vec<_>>().join(",")
}

impl MetricsCsv {
    /// Rewrites `out/metrics.csv` from `out/metrics.jsonl` and opens it for appending.
    pub fn rebuild(out: &Path, jsonl: &Path, moe_layers: usize) -> Result<MetricsCsv> {
        let lines = std::fs::read_to_string(jsonl).unwrap_or_default();
        let mut text = header(moe_layers) + "\n";
        for line in lines.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            text += &(row(&line, moe_layers) + "\n");
        }
        let path = out.join(METRICS_CSV_FILE);
        write_atomic(&path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(MetricsCsv { file, moe_layers })
    }

    /// Appends the row of one logged line.
    pub fn append(&mut self, line: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{}", row(line, self.moe_layers))?;
        Ok(())
    }
}
