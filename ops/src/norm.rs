//! RMSNorm and LayerNorm over the last axis with a learned scale (LayerNorm also a bias):
//! `shaders/norm.wgsl` and `shaders/norm_backward.wgsl`, one template for both.

use std::sync::Arc;

use moegrad_engine::{grid, record, render_template, DType, Device, Kernel, Tensor};

use crate::host::HostTensor;
use crate::row_threads::row_threads;
use crate::wgsl_library::{floats_per_load, with_row_chunks};
use crate::workgroup_reduce::WorkgroupReduce;
use crate::reduce::{reduce, ReduceOp};
use crate::layout::reshape;

const SHADER: &str = include_str!("../../shaders/norm.wgsl");
const BACKWARD_SHADER: &str = include_str!("../../shaders/norm_backward.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    Rms,
    Layer,
}

impl NormKind {
    fn mode(self) -> &'static str {
        match self {
            NormKind::Rms => "0",
            NormKind::Layer => "1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            NormKind::Rms => "rms_norm",
            NormKind::Layer => "layer_norm",
        }
    }
}

pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Tensor {
    norm(NormKind::Rms, x, weight, None, eps)
}

pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Tensor {
    norm(NormKind::Layer, x, weight, Some(bias), eps)
}

/// The forward or backward kernel (`template`, keyed `name`) for rows of `n`.
fn row_kernel(dev: &Device, name: &str, template: &str, kind: NormKind, n: usize) -> Arc<Kernel> {
    let (reduce, vec) = (WorkgroupReduce::for_device(dev), floats_per_load(n));
    let wg = row_threads(dev, n / vec);
    let key = format!("{name}/{}/{wg}/vec{vec}/{}", kind.name(), reduce.name());
    let source = || with_row_chunks(reduce.append_to(render_template(template, &[("MODE", kind.mode()), ("WG", &wg.to_string())])), vec);
    // SAFETY: load c < n / vec of row < rows indexes the rows (rows * n floats) and the
    // scale and bias (n floats), row indexes stats (rows * 2), and every loop counts up to
    // a bound.
    unsafe { dev.pipeline_unchecked(&key, "main", source) }
}

fn norm(kind: NormKind, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f32) -> Tensor {
    let op = kind.name();
    assert!(x.rank() >= 1 && x.dtype() == DType::F32, "{op}: expects an f32 tensor with a last axis, got {:?}", x.shape());
    let n = x.shape()[x.rank() - 1];
    assert_eq!(weight.shape(), &[n], "{op}: weight {:?} must be [{n}] for input {:?}", weight.shape(), x.shape());
    if let Some(b) = bias {
        assert_eq!(b.shape(), &[n], "{op}: bias {:?} must be [{n}] for input {:?}", b.shape(), x.shape());
    }
    let rows = x.numel().checked_div(n).unwrap_or(0);
    let dev = x.device();
    let alloc = |shape: &[usize]| Tensor::empty(dev, shape, DType::F32).unwrap_or_else(|e| panic!("{op}: {e}"));
    let y = alloc(x.shape());
    let stats = alloc(&[rows.max(1), 2]);
    let params = [rows as u32, n as u32, eps.to_bits()];
    if rows > 0 {
        let pipeline = row_kernel(dev, "norm", SHADER, kind, n);
        // RMSNorm has no bias: the scale stands in for the unused binding.
        dev.launch(&pipeline, &params, &[x, weight, bias.unwrap_or(weight), &y, &stats], grid(rows));
    }
    let (sx, sw) = (x.clone(), weight.clone());
    let (need_x, need_w, need_b) = (x.is_tracked(), weight.is_tracked(), bias.is_some_and(Tensor::is_tracked));
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    record(op, y, &inputs, move |g| {
        let dev = g.device();
        let alloc = |shape: &[usize]| Tensor::empty(dev, shape, DType::F32).unwrap_or_else(|e| panic!("{op} backward: {e}"));
        let (dx, g_xhat) = (alloc(sx.shape()), alloc(sx.shape()));
        if rows > 0 {
            let pipeline = row_kernel(dev, "norm_backward", BACKWARD_SHADER, kind, n);
            dev.launch(&pipeline, &params, &[&sx, &sw, &stats, g, &dx, &g_xhat], grid(rows));
        }
        let over_rows = |t: &Tensor| reduce(ReduceOp::Sum, &reshape(t, &[rows, n]), 0, false);
        let mut grads = vec![need_x.then_some(dx), need_w.then(|| over_rows(&g_xhat))];
        if kind == NormKind::Layer {
            grads.push(need_b.then(|| over_rows(g)));
        }
        grads
    })
}

/// CPU reference (`bias` only for LayerNorm).
pub fn norm_reference(kind: NormKind, x: &HostTensor, weight: &HostTensor, bias: Option<&HostTensor>, eps: f64) -> HostTensor {
    let n = *x.shape.last().unwrap();
    let mut y = x.clone();
    for row in y.data.chunks_mut(n) {
        let mean = if kind == NormKind::Layer { row.iter().sum::<f64>() / n as f64 } else { 0.0 };
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * rstd * weight.data[j] + bias.map_or(0.0, |b| b.data[j]);
        }
    }
    y
}
