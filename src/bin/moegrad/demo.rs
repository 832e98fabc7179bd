//! `moegrad demo`.

use anyhow::Result;
use clap::Args;
use moegrad::demo::{train_mlp, DemoConfig};
use moegrad::Device;

/// Train a small MLP on a synthetic regression task (the engine end to end).
#[derive(Args)]
pub struct DemoArgs {
    /// SGD steps.
    #[arg(long, default_value_t = 400)]
    steps: usize,
    /// Seed of the data and the initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f32,
}

impl DemoArgs {
    pub fn run(self) -> Result<()> {
        let DemoArgs { steps, seed, lr } = self;
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
}
