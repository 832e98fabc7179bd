//! Token permutation by expert, and moving rows between token order and expert order.
//!
//! `plan_routing` turns each token's k expert choices ("slots", slot = token * k + j) into
//! per-expert counts, offsets (exclusive prefix sums) and a stable order of the slots
//! grouped by expert, plus its inverse (`permute.wgsl`). It is deterministic: the
//! same choices give the same permutation on every run. `gather_slots` builds the
//! expert-sorted rows; `combine_slots` sums them back per token with their gate weights
//! (`gather_slots.wgsl`, `combine.wgsl`). Both are differentiable and
//! deterministic (no floating-point atomics).

use std::sync::Arc;

use crate::{elementwise_grid, grid, record, DType, Device, Kernel, Tensor};

use crate::ops::common::rows::row_layout;
use crate::ops::common::{floats_per_load, with_load_type, with_row_chunks};
use crate::ops::host::HostTensor;

const PERMUTE_SHADER: &str = include_str!("permute.wgsl");
const GATHER_SHADER: &str = include_str!("gather_slots.wgsl");
const COMBINE_SHADER: &str = include_str!("combine.wgsl");
const COMBINE_WEIGHTS_BACKWARD_SHADER: &str = include_str!("combine_weights_backward.wgsl");
const EVERY_EXPERT_SHADER: &str = include_str!("every_expert.wgsl");

/// Most experts the permutation kernels handle (one workgroup scans the counts).
pub const MAX_EXPERTS: usize = 256;

/// Where every slot goes. All tensors are u32 and stay on the GPU.
#[derive(Clone)]
pub struct Routing {
    pub tokens: usize,
    pub k: usize,
    pub experts: usize,
    /// `[E]` slots routed to each expert.
    pub counts: Tensor,
    /// `[E + 1]` start of each expert's block in expert order; the last is T * k.
    pub offsets: Tensor,
    /// `[T * k]` the slot at each position of expert order.
    pub sorted_slots: Tensor,
    /// `[T * k]` the position of each slot in expert order.
    pub slot_positions: Tensor,
}

/// Plans the permutation for expert choices `[T, k]` (u32, each below `experts`).
pub fn plan_routing(expert_ids: &Tensor, experts: usize) -> Routing {
    assert!(
        expert_ids.rank() == 2 && expert_ids.dtype() == DType::U32,
        "plan_routing: expert ids must be u32 [tokens, k], got {:?} {:?}",
        expert_ids.dtype(),
        expert_ids.shape()
    );
    assert!((1..=MAX_EXPERTS).contains(&experts), "plan_routing: expert count {experts} must be in 1..={MAX_EXPERTS}");
    let (tokens, k) = (expert_ids.shape()[0], expert_ids.shape()[1]);
    let slots = tokens * k;
    let dev = expert_ids.device();
    let alloc = |n: usize| Tensor::output_zeros(dev, &[n], DType::U32, "plan_routing");
    let (counts, offsets, sorted_slots, slot_positions) = (alloc(experts), alloc(experts + 1), alloc(slots.max(1)), alloc(slots.max(1)));
    let params = [slots as u32, experts as u32];
    let bind = [(1, expert_ids), (2, &counts), (3, &offsets), (4, &sorted_slots), (5, &slot_positions)];
    if slots > 0 {
        let pipeline = dev.pipeline("permute/histogram", "histogram", || PERMUTE_SHADER.to_string());
        dev.launch_bound(&pipeline, &params, &bind[..2], grid(experts));
    }
    let pipeline = dev.pipeline("permute/offsets", "exclusive_offsets", || PERMUTE_SHADER.to_string());
    dev.launch_bound(&pipeline, &params, &bind[1..3], [1, 1, 1]);
    if slots > 0 {
        let pipeline = dev.pipeline("permute/scatter", "scatter", || PERMUTE_SHADER.to_string());
        dev.launch_bound(&pipeline, &params, &[bind[0], bind[2], bind[3], bind[4]], grid(experts));
    }
    Routing { tokens, k, experts, counts, offsets, sorted_slots, slot_positions }
}

