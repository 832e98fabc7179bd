//! Reductions over one axis or over everything: sum, mean, max. The kernel
//! (`reduce.wgsl`) sees the input as [outer, n, inner]: a workgroup per output
//! for rows, a thread per output for columns, and two passes for a long axis with few
//! outputs. Max remembers where its maximum was, for the backward pass.

use crate::shape::split_at_axis;
use crate::{elementwise_grid, grid, record, DType, Tensor};

use crate::ops::binary::broadcast_to;
use crate::ops::host::HostTensor;
use crate::ops::layout::reshape;
use crate::ops::unary::{unary, UnaryOp};

const SHADER: &str = include_str!("reduce.wgsl");
const MAX_BACKWARD_SHADER: &str = include_str!("max_backward.wgsl");

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

fn check_axis(reduction: ReduceOp, x: &Tensor, axis: usize) {
    let op = reduction.name();
    assert!(axis < x.rank(), "{op}: axis {axis} is out of range for shape {:?}", x.shape());
    assert_eq!(x.dtype(), DType::F32, "{op}: expects an f32 tensor, got {:?}", x.dtype());
    // A sum of nothing is 0; a mean or a maximum of nothing has no value.
    assert!(x.shape()[axis] > 0 || reduction == ReduceOp::Sum, "{op}: cannot reduce the empty axis {axis} of shape {:?}", x.shape());
}

/// Reduces `x` over `axis`. With `keepdim` the axis stays, with size 1.
pub fn reduce(op: ReduceOp, x: &Tensor, axis: usize, keepdim: bool) -> Tensor {
    check_axis(op, x, axis);
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let mut keep_shape = x.shape().to_vec();
    keep_shape[axis] = 1;
    let mut out_shape = keep_shape.clone();
    if !keepdim {
        out_shape.remove(axis);
    }
    let x_shape = x.shape().to_vec();
    if op == ReduceOp::Max {
        let (out, arg) = max_middle(x, [outer, n, inner], &out_shape);
        return record("max", out, &[x], move |g| vec![Some(max_backward(g, &arg, &x_shape, axis))]);
    }
    let scale = if op == ReduceOp::Mean { 1.0 / n as f32 } else { 1.0 };
    let out = sum_middle(x, [outer, n, inner], scale, &out_shape);
    record(op.name(), out, &[x], move |g| {
        let spread = broadcast_to(&reshape(g, &keep_shape), &x_shape);
        vec![Some(if scale == 1.0 { spread } else { unary(UnaryOp::MulScalar(scale), &spread) })]
    })
}

/// Rows (inner == 1) get a workgroup per output; below this many outputs a long row is
/// split into chunks, each a workgroup, and the chunks summed by a second pass.
const ROW_WORKGROUPS: usize = 4096;
/// Columns get a thread per output; below this many outputs the axis is chunked likewise.
const COLUMN_THREADS: usize = 65536;
/// The shortest chunk worth a pass of its own: rows, columns.
const MIN_CHUNK: [usize; 2] = [4096, 64];

/// How many chunks to cut an axis of `n` into, with `outputs` outputs, so that the first
/// pass has enough workgroups (rows) or threads (columns) to keep a GPU busy.
fn chunks(outputs: usize, n: usize, columns: bool) -> usize {
    let want = if columns { COLUMN_THREADS } else { ROW_WORKGROUPS };
    want.div_ceil(outputs.max(1)).min(n.div_ceil(MIN_CHUNK[columns as usize])).max(1)
}

/// `scale` times the sum of `x` viewed as `[outer, n, inner]` over its middle axis, as a
/// new tensor of `out_shape`, not recorded on the tape: the kernel behind sum and mean,
/// and the last step of split-depth matmuls. A long axis with few outputs is summed in
/// two passes (chunks, then their sums), so it never runs on a handful of workgroups.
pub(crate) fn sum_middle(x: &Tensor, [outer, n, inner]: [usize; 3], scale: f32, out_shape: &[usize]) -> Tensor {
    let dev = x.device();
    if n == 0 {
        return Tensor::output_zeros(dev, out_shape, DType::F32, "sum");
    }
    let columns = inner > 1;
    let pieces = chunks(outer * inner, n, columns);
    let (chunk, pass_shape) = if pieces > 1 {
        let chunk = n.div_ceil(pieces);
        (chunk, vec![outer, n.div_ceil(chunk), inner])
    } else {
        (n.max(1), out_shape.to_vec())
    };
    let out = Tensor::output(dev, &pass_shape, DType::F32, "sum");
    if out.numel() == 0 {
        return out;
    }
    let pass_scale = if pieces > 1 { 1.0 } else { scale };
    launch_reduce(x, "sum", columns, [outer, n, inner, chunk], pass_scale, &[x, &out], out.numel());
    if pieces == 1 {
        return out;
    }
    sum_middle(&out, [outer, pass_shape[1], inner], scale, out_shape)
}

/// The maximum of `x` viewed as `[outer, n, inner]` over its middle axis, and where it
/// first occurs. One pass: the backward pass needs positions along the whole axis.
fn max_middle(x: &Tensor, [outer, n, inner]: [usize; 3], out_shape: &[usize]) -> (Tensor, Tensor) {
    let dev = x.device();
    let out = Tensor::output(dev, out_shape, DType::F32, "max");
    let arg = Tensor::output(dev, out_shape, DType::U32, "max");
    if out.numel() > 0 {
        launch_reduce(x, "max", inner > 1, [outer, n, inner, n], 1.0, &[x, &out, &arg], out.numel());
    }
    (out, arg)
}

fn launch_reduce(x: &Tensor, op: &str, columns: bool, [outer, n, inner, chunk]: [usize; 4], scale: f32, tensors: &[&Tensor], outputs: usize) {
    let dev = x.device();
    let entry = format!("{op}_{}", if columns { "columns" } else { "rows" });
    let pipeline = dev.pipeline(&format!("reduce/{entry}"), &entry, || SHADER.to_string());
    let params = [outer as u32, n as u32, inner as u32, scale.to_bits(), chunk as u32];
    let groups = if columns { grid(outputs.div_ceil(64)) } else { grid(outputs) };
    dev.launch(&pipeline, &params, tensors, groups);
}

fn max_backward(g: &Tensor, arg: &Tensor, x_shape: &[usize], axis: usize) -> Tensor {
    let (_, n, inner) = split_at_axis(x_shape, axis);
    let dev = g.device();
    let dx = Tensor::output(dev, x_shape, DType::F32, "max backward");
    if dx.numel() > 0 {
        let pipeline = dev.pipeline("max_backward", "main", || MAX_BACKWARD_SHADER.to_string());
        dev.launch(&pipeline, &[dx.numel() as u32, n as u32, inner as u32], &[g, arg, &dx], elementwise_grid(dx.numel()));
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
