//! Ops that rearrange data: `reshape` (a free view of the same buffer) and `transpose`
//! (a copy through the strided kernel with permuted strides).

use crate::shape::{numel, strides};
use crate::{record, Tensor};

use crate::ops::host::{unravel, HostTensor};
use crate::ops::strided::strided;

/// The same data under a new shape with as many elements.
pub fn reshape(x: &Tensor, shape: &[usize]) -> Tensor {
    assert_eq!(numel(shape), x.numel(), "reshape: cannot view shape {:?} as {:?}", x.shape(), shape);
    let in_shape = x.shape().to_vec();
    record("reshape", x.alias(shape), &[x], move |g| vec![Some(reshape(g, &in_shape))])
}

/// Swaps two axes (a contiguous copy).
pub fn transpose(x: &Tensor, d0: usize, d1: usize) -> Tensor {
    assert!(d0 < x.rank() && d1 < x.rank(), "transpose: axes {d0} and {d1} out of range for shape {:?}", x.shape());
    let mut shape = x.shape().to_vec();
    shape.swap(d0, d1);
    let mut s = strides(x.shape()).to_vec();
    s.swap(d0, d1);
    let out = strided("transpose", "a", &shape, x, &s, x, &s);
    record("transpose", out, &[x], move |g| vec![Some(transpose(g, d0, d1))])
}

/// CPU reference of `transpose`.
pub fn transpose_reference(x: &HostTensor, d0: usize, d1: usize) -> HostTensor {
    let mut shape = x.shape.clone();
    shape.swap(d0, d1);
    let data = (0..x.numel())
        .map(|flat| {
            let mut index = unravel(flat, &shape);
            index.swap(d0, d1);
            x.at(&index)
        })
        .collect();
    HostTensor::new(&shape, data)
}
