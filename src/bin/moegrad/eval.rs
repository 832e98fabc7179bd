//! `moegrad eval`, and loading a checkpoint's model (which `sample` shares).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use moegrad::models::Transformer;
use moegrad::train::checkpoint::Checkpoint;
use moegrad::train::data::{load_text, Corpus};
use moegrad::train::evaluate;
use moegrad::Device;
use rand::SeedableRng;

/// Loss, perplexity and bits per byte of a checkpoint on held-out text.
#[derive(Args)]
pub struct EvalArgs {
    /// The checkpoint to evaluate (a run's checkpoint.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text file or folder to evaluate on (all of it); default: the run's held-out split.
    #[arg(long)]
    data: Option<String>,
    /// Batches of held-out windows to score.
    #[arg(long, default_value_t = 16)]
    batches: usize,
}

impl EvalArgs {
    pub fn run(self) -> Result<()> {
        let EvalArgs { checkpoint, data, batches } = self;
        let device = Device::new()?;
        let (ckpt, model) = load_model(&device, &checkpoint)?;
        let cfg = &ckpt.meta.config;
        let corpus = match &data {
            // The whole of the given text is held out: evaluate on all of it.
            Some(path) => {
                let text = load_text(path)?;
                Corpus::new(&text, &text, &ckpt.meta.tokenizer, cfg.model.context)?
            }
            None => {
                let text = load_text(&cfg.data.path)?;
                let (train_text, eval_text) = moegrad::train::data::split_text(&text, cfg.data.eval_fraction);
                Corpus::new(train_text, eval_text, &ckpt.meta.tokenizer, cfg.model.context)?
            }
        };
        let loss = evaluate(&device, &model, &corpus.eval, cfg.train.batch_size, batches)?;
        let bits_per_byte = loss as f64 / corpus.eval_bytes_per_token / std::f64::consts::LN_2;
        println!("step {}  loss {loss:.4} nats/token  perplexity {:.2}  {bits_per_byte:.4} bits/byte", ckpt.meta.step, (loss as f64).exp());
        Ok(())
    }
}

pub fn load_model(device: &Device, path: &std::path::Path) -> Result<(Checkpoint, Transformer)> {
    let ckpt = Checkpoint::load(path)?;
    let cfg = &ckpt.meta.config;
    cfg.model.validate().map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", path.display()))?;
    let model = Transformer::new(device, &cfg.model, &mut rand::rngs::StdRng::seed_from_u64(0))?;
    ckpt.restore(&model, None).with_context(|| format!("checkpoint {} does not fit its own config", path.display()))?;
    Ok((ckpt, model))
}
