//! Top-k along the last axis, for k up to 8 and rows up to 256 entries (the expert count):
//! `topk.wgsl`. Ties go to the lower index. Backward scatters the values' gradient
//! to the chosen positions (`topk_backward.wgsl`).

use crate::{elementwise_grid, grid, record, DType, Tensor};

use crate::ops::common::with_ranking;
use crate::ops::host::HostTensor;

const SHADER: &str = include_str!("topk.wgsl");
const BACKWARD_SHADER: &str = include_str!("topk_backward.wgsl");

pub const MAX_K: usize = 8;
pub const MAX_ROW: usize = 256;

/// The k largest entries of each row of `x` `[..., n]`, largest first: `(values, indices)`,
/// both `[..., k]` (indices u32).
pub fn topk(x: &Tensor, k: usize) -> (Tensor, Tensor) {
    assert!(x.rank() >= 1, "topk: needs at least one dimension");
    assert_eq!(x.dtype(), DType::F32, "topk: expects f32, got {:?}", x.dtype());
    let n = x.shape()[x.rank() - 1];
    assert!((1..=MAX_K).contains(&k), "topk: k = {k} must be in 1..={MAX_K}");
    assert!(k <= n && n <= MAX_ROW, "topk: k = {k} needs rows of k..={MAX_ROW} entries, got shape {:?}", x.shape());
    let rows = x.numel() / n;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = k;
    let dev = x.device();
    let values = Tensor::output(dev, &shape, DType::F32, "topk");
    let indices = Tensor::output(dev, &shape, DType::U32, "topk");
    let params = [rows, n, k].map(|v| v as u32);
    if rows > 0 {
        let pipeline = dev.pipeline("topk", "main", || with_ranking(SHADER.to_string()));
        dev.launch(&pipeline, &params, &[x, &values, &indices], grid(rows.div_ceil(64)));
    }
    let (saved_indices, x_shape) = (indices.clone(), x.shape().to_vec());
    let values = record("topk", values, &[x], move |g| {
        let dev = g.device();
        let dx = Tensor::output_zeros(dev, &x_shape, DType::F32, "topk backward");
        if g.numel() > 0 {
            let pipeline = dev.pipeline("topk_backward", "main", || BACKWARD_SHADER.to_string());
            dev.launch(&pipeline, &params, &[g, &saved_indices, &dx], elementwise_grid(g.numel()));
        }
        vec![Some(dx)]
    });
    (values, indices)
}

/// `[rows, n]` with 1 at each row's `indices` (`[rows, k]`, u32) and 0 elsewhere: which
/// experts a token chose. Not differentiable.
pub fn selection_mask(indices: &Tensor, n: usize) -> Tensor {
    assert!(indices.rank() == 2 && indices.dtype() == DType::U32, "selection_mask: indices must be u32 [rows, k], got {:?}", indices.shape());
    let ones = Tensor::output_full(indices.device(), indices.shape(), 1.0, "selection_mask");
    scatter_choices(&ones, indices, n)
}

/// `[rows, n]` holding `values[r, j]` at column `indices[r, j]` (u32 `[rows, k]`, distinct
/// per row) and 0 elsewhere: a token's per-choice values laid out by expert. Not
/// differentiable. Reuses top-k's scatter.
pub fn scatter_choices(values: &Tensor, indices: &Tensor, n: usize) -> Tensor {
    assert!(indices.rank() == 2 && indices.dtype() == DType::U32, "scatter_choices: indices must be u32 [rows, k], got {:?}", indices.shape());
    assert_eq!(values.shape(), indices.shape(), "scatter_choices: values {:?} and indices {:?} differ in shape", values.shape(), indices.shape());
    let (rows, k) = (indices.shape()[0], indices.shape()[1]);
    let dev = indices.device();
    let out = Tensor::output_zeros(dev, &[rows, n], DType::F32, "scatter_choices");
    if indices.numel() > 0 {
        let pipeline = dev.pipeline("topk_backward", "main", || BACKWARD_SHADER.to_string());
        dev.launch(&pipeline, &[rows as u32, n as u32, k as u32], &[values, indices, &out], elementwise_grid(indices.numel()));
    }
    out
}

/// CPU reference: a stable sort of each row by descending value.
pub fn topk_reference(x: &HostTensor, k: usize) -> (HostTensor, Vec<u32>) {
    let n = *x.shape.last().unwrap();
    let mut shape = x.shape.clone();
    *shape.last_mut().unwrap() = k;
    let (mut values, mut indices) = (Vec::new(), Vec::new());
    for row in x.data.chunks(n) {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
        for &i in &order[..k] {
            values.push(row[i]);
            indices.push(i as u32);
        }
    }
    (HostTensor::new(&shape, values), indices)
}