/// The plan that sends each of `tokens` tokens to all `experts` experts (k = E, slot
/// `t * E + e` to expert e): dense MoE variants that run every expert on every token.
pub fn plan_every_expert(dev: &Device, tokens: usize, experts: usize) -> Routing {
    let ids = Tensor::output(dev, &[tokens, experts], DType::U32, "plan_every_expert");
    if ids.numel() > 0 {
        let pipeline = dev.pipeline("permute/every_expert", "main", || EVERY_EXPERT_SHADER.to_string());
        dev.launch(&pipeline, &[ids.numel() as u32, experts as u32], &[&ids], elementwise_grid(ids.numel()));
    }
    plan_routing(&ids, experts)
}

/// `x` `[T, d]` -> `[T * k, d]` in expert order: row `pos` is the token of slot `sorted_slots[pos]`.
pub fn gather_slots(x: &Tensor, routing: &Routing) -> Tensor {
    assert!(x.rank() == 2 && x.shape()[0] == routing.tokens, "gather_slots: x {:?} does not have the routing's {} tokens", x.shape(), routing.tokens);
    let d = x.shape()[1];
    let dev = x.device();
    let out = Tensor::output(dev, &[routing.tokens * routing.k, d], DType::F32, "gather_slots");
    if out.numel() > 0 {
        let vec = floats_per_load(d);
        let pipeline = dev.pipeline(&format!("gather_slots/vec{vec}"), "gather", || with_load_type(GATHER_SHADER.to_string(), vec));
        let params = [out.numel() / vec, d / vec, routing.k].map(|v| v as u32);
        dev.launch(&pipeline, &params, &[x, &routing.sorted_slots, &out], elementwise_grid(out.numel() / vec));
    }
    let r = routing.clone();
    record("gather_slots", out, &[x], move |g| {
        // Summing each token's k rows back is the weighted combine with unit weights.
        let ones = Tensor::output_full(g.device(), &[r.tokens, r.k], 1.0, "gather_slots backward");
        vec![Some(combine_forward(g, &ones, &r))]
    })
}

/// `rows` `[T * k, d]` in expert order and `weights` `[T, k]` -> `[T, d]`:
/// `y[t] = sum_j weights[t, j] * rows[slot_positions[t * k + j]]`.
pub fn combine_slots(rows: &Tensor, weights: &Tensor, routing: &Routing) -> Tensor {
    let (t, k) = (routing.tokens, routing.k);
    assert!(rows.rank() == 2 && rows.shape()[0] == t * k, "combine_slots: rows {:?} must be [{}, d]", rows.shape(), t * k);
    assert_eq!(weights.shape(), &[t, k], "combine_slots: weights {:?} must be [{t}, {k}]", weights.shape());
    let d = rows.shape()[1];
    let out = combine_forward(rows, weights, routing);
    let (r, saved_rows, saved_weights) = (routing.clone(), rows.clone(), weights.clone());
    let (need_rows, need_weights) = (rows.is_tracked(), weights.is_tracked());
    record("combine_slots", out, &[rows, weights], move |g| {
        let dev = g.device();
        let alloc = |shape: &[usize]| Tensor::output(dev, shape, DType::F32, "combine_slots backward");
        let vec = floats_per_load(d);
        let drows = need_rows.then(|| {
            let drows = alloc(saved_rows.shape());
            if drows.numel() > 0 {
                let params = [drows.numel() / vec, d / vec, k].map(|v| v as u32);
                let loads = drows.numel() / vec;
                dev.launch(&combine_pipeline(dev, "backward_rows", vec), &params, &[g, &saved_weights, &r.sorted_slots, &drows], elementwise_grid(loads));
            }
            drows
        });
        let dweights = need_weights.then(|| {
            if d == 0 {
                // Empty rows: every dot product is 0.
                return Tensor::output_zeros(dev, saved_weights.shape(), DType::F32, "combine_slots backward");
            }
            let dw = alloc(saved_weights.shape());
            if dw.numel() > 0 {
                let params = [dw.numel(), d / vec, k].map(|v| v as u32);
                let layout = row_layout(dev, d);
                let key = format!("combine_weights_backward/{}/vec{vec}", layout.name());
                let pipeline = dev.pipeline(&key, "main", || with_row_chunks(layout.render(COMBINE_WEIGHTS_BACKWARD_SHADER, &[]), vec));
                dev.launch(&pipeline, &params, &[g, &r.slot_positions, &saved_rows, &dw], layout.groups(dw.numel()));
            }
            dw
        });
        vec![drows, dweights]
    })
}

