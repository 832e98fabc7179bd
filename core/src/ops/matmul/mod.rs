//! Matrix multiplication: 2-D and batched, either operand transposed, any sizes, and the
//! grouped (per-expert) matmul of MoE layers, all from one kernel template
//! (`matmul.wgsl`). A 2-D right operand is shared across a batched left one, the
//! `x @ W` of every linear layer. Products run at the policy's precision (`Device::with_policy`);
//! which kernel runs them is `kernel`'s business.

pub mod kernel;

use crate::shape::numel;
use crate::{record, DType, Tensor};

use crate::ops::host::HostTensor;
use crate::ops::layout::reshape;
use crate::ops::matmul::kernel::{launch, Causal, Grouping, Precision};
use crate::ops::reduce::{reduce, ReduceOp};

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
    matmul_at(a, b, trans_a, trans_b, Causal::None, a.device().policy().precision)
}

/// `op(a) @ op(b)` for a batched product with attention's causal structure, which the
/// kernel uses to skip the half of the work the mask makes useless; its gradient products
/// keep the structure. With `Causal::Output` the entries above the diagonal are garbage:
/// the consumer must not read them and must give them a zero gradient, as the masked
/// softmax does.
pub(crate) fn matmul_causal(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool, causal: Causal) -> Tensor {
    matmul_at(a, b, trans_a, trans_b, causal, a.device().policy().precision)
}

/// The structure the gradients of a `causal` product `C = op(A) op(B)` inherit: (dA's
/// product, dB's). dC is zero above the diagonal whenever C is wanted only below it, and
/// dA is wanted only where A can be nonzero. Products whose structure would sit on their
/// right operand run whole.
fn gradient_structure(causal: Causal, trans_a: bool, trans_b: bool) -> (Causal, Causal) {
    match (causal, trans_a, trans_b) {
        // dA = dC op(B)ᵀ: dC is lower; dB = dCᵀ A: dCᵀ is upper.
        (Causal::Output, false, true) => (Causal::LowerA, Causal::UpperA),
        (Causal::Output, false, false) => (Causal::LowerA, Causal::None),
        // dA = dC op(B)ᵀ is wanted where A may be nonzero; dB = Aᵀ dC: Aᵀ is upper.
        (Causal::LowerA, false, false) => (Causal::Output, Causal::UpperA),
        (Causal::LowerA, false, true) => (Causal::Output, Causal::None),
        _ => (Causal::None, Causal::None),
    }
}

/// `matmul_t` at an explicit precision (the backward pass reuses its forward's).
fn matmul_at(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool, causal: Causal, precision: Precision) -> Tensor {
    let t = |on: bool| if on { "ᵀ" } else { "" };
    assert!(a.rank() >= 2 && b.rank() >= 2, "matmul: operands need at least 2 dimensions, got {:?} and {:?}", a.shape(), b.shape());
    assert!(a.dtype() == DType::F32 && b.dtype() == DType::F32, "matmul: expects f32 tensors, got {:?} and {:?}", a.dtype(), b.dtype());
    let (m, ka) = op_dims(a.shape(), trans_a);
    let (kb, n) = op_dims(b.shape(), trans_b);
    assert_eq!(ka, kb, "matmul: inner dimensions differ for a{} {:?} and b{} {:?}", t(trans_a), a.shape(), t(trans_b), b.shape());
    let batch_a = &a.shape()[..a.rank() - 2];
    let batch_b = &b.shape()[..b.rank() - 2];
    assert!(batch_a == batch_b || batch_a.is_empty() || batch_b.is_empty(), "matmul: batch dimensions of {:?} and {:?} differ", a.shape(), b.shape());
    // x @ W with x batched: one big 2-D product instead of a batch of small ones.
    if batch_b.is_empty() && !batch_a.is_empty() && !trans_a && causal == Causal::None {
        let flat = reshape(a, &[numel(batch_a) * m, ka]);
        let mut shape = batch_a.to_vec();
        shape.extend([m, n]);
        return reshape(&matmul_at(&flat, b, false, trans_b, causal, precision), &shape);
    }
    let batch_shape = if batch_a.is_empty() { batch_b } else { batch_a };
    let batch = numel(batch_shape);
    let mut shape = batch_shape.to_vec();
    shape.extend([m, n]);
    let stride = |batch_dims: &[usize], x: &Tensor| if batch_dims.is_empty() { 0 } else { x.shape()[x.rank() - 2] * x.shape()[x.rank() - 1] };
    let grouping = Grouping::Batched { batch, stride_a: stride(batch_a, a), stride_b: stride(batch_b, b), causal };
    let out = launch(grouping, a, b, [trans_a, trans_b], [m, n, ka], &shape, precision);
    let (sa, sb) = (a.clone(), b.clone());
    let (need_a, need_b) = (a.is_tracked(), b.is_tracked());
    let (causal_a, causal_b) = gradient_structure(causal, trans_a, trans_b);
    record("matmul", out, &[a, b], move |g| {
        // C = op(A) op(B): dop(A) = dC op(B)ᵀ, dop(B) = op(A)ᵀ dC, transposed back as needed.
        let da = need_a.then(|| {
            let d = if trans_a { matmul_at(&sb, g, trans_b, true, causal_a, precision) } else { matmul_at(g, &sb, false, !trans_b, causal_a, precision) };
            sum_batch(d, sa.shape())
        });
        let db = need_b.then(|| {
            let d = if trans_b { matmul_at(g, &sa, true, trans_a, causal_b, precision) } else { matmul_at(&sa, g, !trans_a, false, causal_b, precision) };
            sum_batch(d, sb.shape())
        });
        vec![da, db]
    })
}

