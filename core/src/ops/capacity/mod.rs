//! Expert capacity (`capacity.wgsl`): with room for `capacity` slots per expert, which of
//! the routed slots each expert keeps, the highest router scores first (ties to the
//! earlier token). A dropped slot's gate weight becomes 0, so its token passes that
//! expert by, through the residual stream alone (Switch Transformer, GShard). Not
//! differentiable: a 0/1 mask, as the routing itself.

use crate::{grid, DType, Tensor};

use crate::ops::permute::Routing;

const SHADER: &str = include_str!("capacity.wgsl");

/// Slots per expert for a capacity factor: `ceil(factor * slots / experts)`, as Switch
/// Transformer defines it (1.0 is room for a perfectly balanced load).
pub fn expert_capacity(factor: f32, tokens: usize, k: usize, experts: usize) -> usize {
    (factor as f64 * (tokens * k) as f64 / experts as f64).ceil() as usize
}

/// `[T, k]` 1 where expert `indices[t, j]` keeps token t's slot and 0 where it drops it,
/// from the router scores `probs` `[T, E]`, the choices `indices` (u32 `[T, k]`) and
/// their `plan`.
pub fn capacity_keep(probs: &Tensor, indices: &Tensor, plan: &Routing, capacity: usize) -> Tensor {
    let (tokens, experts) = (plan.tokens, plan.experts);
    assert_eq!(probs.shape(), &[tokens, experts], "capacity_keep: scores {:?} must be [{tokens}, {experts}]", probs.shape());
    assert!(indices.shape() == [tokens, plan.k] && indices.dtype() == DType::U32, "capacity_keep: indices must be u32 [{tokens}, {}]", plan.k);
    let dev = probs.device();
    let keep = Tensor::output(dev, &[tokens, plan.k], DType::F32, "capacity_keep");
    if keep.numel() > 0 {
        let pipeline = dev.pipeline("capacity_keep", "main", || SHADER.to_string());
        let params = [experts, plan.k, capacity.min(u32::MAX as usize)].map(|v| v as u32);
        dev.launch(&pipeline, &params, &[probs, indices, &plan.offsets, &plan.sorted_slots, &keep], grid(experts));
    }
    keep
}

/// CPU reference of `capacity_keep` from the scores `[T, E]` (row-major) and choices.
pub fn capacity_keep_reference(probs: &[f64], indices: &[u32], experts: usize, k: usize, capacity: usize) -> Vec<f64> {
    let mut keep = vec![0.0; indices.len()];
    for e in 0..experts as u32 {
        let mut slots: Vec<usize> = (0..indices.len()).filter(|&s| indices[s] == e).collect();
        let score = |s: usize| probs[(s / k) * experts + e as usize];
        slots.sort_by(|&a, &b| score(b).partial_cmp(&score(a)).unwrap().then(a.cmp(&b)));
        slots.iter().take(capacity).for_each(|&s| keep[s] = 1.0);
    }
    keep
}
