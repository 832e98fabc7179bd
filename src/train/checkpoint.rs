//! Checkpoints: one safetensors file holding the parameters, the optimizer's moments and
//! the Default-MoE vectors, with the run's state (config, tokenizer, step, optimizer
//! steps, data position, the data's fingerprint) as JSON in its metadata, and a CRC-32 of
//! every tensor's name, dtype, shape and bytes beside it (safetensors itself has no
//! checksum, so a flipped bit would load silently, and one of the bytes alone would let
//! tensors swapped by name load).
//!
//! Nothing unsound is written or read: `encode` refuses NaN or infinite values, naming the
//! tensor; `Checkpoint::load` verifies every checksum, refuses non-finite values, negative
//! second moments, names that do not belong, and run state that is out of range or
//! describes a larger model than the tensors fill (before any of it sizes an
//! allocation); `restore` names each tensor whose shape is not the model's. Files are
//! written with `durable::write_atomic`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use moegrad_core::ops::AdamW;
use moegrad_core::{Module, Tensor};
use moegrad_models::{ModelConfig, Transformer};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::data::fingerprint::DataPrint;
use crate::durable::write_atomic;
use crate::research::accounting::account;
use crate::train::config::RunConfig;
use crate::train::loss_scale::LossScaler;
use crate::train::tokenizer::Tokenizer;

/// The latest checkpoint of a run, the one `--resume` continues.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The checkpoint with the lowest eval loss so far.
pub const BEST_FILE: &str = "best.safetensors";
/// Older checkpoints kept by `train.keep_checkpoints` are `checkpoint-<step>.safetensors`.
pub const KEPT_PREFIX: &str = "checkpoint-";
const META_KEY: &str = "moegrad";
/// Checksums of each tensor's name, dtype, shape and bytes together (`bound_checksum`), so
/// that tensors swapped by name with their checksums still fail.
pub const CHECKSUMS_KEY: &str = "moegrad.crc32.bound";
/// What checkpoints written before the binding hold: a CRC-32 of each tensor's bytes alone.
pub const BYTES_CHECKSUMS_KEY: &str = "moegrad.crc32";
const FORMAT: u32 = 1;

/// The file name of the kept checkpoint of `step` (zero-padded, so names sort by step).
pub fn kept_file(step: u64) -> String {
    format!("{KEPT_PREFIX}{step:09}.safetensors")
}

/// Everything besides tensors that resuming needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    /// The resolved config (vocabulary size filled in).
    pub config: RunConfig,
    pub tokenizer: Tokenizer,
    /// Optimizer steps completed; training resumes at `step + 1`. Batches derive from
    /// (seed, step), so this is also the data position.
    pub step: u64,
    pub tokens_seen: u64,
    pub eval_loss: Option<f32>,
    /// Training wall time so far, over all resumes (seconds).
    #[serde(default)]
    pub wall_seconds: f64,
    /// The loss scaler's state (f16 runs), so that a resumed run scales as it would have.
    #[serde(default)]
    pub loss_scaler: Option<LossScaler>,
    /// The lowest eval loss so far (the one `best.safetensors` holds).
    #[serde(default)]
    pub best_eval_loss: Option<f32>,
    /// `RunConfig::identity_hash` of the config the run was asked for, by which `compare`
    /// and `sweep` know a finished run is the one they would start.
    #[serde(default)]
    pub config_hash: Option<String>,
    /// The data-parallel ranks that wrote it (1 alone). Batches are global, so a run
    /// resumes exactly at any world size that divides `train.batch_size`.
    #[serde(default = "one_rank")]
    pub world_size: usize,
    /// Evaluations in a row without a new best eval loss, for `train.patience`.
    #[serde(default)]
    pub evals_without_improvement: u64,
    /// The data the run trained on, so that a resume on other data is caught (none in
    /// checkpoints from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataPrint>,
}

impl CheckpointMeta {
    /// The state of a model that no moegrad run trained (one read from elsewhere): step
    /// 0, nothing seen.
    pub fn new(config: RunConfig, tokenizer: Tokenizer) -> CheckpointMeta {
        CheckpointMeta {
            format: FORMAT,
            config,
            tokenizer,
            step: 0,
            tokens_seen: 0,
            eval_loss: None,
            wall_seconds: 0.0,
            loss_scaler: None,
            best_eval_loss: None,
            config_hash: None,
            world_size: 1,
            evals_without_improvement: 0,
            data: None,
        }
    }
}

fn one_rank() -> usize {
    1
}

/// A checkpoint read from disk, its tensors still on the host.
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// False for a checkpoint written before checksums were stored (its data could not be
    /// verified; `load` warns).
    pub verified: bool,
}

