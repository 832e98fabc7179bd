//! A run's configuration: the `[model]`, `[data]` and `[train]` tables of a TOML file,
//! with `--set key=value` overrides. Unknown keys, wrong types and impossible values are
//! refused before any work, naming the key.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use moegrad_core::ops::Precision;
use moegrad_models::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::train::tokenizer::{padded_vocab, Standard};

/// `data.tokenizer`: `"byte"`, `"bpe"` (trained on the run's text), a standard vocabulary
/// (`"gpt2"`, `"llama3"`, `"cl100k"`, `"o200k"`) or the path of a Hugging Face
/// `tokenizer.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TokenizerKind {
    Byte,
    Bpe,
    Standard(Standard),
    HuggingFace(String),
}

impl TryFrom<String> for TokenizerKind {
    type Error = String;
    fn try_from(name: String) -> Result<TokenizerKind, String> {
        Ok(match name.as_str() {
            "byte" => TokenizerKind::Byte,
            "bpe" => TokenizerKind::Bpe,
            _ if Standard::from_name(&name).is_some() => TokenizerKind::Standard(Standard::from_name(&name).expect("just matched")),
            _ if name.ends_with(".json") => TokenizerKind::HuggingFace(name),
            _ => return Err(format!("tokenizer {name:?}: expected byte, bpe, gpt2, llama3, cl100k, o200k or the path of a Hugging Face tokenizer.json")),
        })
    }
}

impl From<TokenizerKind> for String {
    fn from(kind: TokenizerKind) -> String {
        kind.to_string()
    }
}

impl std::fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerKind::Byte => f.write_str("byte"),
            TokenizerKind::Bpe => f.write_str("bpe"),
            TokenizerKind::Standard(s) => f.write_str(s.name()),
            TokenizerKind::HuggingFace(path) => f.write_str(path),
        }
    }
}

