//! The mixture-of-experts feed-forward block: TopK, Default MoE or DenseMixer.
//!
//! Router logits `x W_r` (no bias, always in f32) give scores s: softmax probabilities or
//! DeepSeek-V3's sigmoids. Each token runs its top-k experts A (chosen by score, plus a
//! per-expert selection bias under `balance = "bias"`) in one grouped matmul per
//! projection (no loop over experts) and gets `y = sum_{i in A} g_i E_i(x)`; with a
//! capacity factor the lowest-scored slots beyond an expert's room get g = 0. Shared
//! experts, run by every token, are added (DeepSeek-MoE).
//!
//! The dense-gradient family gives the router a gradient for the experts a token skipped:
//! - Default MoE adds `sum_{i not in A} s_i D_i`, where D_i, a constant to autodiff, stands
//!   for expert i's output: the EMA of its mean routed output (the training step moves it
//!   after the backward pass, which still needs the old D, from `MoeStats::output_sums`,
//!   which data-parallel ranks add up first), the current batch's mean, or an EMA of its
//!   outputs weighted by their router probabilities;
//! - DenseMixer runs every expert on every token and combines them with the gate
//!   `stop(g) + s - stop(s)`: TopK's value, and the true output of every expert in the
//!   router's gradient (a straight-through estimator), at dense cost.

use moegrad_core::ops::{
    bias_balance_update, capacity_keep, combine_slots, expert_capacity, expert_output_ema, expert_output_sums, expert_output_sums_weighted, gather_slots,
    grouped_matmul, load_balancing_loss, plan_every_expert, plan_routing, route_scored, scatter_choices, selection_mask, Precision, RouterOptions, Routing,
    Score,
};
use moegrad_core::{no_grad, Device, Module, Result, Tensor, Visitor};
use rand::Rng;

use crate::config::{Balance, DefaultEstimator, FfnKind, MoeConfig, RouterScore};
use crate::ffn::{activate, input_width, DenseFfn};
use crate::init;

#[derive(Clone)]
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
    /// `balance = "bias"`: `[E]` the selection bias, model state (saved, not trained).
    pub selection_bias: Tensor,
    /// The shared experts as one MLP: S experts of width h summed are one MLP of width S h.
    pub shared: Option<DenseFfn>,
}

/// What one MoE layer reports for a forward pass; all on the GPU until logged.
pub struct MoeStats {
    /// `[E]` fraction of routed slots that went to each expert.
    pub load: Tensor,
    /// `[E]` the loads over a whole training step of several micro-batches (their mean),
    /// set by the step for `apply` and the log; None for a single pass.
    pub load_over_step: Option<Tensor>,
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
    /// `[]` slots dropped for lack of capacity, when a capacity factor is set.
    pub dropped: Option<Tensor>,
    /// Default MoE in training: `[E, d + 1]`, each expert's sum of its outputs in this
    /// pass and their count (`expert_output_sums`), for `MoeFfn::apply` once the backward
    /// pass is done.
    pub output_sums: Option<Tensor>,
}

/// The widths of an MoE layer.
#[derive(Clone, Copy, Debug)]
pub struct MoeWidths {
    pub d: usize,
    /// Each routed expert's hidden width.
    pub expert_hidden: usize,
    /// Each shared expert's hidden width.
    pub shared_hidden: usize,
}

impl MoeStats {
    /// The step's expert loads: over all its micro-batches where there were several.
    pub fn step_load(&self) -> &Tensor {
        self.load_over_step.as_ref().unwrap_or(&self.load)
    }
}

impl MoeFfn {
    pub fn new(device: &Device, kind: FfnKind, widths: MoeWidths, config: &MoeConfig, out_std: f32, rng: &mut impl Rng) -> Result<Self> {
        let (e, d, hidden) = (config.experts, widths.d, widths.expert_hidden);
        let router = init::normal(device, &[d, e], init::STD, rng)?;
        let w_in = init::normal(device, &[e, d, input_width(hidden, config.activation)], init::STD, rng)?;
        let w_out = init::normal(device, &[e, hidden, d], out_std, rng)?;
        let shared_width = config.shared_experts * widths.shared_hidden;
        let shared = (shared_width > 0).then(|| DenseFfn::new(device, d, shared_width, config.activation, out_std, rng)).transpose()?;
        Ok(MoeFfn {
            kind,
            config: config.clone(),
            router,
            w_in,
            w_out,
            defaults: Tensor::zeros(device, &[e, d])?,
            selection_bias: Tensor::zeros(device, &[e])?,
            shared,
        })
    }

    /// A layer from existing tensors (`router` `[d, E]`, `w_in` `[E, d, _]`, `w_out`
    /// `[E, hidden, d]`, `defaults` `[E, d]`), with a zero selection bias and no shared
    /// experts.
    pub fn from_parts(kind: FfnKind, config: &MoeConfig, router: Tensor, w_in: Tensor, w_out: Tensor, defaults: Tensor) -> Result<Self> {
        let selection_bias = Tensor::zeros(router.device(), &[config.experts])?;
        Ok(MoeFfn { kind, config: config.clone(), router, w_in, w_out, defaults, selection_bias, shared: None })
    }

    /// The routed experts on their slots' rows `x` in expert order.
    fn experts(&self, rows: &Tensor, plan: &Routing) -> Tensor {
        let hidden = activate(&grouped_matmul(rows, &self.w_in, &plan.offsets), self.config.activation);
        grouped_matmul(&hidden, &self.w_out, &plan.offsets)
    }