/// What a checkpoint stores, by name: `param.*`, `adam_m.*`, `adam_v.*`, `state.*`.
pub fn checkpoint_tensors(model: &Transformer, opt: &AdamW) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = model.named_parameters().into_iter().map(|(n, t)| (format!("param.{n}"), t)).collect();
    for slot in opt.slots() {
        named.push((format!("adam_m.{}", slot.name), slot.m.clone()));
        named.push((format!("adam_v.{}", slot.name), slot.v.clone()));
    }
    named.extend(model.named_state().into_iter().map(|(n, t)| (format!("state.{n}"), t)));
    named
}

/// A CRC-32 of what a tensor is as well as what it holds: its name, dtype and shape, then
/// its bytes.
pub fn bound_checksum(name: &str, dtype: Dtype, shape: &[usize], bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(format!("{name}\0{dtype:?}\0{shape:?}\0").as_bytes());
    hasher.update(bytes);
    hasher.finalize()
}

/// What each kind of stored tensor can hold, beyond being finite: Adam's second moment is
/// a running mean of squares, never negative.
fn check_values(name: &str, values: &[f32]) -> Result<()> {
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        bail!("tensor {name} holds {bad}");
    }
    if name.starts_with("adam_v.") {
        if let Some(bad) = values.iter().find(|v| **v < 0.0) {
            bail!("tensor {name} holds {bad}, but Adam's second moment is never negative (was another tensor stored under its name?)");
        }
    }
    Ok(())
}

