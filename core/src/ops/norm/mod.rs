//! RMSNorm and LayerNorm over the last axis with a learned scale (LayerNorm also a bias):
//! `norm.wgsl` and `norm_backward.wgsl`, one template for both. The
//! `add_` forms take a residual connection into the norm: `s = x + delta, (s, norm(s))`
//! in one kernel, whose backward adds the gradient of s, so a pre-norm block needs
//! neither an add kernel nor a kernel summing the two gradients of s.

use std::sync::Arc;

use crate::{record_multi, DType, Device, Kernel, Tensor};

use crate::ops::common::rows::{row_layout, RowLayout};
use crate::ops::common::{floats_per_load, with_row_chunks};
use crate::ops::host::HostTensor;
use crate::ops::layout::reshape;
use crate::ops::reduce::{reduce, ReduceOp};

const SHADER: &str = include_str!("norm.wgsl");
const BACKWARD_SHADER: &str = include_str!("norm_backward.wgsl");

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
    norm(NormKind::Rms, x, None, weight, None, eps).1
}

pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Tensor {
    norm(NormKind::Layer, x, None, weight, Some(bias), eps).1
}

/// `(s, rms_norm(s))` for the residual sum `s = x + delta`, in one kernel.
pub fn add_rms_norm(x: &Tensor, delta: &Tensor, weight: &Tensor, eps: f32) -> (Tensor, Tensor) {
    norm(NormKind::Rms, x, Some(delta), weight, None, eps)
}

