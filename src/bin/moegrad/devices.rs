//! `moegrad devices`.

use anyhow::Result;
use clap::Args;
use moegrad::Device;

/// List every GPU adapter with its backend, type, features and limits.
#[derive(Args)]
pub struct DevicesArgs {}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl DevicesArgs {
    pub fn run(self) -> Result<()> {
        let adapters = Device::adapters();
        if adapters.is_empty() {
            return Err(moegrad::Error::NoAdapter.into());
        }
        for (i, a) in adapters.iter().enumerate() {
            println!("[{i}] {} ({:?}, {:?}){}", a.name, a.backend, a.device_type, if i == 0 { "  <- default" } else { "" });
            println!("    driver: {}", a.driver);
            println!(
                "    f16: {}  subgroups: {} (size {}..{})  timestamp queries: {}  cooperative matrix: {}",
                yes_no(a.shader_f16),
                yes_no(a.subgroups),
                a.subgroup_size.0,
                a.subgroup_size.1,
                yes_no(a.timestamp_query),
                yes_no(a.cooperative_matrix)
            );
            println!(
                "    max storage binding: {} MiB  max buffer: {} MiB  workgroup memory: {} KiB  invocations/workgroup: {}",
                a.max_storage_binding >> 20,
                a.max_buffer >> 20,
                a.max_workgroup_storage >> 10,
                a.max_invocations_per_workgroup
            );
        }
        println!("Pick one with {}=<part of its name>.", moegrad::ADAPTER_ENV);
        Ok(())
    }
}
