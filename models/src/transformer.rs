//! The decoder-only transformer: token embedding, `layers` pre-norm blocks (RMSNorm,
//! causal attention with rotary positions, RMSNorm, a dense or MoE feed-forward block),
//! a final RMSNorm and the output projection (tied to the embedding or not).

use moegrad_core::ops::{add_rms_norm, embedding, rms_norm, RopeTable};
use moegrad_core::{checkpoint, Device, Module, Result, Tensor, Visitor};
use rand::Rng;

use crate::attention::{LayerCache, SelfAttention};
use crate::config::{FfnKind, ModelConfig};
use crate::ffn::DenseFfn;
use crate::init;
use crate::moe::{MoeFfn, MoeStats, MoeWidths};

#[derive(Clone)]
pub enum Ffn {
    Dense(DenseFfn),
    Moe(MoeFfn),
}

#[derive(Clone)]
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
    /// Training passes keep only each block's inputs and recompute its activations in the
    /// backward pass (`train.activation_checkpointing`): less memory, one more forward.
    pub activation_checkpointing: bool,
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
                    kind => {
                        let widths = MoeWidths { d, expert_hidden: config.expert_hidden(), shared_hidden: config.shared_hidden() };
                        Ffn::Moe(MoeFfn::new(device, kind, widths, &config.moe, out_std, rng)?)
                    }
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
            activation_checkpointing: false,
            rope: RopeTable::new(device, config.context, config.head_dim(), config.rope_base)?,
        })
    }

    /// Logits for `ids` (u32 `[batch, t]`). With `train`, Default-MoE layers return their
    /// default-vector updates in `Output::moe`, for `apply` after the step.
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
            let (next, delta, stats) = if train && self.activation_checkpointing && layer_cache.is_none() {
                checkpointed_block(block, &self.rope, eps, batch, &x, pending.take())
            } else {
                block.forward(&self.rope, eps, batch, &x, pending.take().as_ref(), train, layer_cache)
            };
            (x, pending) = (next, Some(delta));
            moe.extend(stats);
        }
        let (_, x) = residual_norm(&x, pending.as_ref(), &self.final_norm, eps);
        let logits = match &self.lm_head {
            Some(w) => x.matmul(w),
            None => x.matmul_t(&self.embed, false, true),
        };
        Output { logits, moe }
    }

    /// Makes the default vectors a training pass returned current in every Default-MoE
    /// layer (`moe` is `Output::moe`, in layer order); the step calls it after the update.
    pub fn apply(&mut self, moe: &[MoeStats]) {
        let layers = self.blocks.iter_mut().filter_map(|b| match &mut b.ffn {
            Ffn::Moe(m) => Some(m),
            Ffn::Dense(_) => None,
        });
        for (layer, stats) in layers.zip(moe) {
            layer.apply(stats);
        }
    }
}

impl Block {
    /// The block on the residual stream `x` plus the previous block's pending output
    /// `delta`: (the stream, this block's output to add, its MoE statistics).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        rope: &RopeTable,
        eps: f32,
        batch: usize,
        x: &Tensor,
        delta: Option<&Tensor>,
        train: bool,
        cache: Option<&mut LayerCache>,
    ) -> (Tensor, Tensor, Option<MoeStats>) {
        let (x, normed) = residual_norm(x, delta, &self.attn_norm, eps);
        let attn_out = self.attn.forward(&normed, batch, rope, cache);
        let (x, h) = add_rms_norm(&x, &attn_out, &self.ffn_norm, eps);
        match &self.ffn {
            Ffn::Dense(ffn) => (x, ffn.forward(&h), None),
            Ffn::Moe(ffn) => {
                let (y, stats) = ffn.forward(&h, train);
                (x, y, Some(stats))
            }
        }
    }
}

/// A training pass through `block` that keeps only its inputs: the stream, the output
/// and the MoE losses are the checkpoint's outputs (recomputed in the backward pass); the
/// statistics come from the first run.
fn checkpointed_block(block: &Block, rope: &RopeTable, eps: f32, batch: usize, x: &Tensor, delta: Option<Tensor>) -> (Tensor, Tensor, Option<MoeStats>) {
    let (block, rope) = (block.clone(), rope.clone());
    let inputs: Vec<&Tensor> = std::iter::once(x).chain(delta.as_ref()).collect();
    let (outputs, stats) = checkpoint(&inputs, move |inputs| {
        let (x, y, stats) = block.forward(&rope, eps, batch, &inputs[0], inputs.get(1), true, None);
        let losses = stats.iter().flat_map(|s| s.aux_loss.iter().chain(&s.z_loss)).cloned();
        (std::iter::once(x).chain([y]).chain(losses).collect(), stats)
    });
    let mut outputs = outputs.into_iter();
    let (x, y) = (outputs.next().expect("the stream"), outputs.next().expect("the output"));
    let stats = stats.map(|mut s| {
        // The tracked losses replace the first run's, which the tape does not know.
        s.aux_loss = s.aux_loss.map(|_| outputs.next().expect("the aux loss"));
        s.z_loss = s.z_loss.map(|_| outputs.next().expect("the z-loss"));
        s
    });
    (x, y, stats)
}

impl Module for Block {
    fn visit(&self, v: &mut Visitor) {
        v.parameter("attn_norm", &self.attn_norm);
        v.parameter("ffn_norm", &self.ffn_norm);
        v.module("attn", &self.attn);
        match &self.ffn {
            Ffn::Dense(f) => v.module("ffn", f),
            Ffn::Moe(f) => v.module("ffn", f),
        }
    }
}

/// Names are checkpoint keys: `embed`, `final_norm`, `lm_head`, `blocks.{i}.attn.wqkv`,
/// `blocks.{i}.ffn.defaults` (state), ...
impl Module for Transformer {
    fn visit(&self, v: &mut Visitor) {
        v.parameter("embed", &self.embed);
        v.parameter("final_norm", &self.final_norm);
        if let Some(w) = &self.lm_head {
            v.parameter("lm_head", w);
        }
        v.module("blocks", self.blocks.as_slice());
    }
}

/// `(x + delta, rms_norm(x + delta))` in one kernel, or `(x, rms_norm(x))` without a delta.
fn residual_norm(x: &Tensor, delta: Option<&Tensor>, weight: &Tensor, eps: f32) -> (Tensor, Tensor) {
    match delta {
        Some(d) => add_rms_norm(x, d, weight, eps),
        None => (x.clone(), rms_norm(x, weight, eps)),
    }
}
