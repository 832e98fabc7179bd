//! Fused cross-entropy from logits and integer targets, with an ignore index, the mean
//! over counted tokens, and an optional z-loss `z_coef * mean(logsumexp(logits)^2)`.
//! `cross_entropy.wgsl` (forward) and `cross_entropy_backward.wgsl`.

use crate::{elementwise_grid, grid, record, render_template, DType, Tensor};

use crate::ops::common::rows::row_threads;
use crate::ops::common::rows::WorkgroupReduce;
use crate::ops::common::{floats_per_load, with_row_chunks};
use crate::ops::host::HostTensor;

const SHADER: &str = include_str!("cross_entropy.wgsl");
const BACKWARD_SHADER: &str = include_str!("cross_entropy_backward.wgsl");

#[derive(Clone, Copy, Debug)]
pub struct CrossEntropyOptions {
    /// Targets equal to this are skipped (not counted in the mean).
    pub ignore_index: u32,
    /// Weight of the z-loss term; 0 disables it.
    pub z_coef: f32,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions { ignore_index: u32::MAX, z_coef: 0.0 }
    }
}

/// Mean cross-entropy of `logits` `[..., V]` against `targets` `[...]` (u32), a scalar.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, opts: CrossEntropyOptions) -> Tensor {
    assert_eq!(logits.dtype(), DType::F32, "cross_entropy: logits must be f32, got {:?}", logits.dtype());
    assert_eq!(targets.dtype(), DType::U32, "cross_entropy: targets must be u32, got {:?}", targets.dtype());
    assert!(logits.rank() >= 1 && logits.shape()[logits.rank() - 1] > 0, "cross_entropy: logits {:?} have no classes", logits.shape());
    assert_eq!(&logits.shape()[..logits.rank() - 1], targets.shape(), "cross_entropy: logits {:?} and targets {:?} disagree", logits.shape(), targets.shape());
    let n = logits.shape()[logits.rank() - 1];
    let rows = targets.numel();
    let dev = logits.device();
    if rows == 0 {
        // No rows, no loss: 0, as when every target is ignored.
        let loss = Tensor::output_zeros(dev, &[], DType::F32, "cross_entropy");
        let saved_logits = logits.clone();
        return record("cross_entropy", loss, &[logits], move |_| vec![Some(alloc_like(&saved_logits))]);
    }
    let alloc = |shape: &[usize]| Tensor::output(dev, shape, DType::F32, "cross_entropy");
    let (row_loss, row_lse) = (alloc(&[rows]), alloc(&[rows]));
    let (loss, count) = (alloc(&[]), alloc(&[1]));
    let params = [rows as u32, n as u32, opts.ignore_index, opts.z_coef.to_bits()];
    let reduce = WorkgroupReduce::for_device(dev);
    let source = |wg: u32, vec| with_row_chunks(reduce.append_to(render_template(SHADER, &[("WG", &wg.to_string())])), vec);
    let vec = floats_per_load(n);
    let wg = row_threads(dev, n / vec);
    // SAFETY: chunk c < n / vec of row < rows stays within the logits, the target's chunk
    // is clamped into the row, and rows index targets and the row outputs (of rows
    // entries); every loop counts up to a bound.
    let p_rows = unsafe { dev.pipeline_unchecked(&format!("cross_entropy/rows/{wg}/vec{vec}/{}", reduce.name()), "rows", || source(wg, vec)) };
    dev.launch(&p_rows, &params, &[logits, targets, &row_loss, &row_lse], grid(rows));
    // One workgroup of 256 threads averages the row losses.
    let p_finish = dev.pipeline(&format!("cross_entropy/finish/{}", reduce.name()), "finish", || source(256, 1));
    dev.launch_bound(&p_finish, &params, &[(2, targets), (3, &row_loss), (5, &loss), (6, &count)], [1, 1, 1]);
    let (saved_logits, saved_targets) = (logits.clone(), targets.clone());
    record("cross_entropy", loss, &[logits], move |g| {
        let dx = alloc_like(&saved_logits);
        // SAFETY: load c < rows * n / vec indexes the logits and dx, its row < rows the
        // targets and row_lse; g and count hold one value each.
        let p =
            unsafe { g.device().pipeline_unchecked(&format!("cross_entropy_backward/vec{vec}"), "main", || with_row_chunks(BACKWARD_SHADER.to_string(), vec)) };
        g.device().launch(&p, &params, &[&saved_logits, &saved_targets, &row_lse, &count, g, &dx], elementwise_grid(dx.numel() / vec));
        vec![Some(dx)]
    })
}

fn alloc_like(t: &Tensor) -> Tensor {
    Tensor::output(t.device(), t.shape(), DType::F32, "cross_entropy backward")
}

/// CPU reference.
pub fn cross_entropy_reference(logits: &HostTensor, targets: &[u32], opts: CrossEntropyOptions) -> f64 {
    let n = *logits.shape.last().unwrap();
    let (mut total, mut count) = (0.0, 0usize);
    for (row, &t) in logits.data.chunks(n).zip(targets) {
        if t == opts.ignore_index {
            continue;
        }
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        total += lse - row[t as usize] + opts.z_coef as f64 * lse * lse;
        count += 1;
    }
    total / count.max(1) as f64
}
