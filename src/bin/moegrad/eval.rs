//! `moegrad eval`, and loading a checkpoint's model (which `sample` shares).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use moegrad::data::{is_shard_folder, ShardFolder};
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
    /// Text file or folder to score, every token of it, or a shard folder, every token of
    /// its val shard; default: the run's held-out split or val shard.
    #[arg(long)]
    data: Option<String>,
    /// Score only the first N batches of windows (the report says how many tokens).
    #[arg(long, value_parser = crate::at_least_one, conflicts_with = "tokens")]
    batches: Option<usize>,
    /// Score only about the first N tokens (whole windows; the report says how many).
    #[arg(long, value_parser = crate::at_least_one)]
    tokens: Option<usize>,
}

/// The checkpoint's held-out tokens from a shard folder (whose tokenizer must be the
/// checkpoint's).
fn shard_corpus(ckpt: &Checkpoint, path: &str) -> Result<Corpus> {
    let folder = ShardFolder::open(Path::new(path), &ckpt.meta.config.data.tokenizer)?;
    if folder.tokenizer != ckpt.meta.tokenizer {
        bail!("the shards in {path} were made with {}, the checkpoint's tokenizer is {}", folder.tokenizer.describe(), ckpt.meta.tokenizer.describe());
    }
    Corpus::from_shards(&folder, ckpt.meta.config.model.context)
}

impl EvalArgs {
    pub fn run(self) -> Result<()> {
        let EvalArgs { checkpoint, data, batches, tokens } = self;
        let device = Device::new()?;
        let (ckpt, model) = load_model(&device, &checkpoint)?;
        let cfg = &ckpt.meta.config;
        let path = data.clone().unwrap_or_else(|| cfg.data.path.clone());
        let (source, corpus) = if !path.is_empty() && is_shard_folder(Path::new(&path)) {
            (format!("the val shard of {path}"), shard_corpus(&ckpt, &path)?)
        } else {
            let (source, text) = match &data {
                Some(path) => (path.clone(), load_text(path)?),
                None => ("the run's held-out split".to_string(), split_text(&load_text(&cfg.data.path)?, cfg.data.eval_fraction).1.to_string()),
            };
            (source, Corpus::new(&text, &text, &ckpt.meta.tokenizer, cfg.model.context)?)
        };
        let (context, batch) = (cfg.model.context, cfg.train.batch_size);
        let max_windows = batches.map(|b| b * batch).or(tokens.map(|t| t.div_ceil(context)));
        let bar = ProgressBar::new(0);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} windows [{elapsed} < {eta}]").expect("valid template"));
        let score = score_all(&device, &model, &corpus.eval, batch, max_windows, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        let all: u64 = corpus.eval.sequence_lens().iter().map(|n| n.saturating_sub(1)).sum();
        let what = if score.tokens as u64 == all { format!("all {all} tokens") } else { format!("the first {} of {all} tokens", score.tokens) };
        println!("scored {what} of {source} in {} windows of {context} tokens", score.windows);
        let bits_per_byte = match corpus.eval_bytes_per_token {
            Some(b) => format!("{:.4} bits/byte", score.loss / b / std::f64::consts::LN_2),
            None => "bits/byte unknown (the shards record no byte counts)".to_string(),
        };
        println!("step {}  loss {:.4} nats/token  perplexity {:.2}  {bits_per_byte}", ckpt.meta.step, score.loss, score.loss.exp());
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
