//! `run.json` in every run folder: what ran, where and how, one entry for each start of
//! the run (the first, then each resume), so that a result can be traced to the build,
//! the adapter and the command that made it.

use std::path::Path;

use anyhow::{Context, Result};
use moegrad_core::Device;
use serde_json::json;

use crate::durable::write_atomic;

pub const RUN_RECORD_FILE: &str = "run.json";

/// This start's entry: moegrad's version and git commit, the adapter (backend, driver,
/// features), the kernel policy, the command line, the start time and the host.
fn entry(device: &Device, resumed_at: Option<u64>) -> serde_json::Value {
    let info = device.adapter_info();
    json!({
        "moegrad_version": env!("CARGO_PKG_VERSION"),
        "git_commit": option_env!("MOEGRAD_GIT_COMMIT").unwrap_or("unknown (not built from a git checkout)"),
        "started": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "host": gethostname::gethostname().to_string_lossy(),
        "command_line": std::env::args().collect::<Vec<_>>(),
        "resumed_at_step": resumed_at,
        "adapter": {
            "name": info.name,
            "backend": format!("{:?}", info.backend),
            "device_type": format!("{:?}", info.device_type),
            "driver": info.driver,
            "driver_info": info.driver_info,
            "features": format!("{:?}", device.features()),
        },
        "kernel_policy": format!("{:?}", device.policy()),
    })
}

/// Adds this start to `out/run.json` (written atomically; earlier starts are kept).
pub fn record_start(out: &Path, device: &Device, resumed_at: Option<u64>) -> Result<()> {
    let path = out.join(RUN_RECORD_FILE);
    let mut starts: Vec<serde_json::Value> = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["starts"].as_array().cloned()).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    starts.push(entry(device, resumed_at));
    let text = serde_json::to_string_pretty(&json!({ "starts": starts })).context("run.json")?;
    write_atomic(&path, text.as_bytes())
}
