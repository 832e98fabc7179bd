//! `moegrad eval`, and loading a checkpoint's model (which `sample` shares).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use moegrad::models::Transformer;
use moegrad::train::checkpoint::Checkpoint;
use moegrad::train::data::{load_text, split_text, Corpus};
use moegrad::train::score_all;
use moegrad::Device;
use rand::SeedableRng;

/// Loss, perplexity and bits per byte of a checkpoint on every token of a text.
#[derive(Args)]
pub struct EvalArgs {
    /// The checkpoint to evaluate (a run's checkpoint.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text file or folder to score, every token of it; default: the run's held-out split.
    #[arg(long)]
    data: Option<String>,
    /// Score only the first N batches of windows (the report says how many tokens).
    #[arg(long, value_parser = crate::at_least_one)]
    batches: Option<usize>,
}

impl EvalArgs {
    pub fn run(self) -> Result<()> {
        let EvalArgs { checkpoint, data, batches } = self;
        let device = Device::new()?;
        let (ckpt, model) = load_model(&device, &checkpoint)?;
        let cfg = &ckpt.meta.config;
        let (source, text) = match &data {
            Some(path) => (path.clone(), load_text(path)?),
            None => ("the run's held-out split".to_string(), split_text(&load_text(&cfg.data.path)?, cfg.data.eval_fraction).1.to_string()),
        };
        let corpus = Corpus::new(&text, &text, &ckpt.meta.tokenizer, cfg.model.context)?;
        let bar = ProgressBar::new(0);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} windows [{elapsed} < {eta}]").expect("valid template"));
        let score = score_all(&device, &model, &corpus.eval, cfg.train.batch_size, batches, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        let bits_per_byte = score.loss / corpus.eval_bytes_per_token / std::f64::consts::LN_2;
        let all = corpus.eval.len() - 1;
        let what = if score.tokens == all { format!("all {all} tokens") } else { format!("the first {} of {all} tokens", score.tokens) };
        println!("scored {what} of {source} in {} windows of {} tokens", score.windows, cfg.model.context);
        println!("step {}  loss {:.4} nats/token  perplexity {:.2}  {bits_per_byte:.4} bits/byte", ckpt.meta.step, score.loss, score.loss.exp());
        Ok(())
    }
}

/// The checkpoint at `path` (verified, its warning shown) and its model.
pub fn load_model(device: &Device, path: &std::path::Path) -> Result<(Checkpoint, Transformer)> {
    let ckpt = Checkpoint::load(path)?;
    if let Some(w) = ckpt.warning() {
        eprintln!("{w}: {}", path.display());
    }
    let model = Transformer::new(device, &ckpt.meta.config.model, &mut rand::rngs::StdRng::seed_from_u64(0))?;
    ckpt.restore(&model, None).with_context(|| format!("checkpoint {} does not fit its own config", path.display()))?;
    Ok((ckpt, model))
}
