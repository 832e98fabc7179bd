//! Global gradient norm and clipping, computed on the GPU without a read-back
//! (`grad_norm.wgsl`): the norm stays a device scalar that training logs read
//! only when they print. `grad_norm` leaves the gradients alone, for an optimizer that
//! applies the clipping factor as it reads them (`AdamW::step_clipped`) instead of a pass
//! that rewrites every gradient.

use std::sync::Arc;

use crate::{elementwise_grid, DType, Device, Kernel, Tensor};

use crate::ops::common::rows::WorkgroupReduce;
use crate::ops::common::{floats_per_load, with_row_chunks};

const SHADER: &str = include_str!("grad_norm.wgsl");
/// Elements each partial-sum workgroup covers.
const CHUNK: usize = 16_384;

/// The global L2 norm of the parameters' gradients, before clipping, as a `[2]` tensor:
/// `[norm, scale]` with scale = min(1, max_norm / norm). When `max_norm` is finite every
/// gradient is replaced by its scaled copy (copies, because two parameters may share one
/// gradient tensor). Parameters without a gradient are skipped.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f32) -> Option<Tensor> {
    clip_grad_norm_scaled(params, max_norm, 1.0)
}

/// `clip_grad_norm` for gradients that hold `grad_scale` times the true ones (loss
/// scaling): the norm is the true one, and the gradients are unscaled in the same pass
/// that clips them. A non-finite norm means the scaled gradients overflowed.
pub fn clip_grad_norm_scaled(params: &[Tensor], max_norm: f32, grad_scale: f32) -> Option<Tensor> {
    let out = grad_norm(params, max_norm, grad_scale)?;
    if max_norm.is_finite() || grad_scale != 1.0 {
        let dev = out.device();
        for p in params {
            let Some(g) = p.grad().filter(|g| g.numel() > 0) else { continue };
            let scaled = Tensor::output(dev, g.shape(), DType::F32, "clip_grad_norm");
            let vec = floats_per_load(g.numel());
            let loads = g.numel() / vec;
            dev.launch_bound(&norm_pipeline(dev, "scale", vec), &[loads as u32, 0, 0, 0], &[(1, &g), (4, &out), (5, &scaled)], elementwise_grid(loads));
            p.set_grad(scaled);
        }
    }
    Some(out)
}

/// The `[norm, scale]` of `clip_grad_norm_scaled`, without touching the gradients: scale
/// = min(1, max_norm / norm) / grad_scale is the factor that would clip and unscale them.
/// None when no parameter has a gradient.
pub fn grad_norm(params: &[Tensor], max_norm: f32, grad_scale: f32) -> Option<Tensor> {
    assert!(grad_scale > 0.0 && grad_scale.is_finite(), "clip_grad_norm: gradient scale must be positive and finite, got {grad_scale}");
    let unscale = (1.0 / grad_scale).to_bits();
    let grads: Vec<Tensor> = params.iter().filter_map(Tensor::grad).collect();
    let dev = grads.first()?.device().clone();
    let chunks: Vec<usize> = grads.iter().map(|g| g.numel().div_ceil(CHUNK).max(1)).collect();
    let total: usize = chunks.iter().sum();
    let partials = Tensor::output_zeros(&dev, &[total], DType::F32, "clip_grad_norm");
    let out = Tensor::output(&dev, &[2], DType::F32, "clip_grad_norm");
    let mut first = 0;
    for (g, &n) in grads.iter().zip(&chunks) {
        if g.numel() > 0 {
            let vec = floats_per_load(g.numel());
            let params = [(g.numel() / vec) as u32, first as u32, (CHUNK / vec) as u32, max_norm.to_bits(), unscale];
            dev.launch_bound(&norm_pipeline(&dev, "partial_squares", vec), &params, &[(1, g), (2, &partials)], [n as u32, 1, 1]);
        }
        first += n;
    }
    let finish = norm_pipeline(&dev, "finish", 1);
    dev.launch_bound(&finish, &[total as u32, 0, 0, max_norm.to_bits(), unscale], &[(2, &partials), (3, &out)], [1, 1, 1]);
    Some(out)
}

/// The `entry` kernel reading gradients `vec` floats at a time.
fn norm_pipeline(dev: &Device, entry: &str, vec: usize) -> Arc<Kernel> {
    let reduce = WorkgroupReduce::for_device(dev);
    dev.pipeline(&format!("grad_norm/{entry}/{}/vec{vec}", reduce.name()), entry, || reduce.append_to(with_row_chunks(SHADER.to_string(), vec)))
}
