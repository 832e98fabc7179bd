//! The decoder-only transformer: token embedding, `layers` pre-norm blocks (RMSNorm,
//! causal attention with rotary positions, RMSNorm, a dense or MoE feed-forward block),
//! a final RMSNorm and the output projection (tied to the embedding or not).

use std::collections::BTreeMap;

use moegrad_engine::{Device, Result, Tensor};
use moegrad_ops::{add_rms_norm, embedding, rms_norm, RopeTable, TensorOps};
use rand::Rng;

use crate::attention::{LayerCache, SelfAttention};
use crate::config::{FfnKind, ModelConfig};
use crate::ffn::DenseFfn;
use crate::init;
use crate::moe::{MoeFfn, MoeStats};

pub enum Ffn {
    Dense(DenseFfn),
    Moe(MoeFfn),
}

pub struct Block {
    pub attn_norm: Tensor,
    pub attn: SelfAttention,
    pub ffn_norm: Tensor,
    pub ffn: Ffn,
}

pub struct Transformer {
    pub config: ModelConfig,
    /// `[vocab, d]`.
    pub embed: Tensor,
    pub blocks: Vec<Block>,
    pub final_norm: Tensor,
    /// `[d, vocab]` when embeddings are untied.
    pub lm_head: Option<Tensor>,
    rope: RopeTable,
}

/// The result of a forward pass over `[batch, t]` tokens.
pub struct Output {
    /// `[batch * t, vocab]`.
    pub logits: Tensor,
    /// Per MoE layer (in layer order): its statistics and losses.
    pub moe: Vec<MoeStats>,
}

impl Output {
    /// The sum of every MoE layer's auxiliary and z-losses, if any is enabled.
    pub fn aux_loss(&self) -> Option<Tensor> {
        self.moe.iter().flat_map(|s| s.aux_loss.iter().chain(&s.z_loss)).cloned().reduce(|a, b| a.add(&b))
    }
}

/// One attention cache per layer, for generation.
pub type KvCache = Vec<LayerCache>;

