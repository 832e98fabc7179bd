//! What the MoE layers compute over tokens, made global across ranks, so that N ranks
//! step exactly as one process with their tokens would:
//! - the expert loads f_e of the load-balancing loss, before the backward pass whose
//!   gradient they scale (one read-back for all layers, a mean over ranks, written back
//!   in place);
//! - the Default MoE's sums and counts of expert outputs, before the EMA update of the
//!   default vectors, so every rank moves them by the mean over all tokens;
//! - the router statistics of a logged step.

use anyhow::{Context, Result};
use moegrad_core::ops::concat;
use moegrad_core::{no_grad, Tensor};
use moegrad_models::MoeStats;

use crate::dist::Collective;

/// Reads back `tensors` (f32) in one copy, sums them over ranks, and returns the sums cut
/// back to each tensor's length.
fn summed(comm: &dyn Collective, tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
    let flat: Vec<Tensor> = tensors.iter().map(|t| t.alias(&[t.numel()])).collect();
    let refs: Vec<&Tensor> = flat.iter().collect();
    let mut all = no_grad(|| concat(&refs, 0)).to_vec().context("reading back MoE statistics")?;
    comm.sum_f32(&mut all);
    let mut at = 0;
    Ok(tensors
        .iter()
        .map(|t| {
            at += t.numel();
            all[at - t.numel()..at].to_vec()
        })
        .collect())
}

/// Overwrites each layer's expert loads with their mean over ranks (equal shares of
/// tokens, so the mean of the fractions is the fraction of all slots).
pub fn make_loads_global(comm: &dyn Collective, moe: &[MoeStats]) -> Result<()> {
    if comm.size() == 1 || moe.is_empty() {
        return Ok(());
    }
    let loads: Vec<&Tensor> = moe.iter().map(|s| &s.load).collect();
    let n = comm.size() as f32;
    for (load, sums) in loads.iter().zip(summed(comm, &loads)?) {
        load.write(&sums.iter().map(|v| v / n).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Replaces each Default-MoE layer's output sums and counts by their sums over ranks.
pub fn make_output_sums_global(comm: &dyn Collective, moe: &mut [MoeStats]) -> Result<()> {
    let layers: Vec<usize> = (0..moe.len()).filter(|&i| moe[i].output_sums.is_some()).collect();
    if comm.size() == 1 || layers.is_empty() {
        return Ok(());
    }
    let tensors: Vec<Tensor> = layers.iter().map(|&i| moe[i].output_sums.clone().expect("a Default-MoE layer")).collect();
    let sums = summed(comm, &tensors.iter().collect::<Vec<_>>())?;
    for ((&i, old), data) in layers.iter().zip(&tensors).zip(sums) {
        moe[i].output_sums = Some(Tensor::from_slice(old.device(), &data, old.shape())?);
    }
    Ok(())
}

/// One MoE layer's statistics over every rank's tokens, as a log line shows them.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerStats {
    /// The step's loads (over all its micro-batches).
    pub load: Vec<f32>,
    pub router_entropy: f32,
    pub aux_loss: Option<f32>,
    pub z_loss: Option<f32>,
    /// Slots dropped for lack of capacity, over all ranks (with a capacity factor).
    pub dropped: Option<u64>,
}

impl LayerStats {
    /// The loads' coefficient of variation: their standard deviation over their mean.
    pub fn load_cv(&self) -> f64 {
        let n = self.load.len() as f64;
        let mean = self.load.iter().map(|&l| l as f64).sum::<f64>() / n;
        let var = self.load.iter().map(|&l| (l as f64 - mean).powi(2)).sum::<f64>() / n;
        if mean > 0.0 {
            var.sqrt() / mean
        } else {
            0.0
        }
    }

    /// The maximal violation of balance: max load / mean load - 1 (0 when even).
    pub fn max_violation(&self) -> f64 {
        let n = self.load.len() as f64;
        let mean = self.load.iter().map(|&l| l as f64).sum::<f64>() / n;
        let max = self.load.iter().cloned().fold(0.0f32, f32::max) as f64;
        if mean > 0.0 {
            max / mean - 1.0
        } else {
            0.0
        }
    }
}

/// The layers' statistics over all ranks: loads (already global after
/// `make_loads_global`), mean entropy and z-loss (means of equal shares), and the
/// load-balancing loss `coef E sum_e f_e P_e` from the global loads and mean probabilities.
pub fn layer_stats(comm: &dyn Collective, moe: &[MoeStats], aux_coef: f32) -> Result<Vec<LayerStats>> {
    let mut out = Vec::with_capacity(moe.len());
    for s in moe {
        let (load, last_load) = (s.step_load().to_vec()?, s.load.to_vec()?);
        let dropped = s.dropped.as_ref().map(|d| d.item()).transpose()?;
        let mut scalars = [s.entropy.item()? as f64, s.z_loss.as_ref().map(|z| z.item()).transpose()?.unwrap_or(0.0) as f64, dropped.unwrap_or(0.0) as f64];
        comm.sum_f64(&mut scalars);
        let n = comm.size() as f64;
        let aux_loss = match &s.aux_loss {
            Some(local) if comm.size() == 1 => Some(local.item()?),
            Some(_) => {
                let mut prob_sums: Vec<f64> = s.prob_sums.to_vec()?.into_iter().map(f64::from).collect();
                comm.sum_f64(&mut prob_sums);
                let tokens = (s.tokens * comm.size()) as f64;
                // The loss of the last micro-batch, as one process logs it.
                let dot: f64 = last_load.iter().zip(&prob_sums).map(|(&f, &p)| f as f64 * p / tokens).sum();
                Some((aux_coef as f64 * last_load.len() as f64 * dot) as f32)
            }
            None => None,
        };
        out.push(LayerStats {
            load,
            router_entropy: (scalars[0] / n) as f32,
            aux_loss,
            z_loss: s.z_loss.as_ref().map(|_| (scalars[1] / n) as f32),
            dropped: dropped.map(|_| scalars[2].round() as u64),
        });
    }
    Ok(out)
}