    /// `x` `[tokens, d]` -> `[tokens, d]`. In training the Default MoE also returns the
    /// sums of its expert outputs, for the update of its defaults (`MoeStats::output_sums`).
    pub fn forward(&self, x: &Tensor, train: bool) -> (Tensor, MoeStats) {
        let c = &self.config;
        let (tokens, experts, k) = (x.shape()[0], c.experts, c.top_k);
        // Routing decisions stay in f32 whatever the matmul precision.
        let logits = x.device().with_policy(|p| p.precision = Precision::F32, || x.matmul(&self.router));
        let score = match c.score {
            RouterScore::Softmax => Score::Softmax,
            RouterScore::Sigmoid => Score::Sigmoid,
        };
        let renormalize = c.score == RouterScore::Sigmoid || (c.renormalize && self.kind != FfnKind::Default);
        let selection_bias = (c.balance == Balance::Bias).then_some(&self.selection_bias);
        let (routed, router_stats) = route_scored(&logits, &RouterOptions { k, score, renormalize, selection_bias });
        let plan = plan_routing(&routed.indices, experts);
        let keep = c.capacity_factor.map(|f| capacity_keep(&routed.probs, &routed.indices, &plan, expert_capacity(f, tokens, k, experts)));
        let weights = keep.as_ref().map_or_else(|| routed.weights.clone(), |keep| routed.weights.mul(keep));
        let dropped = keep.as_ref().map(|keep| no_grad(|| keep.sum_all().neg().add_scalar((tokens * k) as f32)));
        let mut output_sums = None;
        let mut y = if self.kind == FfnKind::Densemixer {
            // Every token through every expert; the gate's value is TopK's, its gradient
            // reaches every score.
            let dense_plan = plan_every_expert(x.device(), tokens, experts);
            let outputs = self.experts(&gather_slots(x, &dense_plan), &dense_plan);
            let chosen = no_grad(|| scatter_choices(&weights, &routed.indices, experts));
            let gate = chosen.add(&routed.probs.sub(&routed.probs.detach()));
            combine_slots(&outputs, &gate, &dense_plan)
        } else {
            let expert_out = self.experts(&gather_slots(x, &plan), &plan); // [tokens * k, d], expert order
            let y = combine_slots(&expert_out, &weights, &plan);
            if self.kind != FfnKind::Default {
                y
            } else {
                let (sums, defaults) = self.estimate_defaults(&expert_out, &plan, &weights, train);
                output_sums = sums;
                // A dropped expert counts as skipped: its default stands in for it.
                let chosen =
                    no_grad(|| keep.as_ref().map_or_else(|| selection_mask(&routed.indices, experts), |keep| scatter_choices(keep, &routed.indices, experts)));
                let skipped = chosen.neg().add_scalar(1.0); // [tokens, E], constant
                let default_term = routed.probs.mul(&skipped).matmul(&defaults);
                if c.default_backward_only {
                    y.add(&default_term.sub(&default_term.detach()))
                } else {
                    y.add(&default_term)
                }
            }
        };
        if let Some(shared) = &self.shared {
            y = y.add(&shared.forward(x));
        }
        let balance = load_balancing_loss(&routed.probs, &plan, c.aux_loss_coef);
        let aux = c.balance == Balance::Aux && c.aux_loss_coef > 0.0;
        let (load, prob_sums, aux_loss) = (balance.load, balance.prob_sums, aux.then_some(balance.loss));
        let z_loss = (c.z_loss_coef > 0.0).then(|| router_stats.log_normalizer.square().sum_all().mul_scalar(c.z_loss_coef / tokens as f32));
        let entropy = no_grad(|| router_stats.entropy.mean_all());
        (y, MoeStats { load, load_over_step: None, prob_sums, tokens, entropy, aux_loss, z_loss, dropped, output_sums })
    }

    /// The Default MoE's defaults for this pass, and in training the sums its update
    /// needs: (sums, defaults). The batch mean is this pass's own (evaluation included).
    fn estimate_defaults(&self, expert_out: &Tensor, plan: &Routing, weights: &Tensor, train: bool) -> (Option<Tensor>, Tensor) {
        no_grad(|| match self.config.default_estimator {
            DefaultEstimator::Ema => (train.then(|| expert_output_sums(expert_out, &plan.offsets)), self.defaults.clone()),
            DefaultEstimator::ProbWeightedEma => (train.then(|| expert_output_sums_weighted(expert_out, plan, weights)), self.defaults.clone()),
            DefaultEstimator::BatchMean => {
                let sums = expert_output_sums(expert_out, &plan.offsets);
                let means = expert_output_ema(&self.defaults, &sums, 0.0);
                (train.then_some(sums), means)
            }
        })
    }

    /// After a training step: moves the default vectors by the EMA of the expert outputs
    /// the pass summed (`MoeStats::output_sums`; the batch-mean estimator keeps the last
    /// means), and the selection bias towards even loads. Nothing for an evaluation pass.
    pub fn apply(&mut self, stats: &MoeStats) {
        let c = &self.config;
        if let Some(sums) = &stats.output_sums {
            let beta = if c.default_estimator == DefaultEstimator::BatchMean { 0.0 } else { c.beta };
            self.defaults = no_grad(|| expert_output_ema(&self.defaults, sums, beta));
        }
        if c.balance == Balance::Bias {
            self.selection_bias = no_grad(|| bias_balance_update(&self.selection_bias, stats.step_load(), c.bias_rate));
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
        if self.config.balance == Balance::Bias {
            v.state("selection_bias", &self.selection_bias);
        }
        if let Some(shared) = &self.shared {
            v.module("shared", shared);
        }
    }
}