/// `(s, layer_norm(s))` for the residual sum `s = x + delta`, in one kernel.
pub fn add_layer_norm(x: &Tensor, delta: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> (Tensor, Tensor) {
    norm(NormKind::Layer, x, Some(delta), weight, Some(bias), eps)
}

/// The forward or backward kernel (`template`, keyed `name`) for rows of `n`, its
/// `{{RESIDUAL}}` filled with `residual`: (a name for the key, the code), and the layout of
/// rows on workgroups it was built for.
fn row_kernel(dev: &Device, name: &str, template: &str, kind: NormKind, n: usize, (residual_key, residual): (&str, &str)) -> (Arc<Kernel>, RowLayout) {
    let vec = floats_per_load(n);
    let layout = row_layout(dev, n);
    let key = format!("{name}/{}/{}/vec{vec}/{residual_key}", kind.name(), layout.name());
    let source = || with_row_chunks(layout.render(template, &[("MODE", kind.mode()), ("RESIDUAL", residual)]), vec);
    // SAFETY: load c < n / vec of row < rows (slots past the last row read the last row)
    // indexes the rows and the residual sums and their gradients (rows * n floats) and the
    // scale and bias (n floats), row indexes stats (rows * 2), and every loop counts up to
    // a bound.
    (unsafe { dev.pipeline_unchecked(&key, "main", source) }, layout)
}

/// The norm of `x` (or of `s = x + delta`, returned too, when `delta` is given).
fn norm(kind: NormKind, x: &Tensor, delta: Option<&Tensor>, weight: &Tensor, bias: Option<&Tensor>, eps: f32) -> (Tensor, Tensor) {
    let op = kind.name();
    assert!(x.rank() >= 1 && x.dtype() == DType::F32, "{op}: expects an f32 tensor with a last axis, got {:?}", x.shape());
    let n = x.shape()[x.rank() - 1];
    assert_eq!(weight.shape(), &[n], "{op}: weight {:?} must be [{n}] for input {:?}", weight.shape(), x.shape());
    if let Some(b) = bias {
        assert_eq!(b.shape(), &[n], "{op}: bias {:?} must be [{n}] for input {:?}", b.shape(), x.shape());
    }
    if let Some(d) = delta {
        assert!(d.shape() == x.shape() && d.dtype() == DType::F32, "{op}: residual {:?} {:?} must match input {:?}", d.dtype(), d.shape(), x.shape());
    }
    let rows = x.numel().checked_div(n).unwrap_or(0);
    let dev = x.device();
    let alloc = |shape: &[usize]| Tensor::output(dev, shape, DType::F32, format_args!("{op}"));
    let y = alloc(x.shape());
    let sum = delta.map(|_| alloc(x.shape()));
    let stats = alloc(&[rows.max(1), 2]);
    let params = [rows as u32, n as u32, eps.to_bits()];
    if rows > 0 {
        let residual = match delta {
            Some(_) => (
                "residual",
                "@group(0) @binding(6) var<storage, read> delta: array<V>;\n\
                 @group(0) @binding(7) var<storage, read_write> sum: array<V>;\n\
                 fn row_chunk(i: u32) -> V { return x[i] + delta[i]; }\n\
                 fn keep_sum(i: u32, v: V) { sum[i] = v; }",
            ),
            None => ("plain", "fn row_chunk(i: u32) -> V { return x[i]; }\nfn keep_sum(i: u32, v: V) {}"),
        };
        let (pipeline, layout) = row_kernel(dev, "norm", SHADER, kind, n, residual);
        // RMSNorm has no bias: the scale stands in for the unused binding.
        let mut buffers = vec![x, weight, bias.unwrap_or(weight), &y, &stats];
        buffers.extend(delta.into_iter().chain(&sum));
        dev.launch(&pipeline, &params, &buffers, layout.groups(rows));
    }
    // The backward pass needs the normalised input: x, or the sum.
    let normalised = sum.clone().unwrap_or_else(|| x.clone());
    let delta_given = delta.is_some();
    let sw = weight.clone();
    let (need_x, need_delta, need_w, need_b) =
        (x.is_tracked(), delta.is_some_and(Tensor::is_tracked), weight.is_tracked(), bias.is_some_and(Tensor::is_tracked));
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    inputs.extend(delta);
    let mut outputs = vec![&y];
    outputs.extend(&sum);
    record_multi(op, &outputs, &inputs, move |grads| {
        let (g_y, g_sum) = (grads[0].as_ref(), grads.get(1).cloned().flatten());
        let (dx, g_xhat) = match g_y {
            Some(g) => {
                let dev = g.device();
                let alloc = |shape: &[usize]| Tensor::output(dev, shape, DType::F32, format_args!("{op} backward"));
                let (dx, g_xhat) = (alloc(normalised.shape()), alloc(normalised.shape()));
                if rows > 0 {
                    let residual = match &g_sum {
                        Some(_) => {
                            ("residual", "@group(0) @binding(7) var<storage, read> g_sum: array<V>;\nfn residual_grad(i: u32) -> V { return g_sum[i]; }")
                        }
                        None => ("plain", "fn residual_grad(i: u32) -> V { return V(0.0); }"),
                    };
                    let (pipeline, layout) = row_kernel(dev, "norm_backward", BACKWARD_SHADER, kind, n, residual);
                    let mut buffers = vec![&normalised, &sw, &stats, g, &dx, &g_xhat];
                    buffers.extend(&g_sum);
                    dev.launch(&pipeline, &params, &buffers, layout.groups(rows));
                }
                (dx, Some(g_xhat))
            }
            // Only the sum was used: its gradient passes straight through.
            None => (g_sum.expect("the tape runs a backward pass only for outputs with a gradient"), None),
        };
        let over_rows = |t: &Tensor| reduce(ReduceOp::Sum, &reshape(t, &[rows, n]), 0, false);
        let mut grads = vec![need_x.then(|| dx.clone()), need_w.then(|| g_xhat.as_ref().map(over_rows)).flatten()];
        if kind == NormKind::Layer {
            grads.push(need_b.then(|| g_y.map(over_rows)).flatten());
        }
        if delta_given {
            grads.push(need_delta.then_some(dx));
        }
        grads
    });
    (sum.unwrap_or_else(|| x.clone()), y)
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
