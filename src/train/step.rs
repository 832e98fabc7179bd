//! One optimizer step of the transformer, the one the trainer runs and the benchmark
//! times: micro-batches forward and backward (the loss scaled for f16 and divided over
//! the accumulation), the gradient norm, a clipped AdamW update unless the loss scaler
//! skips it, the Default-MoE vectors the last forward pass returned made current, and the
//! selection biases moved by the step's expert loads.
//! Nothing is read back but, in f16 runs, the gradient norm the scaler needs.
//!
//! Data-parallel ranks (`Exchange`) run the same step on their share of the windows and
//! make global whatever crosses tokens: the expert loads before each backward pass, the
//! gradients in buckets during the last one, the Default-MoE output sums before the
//! update, the loss scaler's overflow decision.

use anyhow::Result;
use moegrad_core::ops::{cross_entropy, grad_norm, AdamW, CrossEntropyOptions};
use moegrad_core::{no_grad, Tensor};
use moegrad_models::{MoeStats, Transformer};

use crate::dist::moe_sync::{make_loads_global, make_output_sums_global};
use crate::dist::{BucketStats, Collective, GradientBuckets};
use crate::train::data::Batch;
use crate::train::loss_scale::LossScaler;

/// What a step needs besides the model, the optimizer and the data.
#[derive(Clone, Copy, Debug)]
pub struct StepSettings {
    pub lr: f32,
    /// Clip the gradient norm to this (0: no clipping).
    pub clip: f32,
    /// Micro-batches whose gradients are summed before the update.
    pub grad_accum: usize,
}

/// What a step leaves on the GPU for the caller to read when it needs to.
pub struct StepOutput {
    /// The sum of the micro-batches' mean cross-entropies (divide by `grad_accum`).
    pub loss_sum: Tensor,
    /// `[norm, scale]` from `grad_norm`, when any parameter had a gradient.
    pub grad_norm: Option<Tensor>,
    /// The last micro-batch's MoE statistics, per MoE layer, with the step's loads (the
    /// mean over its micro-batches) and dropped slots (their sum).
    pub moe: Vec<MoeStats>,
    /// Whether the update was applied (the loss scaler skips steps that overflowed).
    pub applied: bool,
    /// Where the gradient exchange spent its time (data-parallel steps).
    pub exchange: Option<BucketStats>,
}

/// The ranks a data-parallel step shares its gradients with, and its buckets.
pub struct Exchange<'a> {
    pub comm: &'a dyn Collective,
    pub buckets: &'a mut GradientBuckets,
}

/// One step over `grad_accum` micro-batches from `batch(micro)`, with `scaler` in f16 runs,
/// and with `exchange` when this is one rank of several.
pub fn train_step(
    model: &mut Transformer,
    opt: &mut AdamW,
    scaler: Option<&mut LossScaler>,
    settings: StepSettings,
    mut exchange: Option<Exchange>,
    mut batch: impl FnMut(usize) -> Result<Batch>,
) -> Result<StepOutput> {
    let loss_scale = scaler.as_ref().map_or(1.0, |s| s.scale);
    let ranks = exchange.as_ref().map_or(1, |x| x.comm.size());
    let mut loss_sum: Option<Tensor> = None;
    let mut moe: Vec<MoeStats> = Vec::new();
    // Per MoE layer: the loads and dropped slots of the micro-batches so far.
    let mut step_load: Vec<(Tensor, Option<Tensor>)> = Vec::new();
    for micro in 0..settings.grad_accum {
        let b = batch(micro)?;
        let out = model.forward(&b.inputs, true);
        let ce = cross_entropy(&out.logits, &b.targets.reshape(&[b.targets.numel()]), CrossEntropyOptions::default());
        let total = match out.aux_loss() {
            Some(aux) => ce.add(&aux),
            None => ce.clone(),
        };
        let scaled = total.mul_scalar(loss_scale / settings.grad_accum as f32);
        match exchange.as_mut() {
            Some(x) => {
                make_loads_global(x.comm, &out.moe)?;
                if micro + 1 == settings.grad_accum {
                    x.buckets.begin();
                    scaled.backward_reporting(&mut |p| x.buckets.on_final(p));
                } else {
                    scaled.backward();
                }
            }
            None => scaled.backward(),
        }
        loss_sum = Some(no_grad(|| match loss_sum.take() {
            Some(s) => s.add(&ce),
            None => ce,
        }));
        step_load = no_grad(|| match step_load.is_empty() {
            true => out.moe.iter().map(|s| (s.load.clone(), s.dropped.clone())).collect(),
            false => step_load.iter().zip(&out.moe).map(|((l, d), s)| (l.add(&s.load), d.as_ref().zip(s.dropped.as_ref()).map(|(a, b)| a.add(b)))).collect(),
        });
        moe = out.moe;
    }
    if settings.grad_accum > 1 {
        for (stats, (load, dropped)) in moe.iter_mut().zip(step_load) {
            stats.load_over_step = Some(no_grad(|| load.mul_scalar(1.0 / settings.grad_accum as f32)));
            stats.dropped = dropped;
        }
    }
    let mut exchanged = None;
    if let Some(x) = exchange.as_mut() {
        exchanged = Some(x.buckets.finish(x.comm)?);
        make_output_sums_global(x.comm, &mut moe)?;
    }
    // Clipping, loss-scale removal and the mean over ranks of their summed gradients
    // happen inside AdamW's update.
    let max_norm = if settings.clip > 0.0 { settings.clip } else { f32::INFINITY };
    let norm = grad_norm(opt.parameters(), max_norm, loss_scale * ranks as f32);
    let applied = match (scaler, &norm) {
        (Some(s), Some(n)) => {
            // Every rank skips the step or none: an overflow anywhere counts everywhere.
            let mut norm = [n.to_vec()?[0] as f64];
            if let Some(x) = &exchange {
                norm[0] = if norm[0].is_finite() { 0.0 } else { 1.0 };
                x.comm.sum_f64(&mut norm);
                norm[0] = if norm[0] == 0.0 { 1.0 } else { f64::INFINITY };
            }
            s.update(norm[0] as f32)
        }
        _ => true,
    };
    if applied {
        match &norm {
            Some(n) => opt.step_clipped(settings.lr, n),
            None => opt.step_with_lr(settings.lr),
        }
    }
    opt.zero_grad();
    // The defaults follow the forward passes' expert outputs, which an overflow of the
    // scaled gradients leaves valid: a skipped update still moves them.
    model.apply(&moe);
    let loss_sum = loss_sum.ok_or_else(|| anyhow::anyhow!("a step needs at least one micro-batch (train.grad_accum is 0)"))?;
    Ok(StepOutput { loss_sum, grad_norm: norm, moe, applied, exchange: exchanged })
}
