//! Where a new run's weights come from (`train.init_from`, `moegrad train --init-from`):
//! a Hugging Face Llama or Mixtral folder (`hf:DIR`), the same model, every weight copied;
//! or a dense run's checkpoint, upcycled.
//!
//! Upcycling (Komatsuzaki et al., "Sparse Upcycling", 2023): an MoE run that starts from a
//! dense run's checkpoint. Every weight
//! the two models share is copied; in each layer that is MoE here and dense there, every
//! expert starts as a copy of the dense MLP, while the router and any shared experts keep
//! their fresh initialisation. The optimizer starts afresh at step 0. Everything that
//! would make a copy wrong is refused by the name of its config key.

use std::path::Path;

use anyhow::{bail, Result};
use moegrad_core::Module;
use moegrad_models::{FfnKind, Transformer};

use crate::hf::{hf_folder, HfModel};
use crate::train::checkpoint::Checkpoint;

/// A new run's starting weights.
pub enum InitFrom {
    /// A dense run's checkpoint, upcycled (or copied where the layers are dense here too).
    Dense(Box<Checkpoint>),
    /// A Hugging Face folder of the same model.
    HuggingFace(Box<HfModel>),
}

impl InitFrom {
    /// Reads what `spec` (`train.init_from`) names.
    pub fn open(spec: &str) -> Result<InitFrom> {
        Ok(match hf_folder(spec) {
            Some(dir) => InitFrom::HuggingFace(Box::new(HfModel::open(dir)?)),
            None => InitFrom::Dense(Box::new(Checkpoint::load(Path::new(spec))?)),
        })
    }

    /// The checkpoint whose tokenizer the run takes, if it is one (a Hugging Face model's
    /// tokenizer is named by `data.tokenizer`).
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match self {
            InitFrom::Dense(c) => Some(c),
            InitFrom::HuggingFace(_) => None,
        }
    }

    /// Writes the starting weights into `model`, refusing by key what does not fit.
    pub fn apply(&self, spec: &str, model: &Transformer) -> Result<()> {
        match self {
            InitFrom::Dense(source) => upcycle(source, spec, model),
            InitFrom::HuggingFace(hf) => hf.load_into(model).map_err(|e| {
                let hint = hf.dir.join(crate::hf::HF_TOKENIZER_FILE);
                match model.config.vocab_size != hf.config.vocab_size && hint.exists() {
                    true => {
                        e.context(format!("--init-from {spec}: set data.tokenizer = {:?} to train with the model's own tokenizer", hint.display().to_string()))
                    }
                    false => e.context(format!("--init-from {spec}")),
                }
            }),
        }
    }
}

/// Copies `source` (a dense run's checkpoint, read from `origin`) into `model`.
pub fn upcycle(source: &Checkpoint, origin: &str, model: &Transformer) -> Result<()> {
    let (from, to) = (&source.meta.config.model, &model.config);
    let refuse = |what: String| -> Result<()> { bail!("--init-from {origin}: {what}; upcycling copies the dense run's weights, so the two must agree") };
    for (key, there, here) in [
        ("model.d_model", from.d_model, to.d_model),
        ("model.layers", from.layers, to.layers),
        ("model.heads", from.heads, to.heads),
        ("model.head_dim", from.head_dim(), to.head_dim()),
        ("model.vocab_size", from.vocab_size, to.vocab_size),
    ] {
        if there != here {
            refuse(format!("{key} is {there} in the dense run and {here} here"))?;
        }
    }
    if from.tied_embeddings != to.tied_embeddings {
        refuse(format!("model.tied_embeddings is {} in the dense run and {} here", from.tied_embeddings, to.tied_embeddings))?;
    }
    let mut upcycled = Vec::new();
    for (i, (there, here)) in from.layer_kinds().into_iter().zip(to.layer_kinds()).enumerate() {
        match (there, here) {
            (FfnKind::Dense, FfnKind::Dense) => {}
            (FfnKind::Dense, _) => {
                if from.dense.activation != to.moe.activation {
                    refuse(format!(
                        "layer {i}'s dense MLP uses model.dense.activation = {:?} and its experts model.moe.activation = {:?}",
                        from.dense.activation, to.moe.activation
                    ))?;
                }
                if from.dense_hidden() != to.expert_hidden() {
                    refuse(format!(
                        "layer {i}'s dense MLP is {} wide (model.dense.hidden) and its experts {} (model.moe.expert_hidden)",
                        from.dense_hidden(),
                        to.expert_hidden()
                    ))?;
                }
                upcycled.push(i);
            }
            (kind, _) => refuse(format!("layer {i} of the source run is already an MoE layer (ffn {:?}); --init-from starts from a dense run", kind.name()))?,
        }
    }
    for (name, p) in model.named_parameters() {
        let layer = upcycled.iter().find(|&&i| name.starts_with(&format!("blocks.{i}.ffn.")));
        let Some(&i) = layer else {
            p.write(source.get(&format!("param.{name}"), p.shape())?)?;
            continue;
        };
        // The router and shared experts stay as initialised.
        let projection = name.trim_start_matches(&format!("blocks.{i}.ffn."));
        if matches!(projection, "w_in" | "w_out") {
            let (experts, one) = (p.shape()[0], &p.shape()[1..]);
            let dense = source.get(&format!("param.blocks.{i}.ffn.{projection}"), one)?;
            p.write(&dense.repeat(experts))?;
        }
    }
    Ok(())
}
