//! `moegrad eval`, and loading a checkpoint's model (which `sample` shares).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use moegrad::data::{is_shard_folder, ShardFolder};
use moegrad::hf::{hf_folder, HfModel};
use moegrad::models::Transformer;
use moegrad::train::checkpoint::{Checkpoint, CheckpointMeta};
use moegrad::train::data::{load_text, split_text, Corpus};
use moegrad::train::score_all;
use moegrad::Device;
use rand::SeedableRng;

/// Loss, perplexity and bits per byte of a checkpoint on every token of a text.
#[derive(Args)]
pub struct EvalArgs {
    /// The checkpoint to evaluate (a run's checkpoint.safetensors), or hf:DIR for a
    /// Hugging Face Llama or Mixtral folder.
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
    /// Score in windows of N tokens (at most the model's context; default: the context).
    #[arg(long, value_parser = crate::at_least_one)]
    context: Option<usize>,
    /// Print the result as one JSON object (loss, perplexity, bits_per_byte, tokens, windows, step).
    #[arg(long)]
    json: bool,
}

/// The checkpoint's held-out tokens from a shard folder (whose tokenizer must be the
/// checkpoint's).
fn shard_corpus(meta: &CheckpointMeta, path: &str) -> Result<Corpus> {
    let folder = ShardFolder::open(Path::new(path), Some(&meta.config.data.tokenizer))?;
    if folder.tokenizer != meta.tokenizer {
        bail!("the shards in {path} were made with {}, the checkpoint's tokenizer is {}", folder.tokenizer.describe(), meta.tokenizer.describe());
    }
    Corpus::from_shards(&folder, meta.config.model.context)
}

impl EvalArgs {
    pub fn run(self) -> Result<()> {
        let EvalArgs { checkpoint, data, batches, tokens, context, json } = self;
        let device = Device::new()?;
        let (meta, model) = load_model(&device, &checkpoint, context)?;
        let cfg = &meta.config;
        let path = data.clone().unwrap_or_else(|| cfg.data.path.clone());
        let (source, corpus) = if !path.is_empty() && is_shard_folder(Path::new(&path)) {
            (format!("the val shard of {path}"), shard_corpus(&meta, &path)?)
        } else {
            let (source, text) = match &data {
                Some(path) => (path.clone(), load_text(path)?),
                None => ("the run's held-out split".to_string(), split_text(&load_text(&cfg.data.path)?, cfg.data.eval_fraction).1.to_string()),
            };
            (source, Corpus::new(&text, &text, &meta.tokenizer, cfg.model.context)?)
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
        let bits_per_byte = corpus.eval_bytes_per_token.map(|b| score.loss / b / std::f64::consts::LN_2);
        if json {
            let result = serde_json::json!({
                "loss": score.loss, "perplexity": score.loss.exp(), "bits_per_byte": bits_per_byte,
                "tokens": score.tokens, "windows": score.windows, "context": context, "step": meta.step, "source": source,
            });
            println!("{result}");
            return finite(score.loss, bits_per_byte);
        }
        let what = if score.tokens as u64 == all { format!("all {all} tokens") } else { format!("the first {} of {all} tokens", score.tokens) };
        println!("scored {what} of {source} in {} windows of {context} tokens", score.windows);
        let bits = match bits_per_byte {
            Some(b) => format!("{b:.4} bits/byte"),
            None => "bits/byte unknown (the shards record no byte counts)".to_string(),
        };
        println!("step {}  loss {:.4} nats/token  perplexity {:.2}  {bits}", meta.step, score.loss, score.loss.exp());
        finite(score.loss, bits_per_byte)
    }
}

/// An evaluation whose loss is not a finite number ends with an error (a script that
/// reads the exit status must not take it for a result).
fn finite(loss: f64, bits_per_byte: Option<f64>) -> Result<()> {
    if !loss.is_finite() || bits_per_byte.is_some_and(|b| !b.is_finite()) {
        bail!(
            "the evaluation's loss is {loss} (bits per byte {bits_per_byte:?}), not a finite number: the model's weights or the data's byte counts are broken"
        );
    }
    Ok(())
}

/// The checkpoint at `path` (verified, its warning shown), or the Hugging Face folder
/// `hf:DIR`, and its model, with positions up to `context` when given (at most the
/// model's own; the run state says the context used).
pub fn load_model(device: &Device, path: &Path, context: Option<usize>) -> Result<(CheckpointMeta, Transformer)> {
    if let Some(dir) = path.to_str().and_then(hf_folder) {
        let hf = HfModel::open(dir)?;
        return finish(device, hf.meta()?, context, |model| hf.load_into(model));
    }
    let ckpt = Checkpoint::load(path)?;
    if let Some(w) = ckpt.warning() {
        eprintln!("{w}: {}", path.display());
    }
    finish(device, ckpt.meta.clone(), context, |model| {
        ckpt.restore(model, None).with_context(|| format!("checkpoint {} does not fit its own config", path.display()))
    })
}

/// The model of `meta` at `context` positions, its weights written by `fill`.
fn finish(
    device: &Device,
    mut meta: CheckpointMeta,
    context: Option<usize>,
    fill: impl FnOnce(&Transformer) -> Result<()>,
) -> Result<(CheckpointMeta, Transformer)> {
    if let Some(n) = context {
        if n > meta.config.model.context {
            bail!("--context {n} exceeds the model's context of {}", meta.config.model.context);
        }
        meta.config.model.context = n;
    }
    let model = Transformer::new(device, &meta.config.model, &mut rand::rngs::StdRng::seed_from_u64(0))?;
    fill(&model)?;
    Ok((meta, model))
}

#[cfg(test)]
mod tests {
    use super::finite;

    #[test]
    fn a_loss_or_bits_per_byte_that_is_not_finite_is_an_error() {
        assert!(finite(3.2, Some(1.1)).is_ok() && finite(3.2, None).is_ok());
        for (loss, bits) in [(f64::NAN, None), (f64::INFINITY, Some(1.0)), (3.2, Some(f64::INFINITY))] {
            assert!(finite(loss, bits).unwrap_err().to_string().contains("not a finite number"), "{loss} {bits:?}");
        }
    }
}
