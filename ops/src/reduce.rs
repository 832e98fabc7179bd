//! Reductions over one axis or over everything: sum, mean, max. The kernel
//! (`shaders/reduce.wgsl`) sees the input as [outer, n, inner] and gives each output
//! element a workgroup. Max remembers where its maximum was, for the backward pass.

use moegrad_engine::shape::split_at_axis;
use moegrad_engine::{grid, record, DType, Tensor};

use crate::binary::broadcast_to;
use crate::host::HostTensor;
use crate::layout::reshape;
use crate::unary::{unary, UnaryOp};

const SHADER: &str = include_str!("../../shaders/reduce.wgsl");
const MAX_BACKWARD_SHADER: &str = include_str!("../../shaders/max_backward.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
        }
    }

    /// CPU reference: reduce `x` over `axis`, removing it.
    pub fn reference(self, x: &HostTensor, axis: usize) -> HostTensor {
        let (outer, n, inner) = split_at_axis(&x.shape, axis);
        let mut shape = x.shape.clone();
        shape.remove(axis);
        let data = (0..outer * inner)
            .map(|o| {
                let column = (0..n).map(|k| x.data[(o / inner) * n * inner + k * inner + o % inner]);
                match self {
                    ReduceOp::Sum => column.sum(),
                    ReduceOp::Mean => column.sum::<f64>() / n as f64,
                    ReduceOp::Max => column.fold(f64::NEG_INFINITY, f64::max),
                }
            })
            .collect();
        HostTensor::new(&shape, data)
    }
}

fn check_axis(op: &str, x: &Tensor, axis: usize) {
    assert!(axis < x.rank(), "{op}: axis {axis} is out of range for shape {:?}", x.shape());
    assert_eq!(x.dtype(), DType::F32, "{op}: expects an f32 tensor, got {:?}", x.dtype());
    assert!(x.shape()[axis] > 0, "{op}: cannot reduce the empty axis {axis} of shape {:?}", x.shape());
}

/// Reduces `x` over `axis`. With `keepdim` the axis stays, with size 1.
pub fn reduce(op: ReduceOp, x: &Tensor, axis: usize, keepdim: bool) -> Tensor {
    check_axis(op.name(), x, axis);
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let mut keep_shape = x.shape().to_vec();
    keep_shape[axis] = 1;
    let mut out_shape = keep_shape.clone();
    if !keepdim {
        out_shape.remove(axis);
    }
    let dev = x.device();
    let out = Tensor::empty(dev, &out_shape, DType::F32).unwrap_or_else(|e| panic!("{}: {e}", op.name()));
    let scale = if op == ReduceOp::Mean { 1.0 / n as f32 } else { 1.0 };
    let params = [outer as u32, n as u32, inner as u32, scale.to_bits()];
    let groups = grid(outer * inner);
    let x_shape = x.shape().to_vec();
    if op == ReduceOp::Max {
        let arg = Tensor::empty(dev, &out_shape, DType::U32).unwrap_or_else(|e| panic!("max: {e}"));
        if out.numel() > 0 {
            let pipeline = dev.pipeline("reduce/max", "reduce_max", || SHADER.to_string());
            dev.launch(&pipeline, &params, &[x, &out, &arg], groups);
        }
        return record("max", out, &[x], move |g| vec![Some(max_backward(g, &arg, &x_shape, axis))]);
    }
    if out.numel() > 0 {
        let pipeline = dev.pipeline("reduce/sum", "reduce_sum", || SHADER.to_string());
        dev.launch(&pipeline, &params, &[x, &out], groups);
    }
    record(op.name(), out, &[x], move |g| {
        let spread = broadcast_to(&reshape(g, &keep_shape), &x_shape);
        vec![Some(if scale == 1.0 { spread } else { unary(UnaryOp::MulScalar(scale), &spread) })]
    })
}

fn max_backward(g: &Tensor, arg: &Tensor, x_shape: &[usize], axis: usize) -> Tensor {
    let (_, n, inner) = split_at_axis(x_shape, axis);
    let dev = g.device();
    let dx = Tensor::empty(dev, x_shape, DType::F32).unwrap_or_else(|e| panic!("max backward: {e}"));
    if dx.numel() > 0 {
        let pipeline = dev.pipeline("max_backward", "main", || MAX_BACKWARD_SHADER.to_string());
        dev.launch(&pipeline, &[dx.numel() as u32, n as u32, inner as u32], &[g, arg, &dx], grid(dx.numel().div_ceil(256)));
    }
    dx
}

/// Reduces every element to a scalar (shape `[]`).
pub fn reduce_all(op: ReduceOp, x: &Tensor) -> Tensor {
    reduce(op, &reshape(x, &[x.numel()]), 0, false)
}

/// CPU reference of `reduce_all`.
pub fn reduce_all_reference(op: ReduceOp, x: &HostTensor) -> HostTensor {
    op.reference(&HostTensor::new(&[x.numel()], x.data.clone()), 0)
}
