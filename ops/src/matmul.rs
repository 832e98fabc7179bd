//! Matrix multiplication: 2-D and batched, either operand transposed, any sizes
//! (`shaders/matmul.wgsl`). A 2-D right operand is shared across a batched left one, the
//! `x @ W` of every linear layer.

use moegrad_engine::shape::numel;
use moegrad_engine::{record, render_template, DType, Tensor, MAX_GROUPS_PER_DIM};

use crate::host::HostTensor;
use crate::layout::reshape;
use crate::reduce::{reduce, ReduceOp};

const SHADER: &str = include_str!("../../shaders/matmul.wgsl");
const TILE: usize = 64;

/// (rows, cols) of `op(x)` for the last two dimensions.
fn op_dims(x: &[usize], transposed: bool) -> (usize, usize) {
    let (r, c) = (x[x.len() - 2], x[x.len() - 1]);
    if transposed {
        (c, r)
    } else {
        (r, c)
    }
}

/// `a @ b`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    matmul_t(a, b, false, false)
}

/// `op(a) @ op(b)` where `op` transposes the last two dimensions when its flag is set.
/// Batch dimensions must be equal, or one operand must be 2-D (shared by the batch).
pub fn matmul_t(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Tensor {
    let t = |on: bool| if on { "ᵀ" } else { "" };
    assert!(a.rank() >= 2 && b.rank() >= 2, "matmul: operands need at least 2 dimensions, got {:?} and {:?}", a.shape(), b.shape());
    assert!(a.dtype() == DType::F32 && b.dtype() == DType::F32, "matmul: expects f32 tensors, got {:?} and {:?}", a.dtype(), b.dtype());
    let (m, ka) = op_dims(a.shape(), trans_a);
    let (kb, n) = op_dims(b.shape(), trans_b);
    assert_eq!(ka, kb, "matmul: inner dimensions differ for a{} {:?} and b{} {:?}", t(trans_a), a.shape(), t(trans_b), b.shape());
    let batch_a = &a.shape()[..a.rank() - 2];
    let batch_b = &b.shape()[..b.rank() - 2];
    assert!(
        batch_a == batch_b || batch_a.is_empty() || batch_b.is_empty(),
        "matmul: batch dimensions of {:?} and {:?} differ",
        a.shape(),
        b.shape()
    );
    // x @ W with x batched: one big 2-D product instead of a batch of small ones.
    if batch_b.is_empty() && !batch_a.is_empty() && !trans_a {
        let flat = reshape(a, &[numel(batch_a) * m, ka]);
        let mut shape = batch_a.to_vec();
        shape.extend([m, n]);
        return reshape(&matmul_t(&flat, b, false, trans_b), &shape);
    }
    let batch_shape = if batch_a.is_empty() { batch_b } else { batch_a };
    let batch = numel(batch_shape);
    let mut shape = batch_shape.to_vec();
    shape.extend([m, n]);
    let dev = a.device();
    // With K = 0 the product is all zeros and no kernel runs.
    let out = if ka == 0 { Tensor::zeros(dev, &shape) } else { Tensor::empty(dev, &shape, DType::F32) };
    let out = out.unwrap_or_else(|e| panic!("matmul: {e}"));
    if out.numel() > 0 && ka > 0 {
        let groups = [n.div_ceil(TILE), m.div_ceil(TILE), batch];
        assert!(groups.iter().all(|&g| g <= MAX_GROUPS_PER_DIM as usize), "matmul: output {shape:?} needs too many workgroups");
        let stride = |batch_dims: &[usize], x: &Tensor| if batch_dims.is_empty() { 0 } else { x.shape()[x.rank() - 2] * x.shape()[x.rank() - 1] };
        let params = [m, n, ka, stride(batch_a, a), stride(batch_b, b)].map(|v| v as u32);
        let key = format!("matmul/{}{}", u8::from(trans_a), u8::from(trans_b));
        let pipeline = dev.pipeline(&key, "main", || {
            render_template(SHADER, &[("TRANS_A", if trans_a { "true" } else { "false" }), ("TRANS_B", if trans_b { "true" } else { "false" })])
        });
        dev.launch(&pipeline, &params, &[a, b, &out], groups.map(|g| g as u32));
    }
    let (sa, sb) = (a.clone(), b.clone());
    let (need_a, need_b) = (a.is_tracked(), b.is_tracked());
    record("matmul", out, &[a, b], move |g| {
        // C = op(A) op(B): dop(A) = dC op(B)ᵀ, dop(B) = op(A)ᵀ dC, transposed back as needed.
        let da = need_a.then(|| {
            let d = if trans_a { matmul_t(&sb, g, trans_b, true) } else { matmul_t(g, &sb, false, !trans_b) };
            sum_batch(d, sa.shape())
        });
        let db = need_b.then(|| {
            let d = if trans_b { matmul_t(g, &sa, true, trans_a) } else { matmul_t(&sa, g, !trans_a, false) };
            sum_batch(d, sb.shape())
        });
        vec![da, db]
    })
}

/// Sums a batched gradient over its batch when the operand was a shared 2-D matrix.
fn sum_batch(grad: Tensor, shape: &[usize]) -> Tensor {
    if grad.rank() == shape.len() {
        return grad;
    }
    let rows = grad.shape()[grad.rank() - 2];
    let cols = grad.shape()[grad.rank() - 1];
    reduce(ReduceOp::Sum, &reshape(&grad, &[grad.numel() / (rows * cols), rows, cols]), 0, false)
}

/// CPU reference: the triple loop, per batch, with the same broadcasting rules.
pub fn matmul_reference(a: &HostTensor, b: &HostTensor, trans_a: bool, trans_b: bool) -> HostTensor {
    let (m, k) = op_dims(&a.shape, trans_a);
    let (_, n) = op_dims(&b.shape, trans_b);
    let batch_a = &a.shape[..a.shape.len() - 2];
    let batch_b = &b.shape[..b.shape.len() - 2];
    let batch_shape = if batch_a.is_empty() { batch_b } else { batch_a };
    let batch = numel(batch_shape);
    let at = |t: &HostTensor, shared: bool, bi: usize, r: usize, c: usize, trans: bool| {
        let (rows, cols) = (t.shape[t.shape.len() - 2], t.shape[t.shape.len() - 1]);
        let base = if shared { 0 } else { bi * rows * cols };
        if trans {
            t.data[base + c * cols + r]
        } else {
            t.data[base + r * cols + c]
        }
    };
    let mut data = vec![0.0; batch * m * n];
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                data[(bi * m + i) * n + j] =
                    (0..k).map(|p| at(a, batch_a.is_empty(), bi, i, p, trans_a) * at(b, batch_b.is_empty(), bi, p, j, trans_b)).sum();
            }
        }
    }
    let mut shape = batch_shape.to_vec();
    shape.extend([m, n]);
    HostTensor::new(&shape, data)
}
