//! `moegrad bench --suite dist` (under `mpirun -np N`, or alone): what data-parallel
//! training's gradient exchange costs per step, and how much of it the buckets hide
//! behind the backward pass. The MoE LM step of the PyTorch suite (its global batch split
//! over the ranks) runs three ways: alone (no exchange: the compute), exchanging after
//! the backward pass (every bucket's read-back waits for the whole pass), and overlapped
//! (each bucket's read-back and all-reduce start when its gradients are final). Hidden
//! = 1 - (overlapped - alone) / (after - alone). Wall clock with a full wait per step.

use std::time::Instant;

use anyhow::Result;
use moegrad_core::ops::{AdamW, AdamWConfig};
use moegrad_core::{Device, Module, Tensor};
use moegrad_models::Transformer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::bench::{lm_step_model, Scale};
use crate::dist::{BucketStats, Collective, GradientBuckets};
use crate::train::data::Batch;
use crate::train::step::{train_step, Exchange, StepSettings};

/// One way of running the step, medians over the timed steps.
#[derive(Clone, Debug, Serialize)]
pub struct DistResult {
    pub mode: &'static str,
    pub step_ms: f64,
    /// Gradient bytes all-reduced per step and rank.
    pub bytes: u64,
    pub buckets: usize,
    pub read_back_ms: f64,
    pub reduce_ms: f64,
    pub upload_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DistReport {
    pub device: String,
    pub ranks: usize,
    pub model: String,
    pub params: usize,
    pub bucket_mb: f64,
    pub results: Vec<DistResult>,
    /// The share of the exchange's cost that overlapping hid (1: all of it).
    pub hidden_fraction: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the suite on this rank; every rank must call it with the same arguments.
pub fn run_dist_suite(device: &Device, comm: &dyn Collective, scale: Scale, iters: usize, bucket_mb: f64) -> Result<DistReport> {
    let (config, batch) = lm_step_model(scale);
    let (d, layers, context, vocab) = (config.d_model, config.layers, config.context, config.vocab_size);
    let per_rank = (batch / comm.size()).max(1);
    // The same initial weights on every rank, different tokens.
    let mut model = Transformer::new(device, &config, &mut StdRng::seed_from_u64(0))?;
    let mut opt = AdamW::new(&model, AdamWConfig::default())?;
    let mut rng = StdRng::seed_from_u64(1 + comm.rank() as u64);
    let ids: Vec<u32> = (0..per_rank * (context + 1)).map(|_| rng.random_range(0..vocab as u32)).collect();
    let batch_data = Batch {
        inputs: Tensor::from_u32(device, &ids[..per_rank * context], &[per_rank, context])?,
        targets: Tensor::from_u32(device, &ids[per_rank..], &[per_rank, context])?,
    };
    let settings = StepSettings { lr: 1e-4, clip: 1.0, grad_accum: 1 };
    let bucket_bytes = (bucket_mb * 1e6) as u64;
    let mut results = Vec::new();
    for (mode, exchange, overlap) in [("alone", false, false), ("exchange after backward", true, false), ("exchange overlapped", true, true)] {
        let mut buckets = GradientBuckets::new(opt.parameters(), bucket_bytes, overlap);
        let (mut times, mut stats) = (Vec::new(), Vec::<BucketStats>::new());
        for i in 0..iters + 1 {
            // Every rank starts the step together, so that waits in the all-reduce are
            // the exchange's and not a rank's late start.
            comm.gather_u64(0);
            let t = Instant::now();
            let x = exchange.then_some(Exchange { comm, buckets: &mut buckets });
            let out = train_step(&mut model, &mut opt, None, settings, x, |_| Ok(batch_data.clone()))?;
            device.synchronize();
            // The first step compiles kernels and fills the buffer pool.
            if i > 0 {
                times.push(t.elapsed().as_secs_f64());
                stats.extend(out.exchange);
            }
        }
        let ms = |f: fn(&BucketStats) -> f64| if stats.is_empty() { 0.0 } else { 1e3 * median(stats.iter().map(f).collect()) };
        results.push(DistResult {
            mode,
            step_ms: 1e3 * median(times),
            bytes: stats.first().map_or(0, |s| s.bytes),
            buckets: stats.first().map_or(0, |s| s.buckets),
            read_back_ms: ms(|s| s.read_back_s),
            reduce_ms: ms(|s| s.reduce_s),
            upload_ms: ms(|s| s.upload_s),
        });
    }
    let (alone, after, overlapped) = (results[0].step_ms, results[1].step_ms, results[2].step_ms);
    let hidden_fraction = (after > alone).then(|| (1.0 - (overlapped - alone) / (after - alone)).clamp(0.0, 1.0));
    Ok(DistReport {
        device: device.name().to_string(),
        ranks: comm.size(),
        model: format!("TopK MoE d{d} L{layers} E8 k2, {per_rank}x{context} tokens per rank (global batch {batch}), vocab {vocab}"),
        params: model.parameters().iter().map(Tensor::numel).sum(),
        bucket_mb,
        results,
        hidden_fraction,
    })
}