impl TokenizerKind {
    /// The tokenizer's vocabulary when it is known without text or files (for accounting).
    pub fn known_vocab(&self, bpe_vocab: usize) -> Option<usize> {
        match self {
            TokenizerKind::Byte => Some(256),
            TokenizerKind::Bpe => Some(bpe_vocab),
            TokenizerKind::Standard(s) => Some(s.vocab_size()),
            TokenizerKind::HuggingFace(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A text file, a folder of `.txt` files, or a folder of token shards (from `moegrad
    /// data prepare`, or llm.c's); empty means the bundled Shakespeare.
    pub path: String,
    pub tokenizer: TokenizerKind,
    /// BPE vocabulary size (used when `tokenizer = "bpe"` and `model.vocab_size` is 0).
    pub bpe_vocab: usize,
    /// Share of the text (its end) held out for evaluation.
    pub eval_fraction: f64,
    /// Whether the config or an override named `tokenizer`: a shard folder's tokenizer is
    /// taken as the run's only when none was named, and a named one must be the folder's.
    #[serde(skip)]
    pub tokenizer_given: bool,
    /// Resume although the data changed since the checkpoint (`--set data.allow_changed=true`):
    /// the run then continues on other tokens than an uninterrupted one. Holds for that
    /// start only: never written to a config or checkpoint.
    #[serde(skip_serializing)]
    pub allow_changed: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { path: String::new(), tokenizer: TokenizerKind::Byte, bpe_vocab: 512, eval_fraction: 0.05, tokenizer_given: false, allow_changed: false }
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
    /// How many of the latest checkpoints stay on disk: `checkpoint.safetensors` is always
    /// the newest; above 1, each is also kept as `checkpoint-<step>.safetensors` and the
    /// oldest of those beyond this many are removed.
    pub keep_checkpoints: usize,
    pub seed: u64,
    /// "f32", or "f16": matmul operands in f16 with f32 sums (tensor cores where the
    /// adapter has them), f32 master weights and optimizer state, dynamic loss scaling.
    pub precision: Precision,
    /// f16 only: the initial loss scale, and how many good steps double it.
    pub loss_scale: f32,
    pub loss_scale_growth_every: u64,
    /// Weights to start from (`moegrad train --init-from`): `hf:DIR`, a Hugging Face Llama
    /// or Mixtral folder of the same model; or a dense run's checkpoint, its weights and in
    /// each MoE layer every expert a copy of its MLP (upcycling). Left out of a written
    /// config when absent, so older runs keep their identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
    /// Early stopping: end the run after this many evaluations in a row without a new best
    /// eval loss (with a checkpoint; `best.safetensors` keeps the best). 0: never. Left out
    /// of a written config when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub patience: u64,
    /// Keep only each block's inputs in a training pass and recompute its activations in
    /// the backward pass: much less memory for one more forward pass; the same gradients.
    /// Changes how, not what, a run trains; left out of a written config when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub activation_checkpointing: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
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
            keep_checkpoints: 1,
            seed: 0,
            precision: Precision::F32,
            loss_scale: 65536.0,
            loss_scale_growth_every: 200,
            init_from: None,
            patience: 0,
            activation_checkpointing: false,
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
    /// Data-parallel training (under `mpirun`); changes how, not what, a run trains.
    pub dist: DistConfig,
}

/// How data-parallel ranks exchange gradients and check one another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistConfig {
    /// Gradients travel in buckets of about this many MB (one all-reduce each).
    pub bucket_mb: f64,
    /// Every this many steps (and at the end) the ranks compare checksums of their
    /// weights and optimizer state; 0 only at the end.
    pub check_every: u64,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig { bucket_mb: 25.0, check_every: 100 }
    }
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

/// Every leaf of `value` as `dotted.key -> value`.
fn flatten(prefix: &str, value: &toml::Value, out: &mut std::collections::BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        // An f32 key widened to f64 shows as the f32 it was (0.001, not 0.0010000000474974513).
        toml::Value::Float(f) if (*f as f32) as f64 == *f => {
            out.insert(prefix.to_string(), (*f as f32).to_string());
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.to_string());
        }
    }
}

/// Deserialises a config table; errors name the key (`model.moe.top_k`) and the source.
pub fn from_table(table: toml::Table, source: &str) -> Result<RunConfig> {
    let tokenizer_given = table.get("data").and_then(|d| d.get("tokenizer")).is_some();
    let mut config: RunConfig = serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let key = e.path().to_string();
        let message = e.into_inner().to_string();
        // A number or flag where a name belongs ("invalid type: unit variant"): read it as
        // the name it spells, so that the error lists the names the key takes.
        let as_name = message.contains("variant").then(|| named_instead(&table, &key)).flatten();
        anyhow!("config {source}: key `{key}`: {}", as_name.unwrap_or(message))
    })?;
    config.data.tokenizer_given = tokenizer_given;
    Ok(config)
}

/// The error for `key` with its value, not a string, written as one: "unknown variant
/// `1`, expected `softmax` or `sigmoid`". None when the value is a string already.
fn named_instead(table: &toml::Table, key: &str) -> Option<String> {
    let mut table = table.clone();
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop()?;
    let holder = parts.iter().try_fold(&mut table, |t, part| t.get_mut(*part)?.as_table_mut())?;
    let value = holder.get(last)?;
    if value.is_str() {
        return None;
    }
    let spelt = value.to_string();
    holder.insert(last.to_string(), toml::Value::String(spelt.clone()));
    let error = serde_path_to_error::deserialize::<_, RunConfig>(toml::Value::Table(table)).err()?;
    let why = error.into_inner().to_string();
    Some(format!("{spelt} is not a name ({})", why.lines().next().unwrap_or_default()))
}

