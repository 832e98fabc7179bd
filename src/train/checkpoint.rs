//! Checkpoints: one safetensors file holding the parameters, the optimizer's moments and
//! the Default-MoE vectors, with the run's state (config, tokenizer, step, optimizer
//! steps, data position) as JSON in its metadata. Written to a temporary file and renamed
//! into place, so a crash mid-write never leaves a broken checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use moegrad_core::ops::AdamW;
use moegrad_core::{Module, Tensor};
use moegrad_models::Transformer;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::train::config::RunConfig;
use crate::train::loss_scale::LossScaler;
use crate::train::tokenizer::Tokenizer;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const META_KEY: &str = "moegrad";
const FORMAT: u32 = 1;

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
}

/// A checkpoint read from disk, its tensors still on the host.
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Writes `path` atomically.
pub fn save(path: &Path, meta: &CheckpointMeta, model: &Transformer, opt: &AdamW) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = model.named_parameters().into_iter().map(|(n, t)| (format!("param.{n}"), t)).collect();
    for slot in opt.slots() {
        named.push((format!("adam_m.{}", slot.name), slot.m.clone()));
        named.push((format!("adam_v.{}", slot.name), slot.v.clone()));
    }
    named.extend(model.named_state().into_iter().map(|(n, t)| (format!("state.{n}"), t)));
    let host: Vec<(String, Vec<usize>, Vec<u8>)> =
        named.into_iter().map(|(n, t)| Ok((n, t.shape().to_vec(), bytemuck::cast_slice(&t.to_vec()?).to_vec()))).collect::<Result<_>>()?;
    let views = host
        .iter()
        .map(|(n, shape, bytes)| Ok((n.as_str(), safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([(META_KEY.to_string(), serde_json::to_string(meta)?)]);
    let bytes = safetensors::serialize(views, Some(metadata))?;
    let tmp = path.with_extension("safetensors.tmp");
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move the checkpoint into {}", path.display()))?;
    Ok(())
}

impl Checkpoint {
    /// Reads and checks a checkpoint file, with an error that says what is wrong with it.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("checkpoint {} is corrupt or not a safetensors file ({e})", path.display()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| anyhow!("checkpoint {} has a corrupt header ({e})", path.display()))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| anyhow!("{} is a safetensors file but not a moegrad checkpoint (no {META_KEY:?} metadata)", path.display()))?;
        let meta: CheckpointMeta = serde_json::from_str(json).map_err(|e| anyhow!("checkpoint {} has unreadable run state ({e})", path.display()))?;
        if meta.format != FORMAT {
            bail!("checkpoint {} has format {}, this moegrad reads format {FORMAT}", path.display(), meta.format);
        }
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                bail!("checkpoint {}: tensor {name} is {:?}, expected f32", path.display(), view.dtype());
            }
            tensors.insert(name, (view.shape().to_vec(), bytemuck::pod_collect_to_vec::<u8, f32>(view.data())));
        }
        Ok(Checkpoint { meta, tensors })
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

    fn get(&self, key: &str, shape: &[usize]) -> Result<&[f32]> {
        let (have, data) = self.tensors.get(key).ok_or_else(|| anyhow!("the checkpoint lacks tensor {key} (was it written for another model?)"))?;
        if have != shape {
            bail!("checkpoint tensor {key} has shape {have:?}, the model expects {shape:?}");
        }
        Ok(data)
    }

    /// Copies the parameters and Default-MoE vectors into `model`, and the moments into
    /// `opt` when given, each by its name.
    pub fn restore(&self, model: &Transformer, opt: Option<&mut AdamW>) -> Result<()> {
        for (name, p) in model.named_parameters() {
            p.write(self.get(&format!("param.{name}"), p.shape())?)?;
        }
        for (name, t) in model.named_state() {
            t.write(self.get(&format!("state.{name}"), t.shape())?)?;
        }
        if let Some(opt) = opt {
            for slot in opt.slots() {
                slot.m.write(self.get(&format!("adam_m.{}", slot.name), slot.m.shape())?)?;
                slot.v.write(self.get(&format!("adam_v.{}", slot.name), slot.v.shape())?)?;
            }
            opt.step_count = self.meta.step;
        }
        Ok(())
    }
}
