//! `slice` and `concat` along an axis. Both are block copies between [outer, axis, inner]
//! views (`copy_block.wgsl`), and each one's backward is the other's kind of copy.

use crate::shape::split_at_axis;
use crate::{elementwise_grid, record, DType, Tensor};

use crate::ops::host::HostTensor;

const SHADER: &str = include_str!("copy_block.wgsl");

/// Copies positions `src_start..src_start+len` of `src`'s `axis` to `dst_start..` of `dst`'s.
fn copy_block(src: &Tensor, src_start: usize, dst: &Tensor, dst_start: usize, axis: usize, len: usize) {
    let (outer, src_axis, inner) = split_at_axis(src.shape(), axis);
    let dst_axis = dst.shape()[axis];
    let total = outer * len * inner;
    if total == 0 {
        return;
    }
    let dev = src.device();
    let params = [total, len, inner, src_axis, src_start, dst_axis, dst_start].map(|v| v as u32);
    let pipeline = dev.pipeline("copy_block", "main", || SHADER.to_string());
    dev.launch(&pipeline, &params, &[src, dst], elementwise_grid(total));
}

/// Positions `start..start+len` of `axis`.
pub fn slice(x: &Tensor, axis: usize, start: usize, len: usize) -> Tensor {
    assert!(axis < x.rank(), "slice: axis {axis} is out of range for shape {:?}", x.shape());
    assert!(start + len <= x.shape()[axis], "slice: range {start}..{} is out of bounds for axis {axis} of shape {:?}", start + len, x.shape());
    assert_eq!(x.dtype(), DType::F32, "slice: expects an f32 tensor, got {:?}", x.dtype());
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    let out = Tensor::output(x.device(), &shape, DType::F32, "slice");
    copy_block(x, start, &out, 0, axis, len);
    let in_shape = x.shape().to_vec();
    record("slice", out, &[x], move |g| {
        let dx = Tensor::output_zeros(g.device(), &in_shape, DType::F32, "slice backward");
        copy_block(g, 0, &dx, start, axis, len);
        vec![Some(dx)]
    })
}

/// Joins tensors along `axis`; all other dimensions must agree.
pub fn concat(xs: &[&Tensor], axis: usize) -> Tensor {
    assert!(!xs.is_empty(), "concat: no tensors given");
    let first = xs[0].shape();
    assert!(axis < first.len(), "concat: axis {axis} is out of range for shape {first:?}");
    for x in xs {
        let same = x.rank() == first.len() && (0..first.len()).all(|d| d == axis || x.shape()[d] == first[d]);
        assert!(same, "concat: shape {:?} does not match {:?} outside axis {axis}", x.shape(), first);
        assert_eq!(x.dtype(), DType::F32, "concat: expects f32 tensors, got {:?}", x.dtype());
    }
    let lens: Vec<usize> = xs.iter().map(|x| x.shape()[axis]).collect();
    let mut shape = first.to_vec();
    shape[axis] = lens.iter().sum();
    let out = Tensor::output(xs[0].device(), &shape, DType::F32, "concat");
    let mut start = 0;
    for (x, &len) in xs.iter().zip(&lens) {
        copy_block(x, 0, &out, start, axis, len);
        start += len;
    }
    record("concat", out, xs, move |g| {
        let mut start = 0;
        lens.iter()
            .map(|&len| {
                start += len;
                Some(slice(g, axis, start - len, len))
            })
            .collect()
    })
}

/// CPU reference of `slice`.
pub fn slice_reference(x: &HostTensor, axis: usize, start: usize, len: usize) -> HostTensor {
    let (outer, n, inner) = split_at_axis(&x.shape, axis);
    let mut shape = x.shape.clone();
    shape[axis] = len;
    let mut data = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        data.extend_from_slice(&x.data[(o * n + start) * inner..(o * n + start + len) * inner]);
    }
    HostTensor::new(&shape, data)
}

/// CPU reference of `concat`.
pub fn concat_reference(xs: &[&HostTensor], axis: usize) -> HostTensor {
    let mut shape = xs[0].shape.clone();
    shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
    let (outer, _, _) = split_at_axis(&shape, axis);
    let mut data = Vec::with_capacity(xs.iter().map(|x| x.numel()).sum());
    for o in 0..outer {
        for x in xs {
            let block = x.numel() / outer;
            data.extend_from_slice(&x.data[o * block..(o + 1) * block]);
        }
    }
    HostTensor::new(&shape, data)
}