/// The bytes of a checkpoint file, refused if any value is NaN or infinite.
pub fn encode(meta: &CheckpointMeta, model: &Transformer, opt: &AdamW) -> Result<Vec<u8>> {
    let mut host = Vec::new();
    for (name, t) in checkpoint_tensors(model, opt) {
        let values = t.to_vec()?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            bail!("refusing to write a checkpoint at step {}: tensor {name} holds {bad}", meta.step);
        }
        host.push((name, t.shape().to_vec(), bytemuck::cast_slice::<f32, u8>(&values).to_vec()));
    }
    let checksums: BTreeMap<&str, u32> = host.iter().map(|(n, shape, bytes)| (n.as_str(), bound_checksum(n, Dtype::F32, shape, bytes))).collect();
    let views = host
        .iter()
        .map(|(n, shape, bytes)| Ok((n.as_str(), safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([(META_KEY.to_string(), serde_json::to_string(meta)?), (CHECKSUMS_KEY.to_string(), serde_json::to_string(&checksums)?)]);
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// Writes a checkpoint to `path` atomically.
pub fn save(path: &Path, meta: &CheckpointMeta, model: &Transformer, opt: &AdamW) -> Result<()> {
    write_atomic(path, &encode(meta, model, opt)?)
}

/// Checks run state read from a file before anything is sized by it.
fn check_meta(meta: &CheckpointMeta) -> Result<()> {
    if meta.format != FORMAT {
        bail!("it has format {}, this moegrad reads format {FORMAT}", meta.format);
    }
    meta.tokenizer.validate().map_err(|e| anyhow!("its tokenizer is invalid: {e}"))?;
    let config = &meta.config;
    config.validate().and_then(|_| config.model.validate().map_err(|e| anyhow!("config: {e}"))).map_err(|e| anyhow!("its run state is invalid: {e}"))?;
    if config.model.vocab_size < meta.tokenizer.vocab_size() {
        bail!("its config has model.vocab_size = {} but its tokenizer has {} tokens", config.model.vocab_size, meta.tokenizer.vocab_size());
    }
    Ok(())
}

/// The first stored tensor that a config's model would not fit, among those whose shape
/// the config alone fixes: the embedding, the final norm and the blocks there are.
fn first_misfit(model: &ModelConfig, tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> Option<String> {
    let d = model.d_model;
    for (name, want) in [("param.embed", vec![model.vocab_size, d]), ("param.final_norm", vec![d])] {
        match tensors.get(name) {
            Some((have, _)) if *have != want => return Some(format!("tensor {name} has shape {have:?}, the config's model {want:?}")),
            None => return Some(format!("tensor {name} is missing")),
            Some(_) => {}
        }
    }
    let layers = (0..).take_while(|i| tensors.contains_key(&format!("param.blocks.{i}.attn_norm"))).count();
    (layers < model.layers).then(|| format!("the config has {} layers, the tensors {layers}: param.blocks.{layers}.* is missing", model.layers))
}

impl Checkpoint {
    /// Reads and verifies a checkpoint file, with an error that says what is wrong with it.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        Self::from_bytes(&bytes).map_err(|e| anyhow!("checkpoint {}: {e}", path.display()))
    }

    /// `load` of bytes already in memory (errors do not name a file).
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("corrupt or not a safetensors file ({e})"))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("corrupt or not a safetensors file ({e})"))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let json = metadata.get(META_KEY).ok_or_else(|| anyhow!("a safetensors file but not a moegrad checkpoint (no {META_KEY:?} metadata)"))?;
        let meta: CheckpointMeta = serde_json::from_str(json).map_err(|e| anyhow!("unreadable run state ({e})"))?;
        check_meta(&meta)?;
        // Bound checksums, or those of bytes alone in an older checkpoint.
        let (checksums, bound) = match (metadata.get(CHECKSUMS_KEY), metadata.get(BYTES_CHECKSUMS_KEY)) {
            (Some(c), _) => (Some(c), true),
            (None, c) => (c, false),
        };
        let checksums: Option<BTreeMap<String, u32>> =
            checksums.map(|c| serde_json::from_str(c).map_err(|e| anyhow!("unreadable checksums ({e})"))).transpose()?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                bail!("tensor {name} is {:?}, expected f32", view.dtype());
            }
            if let Some(sums) = &checksums {
                let stored = *sums.get(&name).ok_or_else(|| anyhow!("tensor {name} has no checksum (was the file edited?)"))?;
                let computed = match bound {
                    true => bound_checksum(&name, view.dtype(), view.shape(), view.data()),
                    false => crc32fast::hash(view.data()),
                };
                if stored != computed {
                    bail!("tensor {name} fails its checksum (stored {stored:08x}, computed {computed:08x}): the file is damaged, or its tensors were renamed or reshaped");
                }
            }
            let values = bytemuck::pod_collect_to_vec::<u8, f32>(view.data());
            check_values(&name, &values)?;
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        if let Some(lost) = checksums.iter().flat_map(|s| s.keys()).find(|n| !tensors.contains_key(*n)) {
            bail!("tensor {lost} is missing (it has a checksum but no data)");
        }
        // A config that describes more parameters than the file holds would size a model
        // no tensor here can fill: refused before anything is allocated. Any other
        // disagreement (another width, a stray tensor) is named tensor by tensor when the
        // model is built and `restore` checks each name and shape.
        let stored_params: usize = tensors.iter().filter(|(n, _)| n.starts_with("param.")).map(|(_, (_, v))| v.len()).sum();
        let expected = account(&meta.config.model).params;
        if stored_params as u64 > 0 && expected > stored_params as u64 {
            let which = first_misfit(&meta.config.model, &tensors).map_or(String::new(), |m| format!(" ({m})"));
            bail!("its config describes {expected} parameters but it stores {stored_params}{which}: the config is not the one its tensors were trained with");
        }
        Ok(Checkpoint { meta, tensors, verified: checksums.is_some() })
    }

    /// A warning to show the person loading an unverified (pre-checksum) checkpoint.
    pub fn warning(&self) -> Option<String> {
        (!self.verified).then(|| "warning: this checkpoint was written without checksums (by an older moegrad); its tensors cannot be verified".to_string())
    }

    /// Names of the stored tensors (`param.*`, `adam_m.*`, `adam_v.*`, `state.*`).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort();
        names
    }

    /// A stored tensor's values.
    pub fn values(&self, name: &str) -> Option<&[f32]> {
        self.tensors.get(name).map(|(_, v)| v.as_slice())
    }

    /// A stored tensor's shape and values.
    pub fn tensor(&self, name: &str) -> Option<(&[usize], &[f32])> {
        self.tensors.get(name).map(|(s, v)| (s.as_slice(), v.as_slice()))
    }

    /// The values of stored tensor `key`, refused by name if it is missing or has another
    /// shape than `shape`.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<&[f32]> {
        let (have, data) = self.tensors.get(key).ok_or_else(|| anyhow!("the checkpoint lacks tensor {key} (was it written for another model?)"))?;
        if have != shape {
            bail!("checkpoint tensor {key} has shape {have:?}, the model expects {shape:?}");
        }
        Ok(data)
    }

    /// Copies the parameters and Default-MoE vectors into `model`, and the moments into
    /// `opt` when given, each by its name. A stored tensor the model has no place for is
    /// refused too (a renamed or foreign tensor); without `opt` the moments are skipped.
    pub fn restore(&self, model: &Transformer, opt: Option<&mut AdamW>) -> Result<()> {
        let mut used: Vec<String> = Vec::new();
        for (name, p) in model.named_parameters() {
            let key = format!("param.{name}");
            p.write(self.get(&key, p.shape())?)?;
            used.push(key);
        }
        for (name, t) in model.named_state() {
            let key = format!("state.{name}");
            t.write(self.get(&key, t.shape())?)?;
            used.push(key);
        }
        let with_moments = opt.is_some();
        if let Some(opt) = opt {
            for slot in opt.slots() {
                let (m, v) = (format!("adam_m.{}", slot.name), format!("adam_v.{}", slot.name));
                slot.m.write(self.get(&m, slot.m.shape())?)?;
                slot.v.write(self.get(&v, slot.v.shape())?)?;
                used.extend([m, v]);
            }
            opt.step_count = self.meta.step;
        }
        let is_moment = |n: &str| n.starts_with("adam_m.") || n.starts_with("adam_v.");
        if let Some(stray) = self.names().into_iter().find(|n| !used.iter().any(|u| u == n) && (with_moments || !is_moment(n))) {
            bail!("the checkpoint holds tensor {stray}, which the model has no place for (was it written for another model?)");
        }
        Ok(())
    }
}
