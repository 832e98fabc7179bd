//! The `moegrad` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};
use moegrad::demo::{train_mlp, DemoConfig};
use moegrad::Device;

#[derive(Parser)]
#[command(name = "moegrad", version, about = "Train Mixture-of-Experts transformers on any GPU wgpu reaches")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter with its backend, type, features and limits.
    Devices,
    /// Train a small MLP on a synthetic regression task (the engine end to end).
    Demo {
        #[arg(long, default_value_t = 400)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 0.1)]
        lr: f32,
    },
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn devices() -> Result<()> {
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
    println!("Pick one with {}=<part of its name>.", moegrad::engine::ADAPTER_ENV);
    Ok(())
}

fn demo(steps: usize, seed: u64, lr: f32) -> Result<()> {
    let device = Device::new()?;
    println!("device: {}", device.name());
    let cfg = DemoConfig { steps, seed, lr, ..DemoConfig::default() };
    let started = std::time::Instant::now();
    let result = train_mlp(&device, &cfg, |step, loss| println!("step {step:5}  train mse {loss:.5}"))?;
    let stats = device.stats();
    println!(
        "eval mse: {:.5} untrained -> {:.5} trained ({:.1}s, {} dispatches in {} submissions, {} buffers created)",
        result.initial_loss,
        result.final_loss,
        started.elapsed().as_secs_f32(),
        stats.dispatches,
        stats.submissions,
        stats.buffers_created
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Devices => devices(),
        Command::Demo { steps, seed, lr } => demo(steps, seed, lr),
    }
}