impl RunConfig {
    /// Reads `path` (or the defaults when `None`), applies `overrides` (`key=value`), and
    /// validates the result. A file that sets nothing is refused: it reads as a mistake
    /// (an empty or truncated file), and leaving `--config` out says "the defaults" plainly.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<RunConfig> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("cannot read config {}", p.display()))?;
                let table: toml::Table = toml::from_str(&text).with_context(|| format!("config {} is not valid TOML", p.display()))?;
                if table.is_empty() {
                    bail!(
                        "config {} sets no key; give a config with [model], [data] or [train] tables, or leave --config out to train the defaults",
                        p.display()
                    );
                }
                table
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
        let mut config = from_table(table, "with the overrides")?;
        // The table spells out every key: the tokenizer was named if it was before or now.
        config.data.tokenizer_given =
            self.data.tokenizer_given || overrides.iter().any(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == "data.tokenizer"));
        Ok(config)
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
        if let TokenizerKind::Standard(s) = self.data.tokenizer {
            if self.model.vocab_size != 0 && self.model.vocab_size < s.vocab_size() {
                bail!(
                    "config: model.vocab_size = {} is smaller than the {} tokens of {} (leave it out for {})",
                    self.model.vocab_size,
                    s.vocab_size(),
                    s.name(),
                    padded_vocab(s.vocab_size())
                );
            }
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
        if !(self.dist.bucket_mb > 0.0 && self.dist.bucket_mb.is_finite()) {
            bail!("config: dist.bucket_mb = {} must be positive and finite", self.dist.bucket_mb);
        }
        if !(t.lr > 0.0 && t.lr.is_finite() && t.min_lr >= 0.0 && t.min_lr <= t.lr) {
            bail!("config: train.lr = {} must be positive and finite, and train.min_lr = {} in [0, train.lr]", t.lr, t.min_lr);
        }
        let unit = |v: f32| (0.0..1.0).contains(&v);
        for (key, v, fits, range) in [
            ("train.beta1", t.beta1, unit(t.beta1), "[0, 1)"),
            ("train.beta2", t.beta2, unit(t.beta2), "[0, 1)"),
            ("train.eps", t.eps, t.eps > 0.0 && unit(t.eps), "(0, 1)"),
            ("train.weight_decay", t.weight_decay, t.weight_decay >= 0.0 && t.weight_decay.is_finite(), "[0, inf)"),
        ] {
            if !fits {
                bail!("config: {key} = {v} must be in {range}");
            }
        }
        if t.keep_checkpoints == 0 {
            bail!("config: train.keep_checkpoints must be at least 1 (the latest checkpoint is always kept)");
        }
        if t.warmup > t.steps {
            bail!("config: train.warmup = {} exceeds train.steps = {}", t.warmup, t.steps);
        }
        if !(0.0..=1.0).contains(&t.decay_fraction) {
            bail!("config: train.decay_fraction = {} must be in [0, 1]", t.decay_fraction);
        }
        if !(t.clip >= 0.0 && t.clip.is_finite()) {
            bail!("config: train.clip = {} must be 0 (off) or positive and finite", t.clip);
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

    /// A short hash that names this config up to what does not change a run: two configs
    /// with the same hash train the same run. The vocabulary counts as asked for (its
    /// size filled in from the tokenizer hashes as left 0), and `data.bpe_vocab` only with
    /// a BPE tokenizer.
    pub fn identity_hash(&self) -> String {
        let text = toml::to_string(&self.identity()).expect("a config serialises");
        format!("{:08x}", crc32fast::hash(text.as_bytes()))
    }

    fn identity(&self) -> RunConfig {
        let mut c = self.clone();
        // What a run resolves (the vocabulary from the tokenizer) is put back as asked.
        c.data.bpe_vocab = match c.data.tokenizer {
            TokenizerKind::Bpe => c.bpe_vocab(),
            _ => DataConfig::default().bpe_vocab,
        };
        c.model.vocab_size = 0;
        // Any world size, bucket size or check interval trains the same model.
        c.dist = DistConfig::default();
        c
    }

    /// The keys whose values differ between this config and `other`, as
    /// `key: this vs other` lines (up to what `identity_hash` ignores).
    pub fn differences(&self, other: &RunConfig) -> Vec<String> {
        let flat = |c: &RunConfig| {
            let mut out = std::collections::BTreeMap::new();
            flatten("", &toml::Value::try_from(c.identity()).expect("a config serialises"), &mut out);
            out
        };
        let (a, b) = (flat(self), flat(other));
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
        keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(|k| format!("{k}: {} vs {}", show(a.get(k)), show(b.get(k)))).collect()
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
