//! The mixture-of-experts feed-forward block, TopK or Default MoE.
//!
//! Router logits `x W_r` (no bias) give probabilities p = softmax; each token runs its
//! top-k experts A in one grouped matmul per projection (no loop over experts) and gets
//! `y = sum_{i in A} g_i E_i(x)`. The Default MoE adds `sum_{i not in A} p_i D_i`, where
//! D_i, expert i's running mean output, is a constant to autodiff: every router
//! probability then gets a gradient while only k experts run. Each training forward pass
//! returns the per-expert sums of this step's expert outputs (`MoeStats::output_sums`);
//! the training step moves D by their EMA after the backward pass, which still needs the
//! old D (data-parallel ranks add up their sums first).

use moegrad_core::ops::{
    combine_slots, expert_output_ema, expert_output_sums, gather_slots, grouped_matmul, load_balancing_loss, plan_routing, route_with_stats, selection_mask,
};
use moegrad_core::{no_grad, Device, Module, Result, Tensor, Visitor};
use rand::Rng;

use crate::config::{FfnKind, MoeConfig};
use crate::ffn::{activate, input_width};
use crate::init;

pub struct MoeFfn {
    pub kind: FfnKind,
    pub config: MoeConfig,
    /// `[d, E]`.
    pub router: Tensor,
    /// `[E, d, hidden]` (twice the hidden width for SwiGLU).
    pub w_in: Tensor,
    /// `[E, hidden, d]`.
    pub w_out: Tensor,
    /// Default MoE: `[E, d]` default vectors, model state (saved, not trained).
    pub defaults: Tensor,
}

/// What one MoE layer reports for a forward pass; all on the GPU until logged.
pub struct MoeStats {
    /// `[E]` fraction of routed slots that went to each expert.
    pub load: Tensor,
    /// `[E]` the router probabilities' sums over this pass's tokens.
    pub prob_sums: Tensor,
    /// The tokens of this pass.
    pub tokens: usize,
    /// Mean router entropy over tokens (nats).
    pub entropy: Tensor,
    /// `coef * E * sum_i f_i P_i`, when enabled.
    pub aux_loss: Option<Tensor>,
    /// `coef * mean(logsumexp(logits)^2)`, when enabled.
    pub z_loss: Option<Tensor>,
    /// Default MoE in training: `[E, d + 1]`, each expert's sum of its outputs in this
    /// pass and their count (`expert_output_sums`), for `MoeFfn::apply` once the backward
    /// pass is done.
    pub output_sums: Option<Tensor>,
}

impl MoeFfn {
    pub fn new(device: &Device, kind: FfnKind, d: usize, hidden: usize, config: &MoeConfig, out_std: f32, rng: &mut impl Rng) -> Result<Self> {
        let e = config.experts;
        Ok(MoeFfn {
            kind,
            config: config.clone(),
            router: init::normal(device, &[d, e], init::STD, rng)?,
            w_in: init::normal(device, &[e, d, input_width(hidden, config.activation)], init::STD, rng)?,
            w_out: init::normal(device, &[e, hidden, d], out_std, rng)?,
            defaults: Tensor::zeros(device, &[e, d])?,
        })
    }

    /// A layer from existing tensors (`router` `[d, E]`, `w_in` `[E, d, _]`, `w_out`
    /// `[E, hidden, d]`, `defaults` `[E, d]`).
    pub fn from_parts(kind: FfnKind, config: &MoeConfig, router: Tensor, w_in: Tensor, w_out: Tensor, defaults: Tensor) -> Self {
        MoeFfn { kind, config: config.clone(), router, w_in, w_out, defaults }
    }

    /// `x` `[tokens, d]` -> `[tokens, d]`. In training the Default MoE also returns the
    /// sums of its expert outputs, for the update of its defaults (`MoeStats::output_sums`).
    pub fn forward(&self, x: &Tensor, train: bool) -> (Tensor, MoeStats) {
        let c = &self.config;
        let (tokens, experts) = (x.shape()[0], c.experts);
        let logits = x.matmul(&self.router);
        let (routed, router_stats) = route_with_stats(&logits, c.top_k, c.renormalize && self.kind == FfnKind::Topk);
        let plan = plan_routing(&routed.indices, experts);
        let hidden = activate(&grouped_matmul(&gather_slots(x, &plan), &self.w_in, &plan.offsets), c.activation);
        let expert_out = grouped_matmul(&hidden, &self.w_out, &plan.offsets); // [tokens * k, d], expert order
        let mut y = combine_slots(&expert_out, &routed.weights, &plan);
        let mut output_sums = None;
        if self.kind == FfnKind::Default {
            let defaults = &self.defaults;
            let skipped = selection_mask(&routed.indices, experts).neg().add_scalar(1.0); // [tokens, E], constant
            let default_term = routed.probs.mul(&skipped).matmul(defaults);
            y = if c.default_backward_only { y.add(&default_term.sub(&default_term.detach())) } else { y.add(&default_term) };
            if train {
                output_sums = Some(no_grad(|| expert_output_sums(&expert_out, &plan.offsets)));
            }
        }
        let balance = load_balancing_loss(&routed.probs, &plan, c.aux_loss_coef);
        let (load, prob_sums, aux_loss) = (balance.load, balance.prob_sums, (c.aux_loss_coef > 0.0).then_some(balance.loss));
        let z_loss = (c.z_loss_coef > 0.0).then(|| router_stats.log_normalizer.square().sum_all().mul_scalar(c.z_loss_coef / tokens as f32));
        let entropy = no_grad(|| router_stats.entropy.mean_all());
        (y, MoeStats { load, prob_sums, tokens, entropy, aux_loss, z_loss, output_sums })
    }

    /// Moves the default vectors by the EMA of the expert outputs a training pass summed
    /// (`MoeStats::output_sums`); nothing for a TopK layer or an evaluation pass.
    pub fn apply(&mut self, stats: &MoeStats) {
        if let Some(sums) = &stats.output_sums {
            self.defaults = no_grad(|| expert_output_ema(&self.defaults, sums, self.config.beta));
        }
    }
}

impl Module for MoeFfn {
    fn visit(&self, v: &mut Visitor) {
        v.parameter("router", &self.router);
        v.parameter("w_in", &self.w_in);
        v.parameter("w_out", &self.w_out);
        if self.kind == FfnKind::Default {
            v.state("defaults", &self.defaults);
        }
    }
}