/// The MoE expert matmul: `x` `[N, in]` holds each expert's rows contiguously (rows
/// `offsets[e]..offsets[e+1]` belong to expert e, `offsets` u32 `[E + 1]` on the GPU),
/// `w` is `[E, in, out]`; row r of the result is `x[r] @ w[expert of r]`. All experts run
/// in one dispatch and empty experts are fine; nothing is read back to the host.
pub fn grouped_matmul(x: &Tensor, w: &Tensor, offsets: &Tensor) -> Tensor {
    assert!(x.rank() == 2 && w.rank() == 3, "grouped_matmul: x must be [rows, in] and w [experts, in, out], got {:?} and {:?}", x.shape(), w.shape());
    assert!(x.dtype() == DType::F32 && w.dtype() == DType::F32, "grouped_matmul: x and w must be f32");
    let (experts, inputs, outputs) = (w.shape()[0], w.shape()[1], w.shape()[2]);
    assert_eq!(x.shape()[1], inputs, "grouped_matmul: x {:?} and w {:?} disagree on the input width", x.shape(), w.shape());
    assert!(
        offsets.dtype() == DType::U32 && offsets.shape() == [experts + 1],
        "grouped_matmul: offsets must be u32 [{}], got {:?} {:?}",
        experts + 1,
        offsets.dtype(),
        offsets.shape()
    );
    let rows = x.shape()[0];
    let precision = x.device().policy().precision;
    let out =
        launch(Grouping::Rows { offsets, experts, stride_b: inputs * outputs }, x, w, [false, false], [rows, outputs, inputs], &[rows, outputs], precision);
    let (sx, sw, so) = (x.clone(), w.clone(), offsets.clone());
    let (need_x, need_w) = (x.is_tracked(), w.is_tracked());
    record("grouped_matmul", out, &[x, w], move |g| {
        let dx = need_x.then(|| {
            launch(
                Grouping::Rows { offsets: &so, experts, stride_b: inputs * outputs },
                g,
                &sw,
                [false, true],
                [rows, inputs, outputs],
                &[rows, inputs],
                precision,
            )
        });
        let dw = need_w
            .then(|| launch(Grouping::Depth { offsets: &so, experts }, &sx, g, [true, false], [inputs, outputs, rows], &[experts, inputs, outputs], precision));
        vec![dx, dw]
    })
}

/// CPU reference of `grouped_matmul`.
pub fn grouped_matmul_reference(x: &HostTensor, w: &HostTensor, offsets: &[u32]) -> HostTensor {
    let (inputs, outputs) = (w.shape[1], w.shape[2]);
    let rows = x.shape[0];
    let mut out = HostTensor::zeros(&[rows, outputs]);
    for e in 0..w.shape[0] {
        for r in offsets[e] as usize..offsets[e + 1] as usize {
            for j in 0..outputs {
                out.data[r * outputs + j] = (0..inputs).map(|i| x.data[r * inputs + i] * w.data[(e * inputs + i) * outputs + j]).sum();
            }
        }
    }
    out
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
                data[(bi * m + i) * n + j] = (0..k).map(|p| at(a, batch_a.is_empty(), bi, i, p, trans_a) * at(b, batch_b.is_empty(), bi, p, j, trans_b)).sum();
            }
        }
    }
    let mut shape = batch_shape.to_vec();
    shape.extend([m, n]);
    HostTensor::new(&shape, data)
}
