//! How many elements of a set of tensors are NaN or infinite, counted on the GPU into one
//! scalar (`count_non_finite.wgsl`). The trainer reads it back with the loss before it
//! writes a checkpoint: weights or optimizer moments that an update turned non-finite
//! must never replace a good checkpoint, and the loss alone (computed before the update)
//! cannot tell.

use crate::{elementwise_grid, DType, Tensor};

const SHADER: &str = include_str!("count_non_finite.wgsl");

/// The number of NaN or infinite elements in all of `tensors` (f32), as a `[1]` u32 tensor
/// on their device; `None` when `tensors` is empty. Records one launch per tensor and
/// reads nothing back.
pub fn count_non_finite(tensors: &[Tensor]) -> Option<Tensor> {
    let dev = tensors.first()?.device().clone();
    let count = Tensor::output_zeros(&dev, &[1], DType::U32, "count_non_finite");
    let kernel = dev.pipeline("finite/count_non_finite", "count_non_finite", || SHADER.to_string());
    for t in tensors.iter().filter(|t| t.numel() > 0) {
        assert_eq!(t.dtype(), DType::F32, "count_non_finite: tensors must be f32, got {:?}", t.dtype());
        dev.launch(&kernel, &[t.numel() as u32], &[t, &count], elementwise_grid(t.numel()));
    }
    Some(count)
}

/// The CPU reference: NaN and infinite values among all of `values`.
pub fn count_non_finite_reference(values: &[&[f64]]) -> u64 {
    values.iter().flat_map(|v| v.iter()).filter(|x| !x.is_finite()).count() as u64
}
