//! Tensor shapes: a small vector of dimensions, row-major.

use smallvec::SmallVec;

/// Dimensions of a tensor; most tensors have at most four, so they live inline.
pub type Shape = SmallVec<[usize; 4]>;

/// Number of elements of a shape (1 for a scalar, shape `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides, in elements.
pub fn strides(shape: &[usize]) -> Shape {
    let mut s: Shape = SmallVec::from_elem(1, shape.len());
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Splits `shape` around `axis` into (product before, size of axis, product after): the
/// [outer, n, inner] view that every axis-wise kernel works on.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}
