//! A run's configuration: the `[model]`, `[data]` and `[train]` tables of a TOML file,
//! with `--set key=value` overrides. Unknown keys, wrong types and impossible values are
//! refused before any work, naming the key.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use moegrad_core::ops::Precision;
use moegrad_models::ModelConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    Byte,
    Bpe,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A text file or a folder of `.txt` files; empty means the bundled Shakespeare.
    pub path: String,
    pub tokenizer: TokenizerKind,
    /// BPE vocabulary size (used when `tokenizer = "bpe"` and `model.vocab_size` is 0).
    pub bpe_vocab: usize,
    /// Share of the text (its end) held out for evaluation.
    pub eval_fraction: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { path: String::new(), tokenizer: TokenizerKind::Byte, bpe_vocab: 512, eval_fraction: 0.05 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Linear warmup, then cosine decay to `min_lr`.
    Cosine,
    /// Warmup-stable-decay: linear warmup, constant, then a linear cooldown to `min_lr`
    /// over the last `decay_fraction` of the steps.
    Wsd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub lr: f32,
    pub min_lr: f32,
    pub warmup: u64,
    pub schedule: ScheduleKind,
    pub decay_fraction: f64,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Global gradient-norm clip; 0 disables.
    pub clip: f32,
    /// Evaluate every this many steps (and at the end); 0 only at the end.
    pub eval_every: u64,
    pub eval_batches: usize,
    pub log_every: u64,
    /// Checkpoint every this many steps (and at the end); 0 only at the end.
    pub checkpoint_every: u64,
    pub seed: u64,
    /// "f32", or "f16": matmul operands in f16 with f32 sums (tensor cores where the
    /// adapter has them), f32 master weights and optimizer state, dynamic loss scaling.
    pub precision: Precision,
    /// f16 only: the initial loss scale, and how many good steps double it.
    pub loss_scale: f32,
    pub loss_scale_growth_every: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 200,
            batch_size: 8,
            grad_accum: 1,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup: 20,
            schedule: ScheduleKind::Cosine,
            decay_fraction: 0.2,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            clip: 1.0,
            eval_every: 50,
            eval_batches: 4,
            log_every: 10,
            checkpoint_every: 100,
            seed: 0,
            precision: Precision::F32,
            loss_scale: 65536.0,
            loss_scale_growth_every: 200,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
}

/// Sets `dotted.key` in a TOML table to `raw`, read as a TOML value (a bare word is a string).
fn set_key(root: &mut toml::Table, key: &str, raw: &str) -> Result<()> {
    let value: toml::Value =
        toml::from_str::<toml::Table>(&format!("v = {raw}")).ok().and_then(|mut t| t.remove("v")).unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().filter(|s| !s.is_empty()).ok_or_else(|| anyhow!("--set {key}={raw}: empty key"))?;
    let mut table = root;
    for part in parts {
        table = table
            .entry(part)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {key}={raw}: {part} is not a table"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// Deserialises a config table; errors name the key (`model.moe.top_k`) and the source.
pub fn from_table(table: toml::Table, source: &str) -> Result<RunConfig> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        anyhow!("config {source}: key `{key}`: {}", e.into_inner())
    })
}

impl RunConfig {
    /// Reads `path` (or the defaults when `None`), applies `overrides` (`key=value`), and
    /// validates the result.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<RunConfig> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("cannot read config {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("config {} is not valid TOML", p.display()))?
            }
            None => toml::Table::new(),
        };
        for o in overrides {
            let (k, v) = o.split_once('=').ok_or_else(|| anyhow!("--set {o:?}: expected key=value"))?;
            set_key(&mut table, k.trim(), v.trim())?;
        }
        from_table(table, &path.map_or("the defaults".to_string(), |p| p.display().to_string()))
    }

    /// This config with `overrides` (`key=value`) applied.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<RunConfig> {
        let mut table = toml::Table::try_from(self)?;
        for o in overrides {
            let (k, v) = o.split_once('=').ok_or_else(|| anyhow!("--set {o:?}: expected key=value"))?;
            set_key(&mut table, k.trim(), v.trim())?;
        }
        from_table(table, "the checkpoint's config")
    }

    /// Checks everything that can be checked before the tokenizer exists (the vocabulary
    /// size is filled in later).
    pub fn validate(&self) -> Result<()> {
        let mut model = self.model.clone();
        if model.vocab_size == 0 {
            model.vocab_size = 256;
        }
        model.validate().map_err(|e| anyhow!("config: {e}"))?;
        if self.data.tokenizer == TokenizerKind::Byte && !matches!(self.model.vocab_size, 0 | 256) {
            bail!(
                "config: model.vocab_size = {} but the byte tokenizer has 256 tokens (set data.tokenizer = \"bpe\" or leave model.vocab_size out)",
                self.model.vocab_size
            );
        }
        if self.data.tokenizer == TokenizerKind::Bpe && self.bpe_vocab() < 256 {
            bail!("config: data.bpe_vocab = {} must be at least 256", self.bpe_vocab());
        }
        if !(0.0..1.0).contains(&self.data.eval_fraction) || self.data.eval_fraction == 0.0 {
            bail!("config: data.eval_fraction = {} must be in (0, 1)", self.data.eval_fraction);
        }
        let t = &self.train;
        for (key, v) in [
            ("train.steps", t.steps as usize),
            ("train.batch_size", t.batch_size),
            ("train.grad_accum", t.grad_accum),
            ("train.eval_batches", t.eval_batches),
            ("train.log_every", t.log_every as usize),
        ] {
            if v == 0 {
                bail!("config: {key} must be positive");
            }
        }
        if !(t.lr > 0.0) || !(t.min_lr >= 0.0) || t.min_lr > t.lr {
            bail!("config: train.lr = {} must be positive and train.min_lr = {} in [0, train.lr]", t.lr, t.min_lr);
        }
        if t.warmup > t.steps {
            bail!("config: train.warmup = {} exceeds train.steps = {}", t.warmup, t.steps);
        }
        if !(0.0..=1.0).contains(&t.decay_fraction) {
            bail!("config: train.decay_fraction = {} must be in [0, 1]", t.decay_fraction);
        }
        if t.clip < 0.0 {
            bail!("config: train.clip = {} must be 0 (off) or positive", t.clip);
        }
        if !(t.loss_scale > 0.0 && t.loss_scale.is_finite()) || t.loss_scale_growth_every == 0 {
            bail!(
                "config: train.loss_scale = {} must be positive and finite, train.loss_scale_growth_every = {} positive",
                t.loss_scale,
                t.loss_scale_growth_every
            );
        }
        Ok(())
    }

    /// The BPE vocabulary: `model.vocab_size` when set, else `data.bpe_vocab`.
    pub fn bpe_vocab(&self) -> usize {
        if self.model.vocab_size > 0 {
            self.model.vocab_size
        } else {
            self.data.bpe_vocab
        }
    }
}
