//! `moegrad sample`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use moegrad::train::sample::{generate_to, SampleOptions};
use moegrad::Device;

use crate::eval::load_model;

/// Generate text from a checkpoint.
#[derive(Args)]
pub struct SampleArgs {
    /// The checkpoint to sample from (a run's checkpoint.safetensors), or hf:DIR for a
    /// Hugging Face Llama or Mixtral folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text the generated tokens continue.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Tokens to generate (at most 100,000), written as they are made.
    #[arg(long, default_value_t = 200)]
    tokens: usize,
    /// Softmax temperature (lower is greedier; 0 always takes the most likely token).
    #[arg(long, default_value_t = 0.8, value_parser = temperature, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample among the k most likely tokens.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// A temperature: finite and not negative.
fn temperature(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        Ok(t) => Err(format!("{t} is not a temperature: it must be finite and at least 0")),
        Err(e) => Err(format!("{s:?} is not a number ({e})")),
    }
}

impl SampleArgs {
    pub fn run(self) -> Result<()> {
        let SampleArgs { checkpoint, prompt, tokens, temperature, top_k, seed } = self;
        let opts = SampleOptions { max_tokens: tokens, temperature, top_k, seed };
        let device = Device::new()?;
        let (meta, model) = load_model(&device, &checkpoint, None)?;
        generate_to(&device, &model, &meta.tokenizer, &prompt, &opts, &mut std::io::stdout().lock())
    }
}