/// The combine kernel alone (not recorded): `y[t] = sum_j weights[t, j] * rows[pos(t, j)]`.
fn combine_forward(rows: &Tensor, weights: &Tensor, routing: &Routing) -> Tensor {
    let (t, k, d) = (routing.tokens, routing.k, rows.shape()[1]);
    let dev = rows.device();
    let out = Tensor::output(dev, &[t, d], DType::F32, "combine_slots");
    if out.numel() > 0 {
        let vec = floats_per_load(d);
        let params = [out.numel() / vec, d / vec, k].map(|v| v as u32);
        let loads = out.numel() / vec;
        dev.launch(&combine_pipeline(dev, "combine", vec), &params, &[rows, weights, &routing.slot_positions, &out], elementwise_grid(loads));
    }
    out
}

/// An entry of `combine.wgsl` reading rows `vec` floats at a time.
fn combine_pipeline(dev: &Device, entry: &str, vec: usize) -> Arc<Kernel> {
    dev.pipeline(&format!("combine/{entry}/vec{vec}"), entry, || with_row_chunks(COMBINE_SHADER.to_string(), vec))
}

/// CPU reference of `plan_routing`: (counts, offsets, sorted_slots, slot_positions).
pub fn plan_routing_reference(expert_ids: &[u32], experts: usize) -> (Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut counts = vec![0u32; experts];
    expert_ids.iter().for_each(|&e| counts[e as usize] += 1);
    let offsets: Vec<u32> = std::iter::once(0)
        .chain(counts.iter().scan(0, |acc, &c| {
            *acc += c;
            Some(*acc)
        }))
        .collect();
    let mut sorted: Vec<u32> = (0..expert_ids.len() as u32).collect();
    sorted.sort_by_key(|&s| expert_ids[s as usize]); // stable: keeps slot order per expert
    let mut positions = vec![0u32; expert_ids.len()];
    sorted.iter().enumerate().for_each(|(pos, &s)| positions[s as usize] = pos as u32);
    (counts, offsets, sorted, positions)
}

/// CPU reference of `gather_slots`.
pub fn gather_slots_reference(x: &HostTensor, sorted_slots: &[u32], k: usize) -> HostTensor {
    let d = x.shape[1];
    let data = sorted_slots.iter().flat_map(|&s| x.data[(s as usize / k) * d..(s as usize / k + 1) * d].to_vec()).collect();
    HostTensor::new(&[sorted_slots.len(), d], data)
}

/// CPU reference of `combine_slots`.
pub fn combine_slots_reference(rows: &HostTensor, weights: &HostTensor, slot_positions: &[u32]) -> HostTensor {
    let (t, k) = (weights.shape[0], weights.shape[1]);
    let d = rows.shape[1];
    let mut out = HostTensor::zeros(&[t, d]);
    for (s, &pos) in slot_positions.iter().enumerate().take(t * k) {
        let pos = pos as usize;
        for c in 0..d {
            out.data[(s / k) * d + c] += weights.data[s] * rows.data[pos * d + c];
        }
    }
    out
}
