//! Upcycling (Komatsuzaki et al., "Sparse Upcycling", 2023): an MoE run that starts from a
//! dense run's checkpoint (`train.init_from`, `moegrad train --init-from`). Every weight
//! the two models share is copied; in each layer that is MoE here and dense there, every
//! expert starts as a copy of the dense MLP, while the router and any shared experts keep
//! their fresh initialisation. The optimizer starts afresh at step 0. Everything that
//! would make a copy wrong is refused by the name of its config key.

use anyhow::{bail, Result};
use moegrad_core::Module;
use moegrad_models::{FfnKind, Transformer};

use crate::train::checkpoint::Checkpoint;

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