impl Transformer {
    /// A freshly initialised model; `config` must have passed `validate`.
    pub fn new(device: &Device, config: &ModelConfig, rng: &mut impl Rng) -> Result<Self> {
        let (d, v) = (config.d_model, config.vocab_size);
        let out_std = init::STD / (2.0 * config.layers as f32).sqrt();
        let blocks = config
            .layer_kinds()
            .into_iter()
            .map(|kind| {
                let ffn = match kind {
                    FfnKind::Dense => Ffn::Dense(DenseFfn::new(device, d, config.dense_hidden(), config.dense.activation, out_std, rng)?),
                    kind => Ffn::Moe(MoeFfn::new(device, kind, d, config.expert_hidden(), &config.moe, out_std, rng)?),
                };
                Ok(Block {
                    attn_norm: init::ones(device, &[d])?,
                    attn: SelfAttention::new(device, d, config.heads, config.head_dim(), out_std, rng)?,
                    ffn_norm: init::ones(device, &[d])?,
                    ffn,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Transformer {
            config: config.clone(),
            embed: init::normal(device, &[v, d], init::STD, rng)?,
            blocks,
            final_norm: init::ones(device, &[d])?,
            lm_head: if config.tied_embeddings { None } else { Some(init::normal(device, &[d, v], init::STD, rng)?) },
            rope: RopeTable::new(device, config.context, config.head_dim(), config.rope_base)?,
        })
    }

    /// Logits for `ids` (u32 `[batch, t]`). With `train`, Default-MoE layers prepare their
    /// default-vector updates (commit them with `commit_defaults` after the step).
    pub fn forward(&self, ids: &Tensor, train: bool) -> Output {
        self.run(ids, train, None)
    }

    /// Like `forward` in evaluation mode, continuing the sequences held in `cache`.
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Tensor {
        if cache.is_empty() {
            cache.resize(self.blocks.len(), LayerCache::default());
        }
        self.run(ids, false, Some(cache)).logits
    }

    fn run(&self, ids: &Tensor, train: bool, mut cache: Option<&mut KvCache>) -> Output {
        assert_eq!(ids.rank(), 2, "transformer: ids must be [batch, t], got {:?}", ids.shape());
        let (batch, t) = (ids.shape()[0], ids.shape()[1]);
        let past = cache.as_ref().map_or(0, |c| c[0].len());
        assert!(past + t <= self.config.context, "transformer: {} positions exceed the context of {}", past + t, self.config.context);
        let eps = self.config.norm_eps;
        let mut x = embedding(&self.embed, ids).reshape(&[batch * t, self.config.d_model]);
        let mut moe = Vec::new();
        // A block's FFN output joins the residual stream in the next norm's kernel.
        let mut pending: Option<Tensor> = None;
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c[i]);
            let normed;
            (x, normed) = residual_norm(&x, pending.take().as_ref(), &block.attn_norm, eps);
            let attn_out = block.attn.forward(&normed, batch, &self.rope, layer_cache);
            let h;
            (x, h) = add_rms_norm(&x, &attn_out, &block.ffn_norm, eps);
            pending = Some(match &block.ffn {
                Ffn::Dense(ffn) => ffn.forward(&h),
                Ffn::Moe(ffn) => {
                    let (y, stats) = ffn.forward(&h, train);
                    moe.push(stats);
                    y
                }
            });
        }
        let (_, x) = residual_norm(&x, pending.as_ref(), &self.final_norm, eps);
        let logits = match &self.lm_head {
            Some(w) => x.matmul(w),
            None => x.matmul_t(&self.embed, false, true),
        };
        Output { logits, moe }
    }

    /// Makes every Default-MoE layer's prepared default vectors current.
    pub fn commit_defaults(&self) {
        for block in &self.blocks {
            if let Ffn::Moe(m) = &block.ffn {
                m.commit_defaults();
            }
        }
    }

    /// Every trainable tensor under a stable name (checkpoint keys).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("embed".to_string(), self.embed.clone()), ("final_norm".to_string(), self.final_norm.clone())];
        if let Some(w) = &self.lm_head {
            out.push(("lm_head".into(), w.clone()));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            out.push((format!("blocks.{i}.attn_norm"), b.attn_norm.clone()));
            out.push((format!("blocks.{i}.ffn_norm"), b.ffn_norm.clone()));
            out.extend(b.attn.parameters().into_iter().map(|(n, t)| (format!("blocks.{i}.attn.{n}"), t)));
            let ffn = match &b.ffn {
                Ffn::Dense(f) => f.parameters(),
                Ffn::Moe(f) => f.parameters(),
            };
            out.extend(ffn.into_iter().map(|(n, t)| (format!("blocks.{i}.ffn.{n}"), t)));
        }
        out
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// Non-trainable state: the Default-MoE default vectors.
    pub fn named_state(&self) -> Vec<(String, Tensor)> {
        self.blocks
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match &b.ffn {
                Ffn::Moe(m) if m.kind == FfnKind::Default => Some((format!("blocks.{i}.ffn.defaults"), m.defaults.lock().unwrap().clone())),
                _ => None,
            })
            .collect()
    }

    /// Replaces the default vectors (from a checkpoint); names as in `named_state`.
    pub fn set_state(&self, state: &BTreeMap<String, Tensor>) {
        for (i, b) in self.blocks.iter().enumerate() {
            if let (Ffn::Moe(m), Some(t)) = (&b.ffn, state.get(&format!("blocks.{i}.ffn.defaults"))) {
                *m.defaults.lock().unwrap() = t.clone();
            }
        }
    }
}

/// `(x + delta, rms_norm(x + delta))` in one kernel, or `(x, rms_norm(x))` without a delta.
fn residual_norm(x: &Tensor, delta: Option<&Tensor>, weight: &Tensor, eps: f32) -> (Tensor, Tensor) {
    match delta {
        Some(d) => add_rms_norm(x, d, weight, eps),
        None => (x.clone(), rms_norm(x, weight, eps)),
    }
}
