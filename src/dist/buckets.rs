//! Gradient averaging in buckets. The parameters are grouped, in the order their
//! gradients complete in the backward pass (the reverse of the model's order), into
//! buckets of about `dist.bucket_mb`; the moment a bucket's last gradient is final
//! (`Tensor::backward_reporting`) its gradients are packed into one buffer and its read-
//! back is submitted, while the rest of the backward pass is still to run. `finish` then
//! takes the buckets in order: waits for each read-back (the GPU meanwhile runs the later
//! layers' backward), sums it over ranks, and uploads the sums as the gradients. One
//! read-back, one all-reduce and one upload per bucket, never one per tensor.
//!
//! The ranks' gradients are summed, not averaged: the step divides by the world size
//! where it removes the loss scale, in the same kernels (`grad_norm`, AdamW).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use moegrad_core::ops::concat;
use moegrad_core::{no_grad, DType, PendingRead, Tensor, TensorId};

use crate::dist::Collective;

/// Where a step's gradient exchange spent its time, added up over its buckets.
#[derive(Clone, Copy, Debug, Default)]
pub struct BucketStats {
    /// Gradient bytes all-reduced (per rank).
    pub bytes: u64,
    pub buckets: usize,
    /// Waiting for read-backs: the GPU work before each bucket's copy, and the copy.
    pub read_back_s: f64,
    /// In the all-reduce.
    pub reduce_s: f64,
    /// Uploading the sums.
    pub upload_s: f64,
}

struct Bucket {
    params: Vec<Tensor>,
    /// Gradients still to complete in this backward pass.
    waiting: usize,
    read: Option<Result<PendingRead>>,
}

/// A model's parameters in buckets, and the exchange of their gradients.
pub struct GradientBuckets {
    buckets: Vec<Bucket>,
    bucket_of: HashMap<TensorId, usize>,
    /// Start each bucket's read-back as soon as it is complete (else all after the
    /// backward pass: the benchmark's baseline for what overlapping hides).
    overlap: bool,
}

impl GradientBuckets {
    /// Buckets of at most `bucket_bytes` (one larger parameter makes a bucket of its own)
    /// over `params` in the model's order.
    pub fn new(params: &[Tensor], bucket_bytes: u64, overlap: bool) -> GradientBuckets {
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut bytes = 0;
        for p in params.iter().rev() {
            let size = p.numel() as u64 * 4;
            if buckets.is_empty() || bytes + size > bucket_bytes {
                buckets.push(Bucket { params: Vec::new(), waiting: 0, read: None });
                bytes = 0;
            }
            bytes += size;
            buckets.last_mut().expect("a bucket").params.push(p.clone());
        }
        let bucket_of = buckets.iter().enumerate().flat_map(|(i, b)| b.params.iter().map(move |p| (p.id(), i))).collect();
        GradientBuckets { buckets, bucket_of, overlap }
    }

    /// The number of buckets.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Call before the backward pass whose gradients are the step's last contribution.
    pub fn begin(&mut self) {
        for b in &mut self.buckets {
            b.waiting = b.params.len();
            b.read = None;
        }
    }

    /// The backward pass's report that `param`'s gradient is final.
    pub fn on_final(&mut self, param: &Tensor) {
        let Some(&i) = self.bucket_of.get(&param.id()) else { return };
        let bucket = &mut self.buckets[i];
        bucket.waiting = bucket.waiting.saturating_sub(1);
        if bucket.waiting == 0 && bucket.read.is_none() && self.overlap {
            bucket.read = Some(pack(&bucket.params));
        }
    }

    /// Replaces every gradient by its sum over ranks, bucket by bucket in order.
    pub fn finish(&mut self, comm: &dyn Collective) -> Result<BucketStats> {
        let mut stats = BucketStats { buckets: self.buckets.len(), ..BucketStats::default() };
        // Buckets with a parameter that got no gradient (or all, without overlap) start now.
        for b in self.buckets.iter_mut().filter(|b| b.read.is_none()) {
            b.read = Some(pack(&b.params));
        }
        for b in &mut self.buckets {
            let t = Instant::now();
            let mut sums = b.read.take().expect("every bucket started")?.wait().context("reading back a bucket of gradients")?;
            stats.read_back_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            comm.sum_f32(&mut sums);
            stats.reduce_s += t.elapsed().as_secs_f64();
            stats.bytes += sums.len() as u64 * 4;
            let t = Instant::now();
            let mut at = 0;
            for p in &b.params {
                // A new tensor, not a write into the old gradient, which backward may have
                // shared with another tensor.
                let grad = Tensor::from_slice(p.device(), &sums[at..at + p.numel()], p.shape())?;
                p.set_grad(grad);
                at += p.numel();
            }
            stats.upload_s += t.elapsed().as_secs_f64();
        }
        Ok(stats)
    }
}

/// Submits the copy of a bucket's gradients, packed into one buffer, to the host. A
/// parameter without a gradient on this rank sends zeros, so that every rank's bucket
/// has the same layout.
fn pack(params: &[Tensor]) -> Result<PendingRead> {
    no_grad(|| {
        let flat = params
            .iter()
            .map(|p| {
                let g = match p.grad() {
                    Some(g) => g,
                    None => Tensor::zeros(p.device(), p.shape())?,
                };
                assert_eq!(g.dtype(), DType::F32, "gradients are exchanged as f32");
                Ok(g.alias(&[g.numel()]))
            })
            .collect::<Result<Vec<Tensor>>>()?;
        let refs: Vec<&Tensor> = flat.iter().collect();
        Ok(if refs.len() == 1 { refs[0].read_later() } else { concat(&refs, 0).read_later() })
    })
}
