//! Multi-head attention, `softmax(q k^T / sqrt(d) [+ causal mask]) v`, from batched
//! matmuls and the masked softmax (whose temperature applies the scale); its backward is
//! theirs. With the causal mask every product skips the masked half (`Causal`): the
//! scores above the diagonal are never computed, and the products with the (zero) upper
//! half of the probabilities stop at the diagonal.

use crate::Tensor;

use crate::ops::host::HostTensor;
use crate::ops::matmul::kernel::Causal;
use crate::ops::matmul::{matmul_causal, matmul_reference};
use crate::ops::softmax::{softmax_reference, softmax_with, Mask, SoftmaxKind, SoftmaxOptions};

/// `q` `[..., T, d]`, `k` and `v` `[..., S, d]` (heads folded into the leading dimensions).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Tensor {
    assert!(q.rank() >= 2 && q.rank() == k.rank() && k.shape() == v.shape(), "attention: q {:?}, k {:?}, v {:?} do not fit", q.shape(), k.shape(), v.shape());
    let d = q.shape()[q.rank() - 1];
    assert!(d > 0, "attention: heads of width 0 (q {:?}) have no scores", q.shape());
    let (mask, scores_structure, probs_structure) =
        if causal { (Mask::Causal, Causal::Output, Causal::LowerA) } else { (Mask::None, Causal::None, Causal::None) };
    let scores = matmul_causal(q, k, false, true, scores_structure);
    // The 1/sqrt(d) scale is the softmax's temperature: no pass of its own over the scores.
    let probs = softmax_with(&scores, &SoftmaxOptions { mask, temperature: (d as f32).sqrt(), ..SoftmaxOptions::new(SoftmaxKind::Softmax) });
    matmul_causal(&probs, v, false, false, probs_structure)
}

/// CPU reference.
pub fn attention_reference(q: &HostTensor, k: &HostTensor, v: &HostTensor, causal: bool) -> HostTensor {
    let d = *q.shape.last().unwrap();
    let scores = matmul_reference(q, k, false, true).map(|s| s / (d as f64).sqrt());
    matmul_reference(&softmax_reference(&scores, SoftmaxKind::Softmax, 1.0, None, causal), v, false, false)
}
