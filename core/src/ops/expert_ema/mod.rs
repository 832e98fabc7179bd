//! The Default MoE's running defaults: each expert's EMA of its own outputs
//! (`expert_ema.wgsl`). Not differentiable: the defaults are model state. The update is
//! split into the per-expert sums of this step's outputs and the EMA from them, so that
//! data-parallel ranks can add up their sums (and counts) between the two: every rank
//! then moves its defaults by the mean over all ranks' tokens.

use crate::{elementwise_grid, render_template, DType, Tensor};

use crate::ops::host::HostTensor;
use crate::ops::permute::Routing;

const SHADER: &str = include_str!("expert_ema.wgsl");

/// The kernels, with rows counted alike or by their slots' weights (bindings 7 and 8).
fn shader(weighted: bool) -> String {
    let weights = if weighted {
        "@group(0) @binding(7) var<storage, read> slot_weights: array<f32>;\n\
         @group(0) @binding(8) var<storage, read> sorted_slots: array<u32>;\n\
         fn row_weight(r: u32) -> f32 { return slot_weights[sorted_slots[r]]; }"
    } else {
        "fn row_weight(r: u32) -> f32 { return 1.0; }"
    };
    render_template(SHADER, &[("WEIGHTED", if weighted { "true" } else { "false" }), ("ROW_WEIGHTS", weights)])
}

/// `[E, d + 1]`: for each expert, the sum of its output rows this step (columns `0..d`)
/// and their number (column `d`), from the outputs in expert order (`[rows, d]`) and the
/// experts' `offsets` (u32 `[E + 1]`).
pub fn expert_output_sums(expert_rows: &Tensor, offsets: &Tensor) -> Tensor {
    assert!(expert_rows.rank() == 2, "expert_output_sums: rows {:?} must be [_, d]", expert_rows.shape());
    assert!(offsets.rank() == 1 && offsets.numel() >= 1, "expert_output_sums: offsets {:?} must be [E + 1]", offsets.shape());
    let (experts, d) = (offsets.numel() - 1, expert_rows.shape()[1]);
    let dev = expert_rows.device();
    if expert_rows.numel() == 0 || experts == 0 {
        return Tensor::output_zeros(dev, &[experts, d + 1], DType::F32, "expert_output_sums");
    }
    let sums = Tensor::output(dev, &[experts, d + 1], DType::F32, "expert_output_sums");
    let pipeline = dev.pipeline("expert_ema/sums", "sums", || shader(false));
    let params = [experts as u32, d as u32, 0];
    dev.launch_bound(&pipeline, &params, &[(2, expert_rows), (3, offsets), (4, &sums)], elementwise_grid(sums.numel()));
    sums
}

/// `expert_output_sums` with each row weighted by its slot's entry of `slot_weights`
/// (`[T, k]`, e.g. the router probabilities of the chosen experts), column `d` holding the
/// weights' sum: the EMA from it moves each default towards the probability-weighted mean
/// of its expert's outputs. `plan` routed the rows.
pub fn expert_output_sums_weighted(expert_rows: &Tensor, plan: &Routing, slot_weights: &Tensor) -> Tensor {
    assert!(
        expert_rows.rank() == 2 && expert_rows.shape()[0] == plan.tokens * plan.k,
        "expert_output_sums_weighted: rows {:?} must be [{}, d]",
        expert_rows.shape(),
        plan.tokens * plan.k
    );
    assert_eq!(
        slot_weights.shape(),
        &[plan.tokens, plan.k],
        "expert_output_sums_weighted: weights {:?} must be [{}, {}]",
        slot_weights.shape(),
        plan.tokens,
        plan.k
    );
    let (experts, d) = (plan.experts, expert_rows.shape()[1]);
    let dev = expert_rows.device();
    if expert_rows.numel() == 0 {
        return Tensor::output_zeros(dev, &[experts, d + 1], DType::F32, "expert_output_sums_weighted");
    }
    let sums = Tensor::output(dev, &[experts, d + 1], DType::F32, "expert_output_sums_weighted");
    let pipeline = dev.pipeline("expert_ema/sums_weighted", "sums", || shader(true));
    let params = [experts as u32, d as u32, 0];
    let bound = [(2, expert_rows), (3, &plan.offsets), (4, &sums), (7, slot_weights), (8, &plan.sorted_slots)];
    dev.launch_bound(&pipeline, &params, &bound, elementwise_grid(sums.numel()));
    sums
}

/// New defaults `[E, d]`: `beta * D_e + (1 - beta) * sum_e / count_e` from `sums`
/// `[E, d + 1]` (`expert_output_sums`, perhaps added up over ranks); an expert with no
/// rows keeps its vector.
pub fn expert_output_ema(defaults: &Tensor, sums: &Tensor, beta: f32) -> Tensor {
    let (experts, d) = (defaults.shape()[0], defaults.shape()[1]);
    assert_eq!(sums.shape(), &[experts, d + 1], "expert_output_ema: sums must be [{experts}, {}] for defaults {:?}", d + 1, defaults.shape());
    if defaults.numel() == 0 {
        return defaults.detach();
    }
    let dev = defaults.device();
    let updated = Tensor::output(dev, defaults.shape(), DType::F32, "expert_output_ema");
    let pipeline = dev.pipeline("expert_ema/update", "update", || shader(false));
    let params = [experts as u32, d as u32, beta.to_bits()];
    dev.launch_bound(&pipeline, &params, &[(1, defaults), (5, sums), (6, &updated)], elementwise_grid(updated.numel()));
    updated
}

/// CPU reference of `expert_output_sums`.
pub fn expert_output_sums_reference(expert_rows: &HostTensor, offsets: &[u32]) -> HostTensor {
    expert_output_sums_weighted_reference(expert_rows, offsets, &vec![1.0; expert_rows.shape[0]])
}

/// CPU reference of `expert_output_sums_weighted`: `weights` per row in expert order.
pub fn expert_output_sums_weighted_reference(expert_rows: &HostTensor, offsets: &[u32], row_weights: &[f64]) -> HostTensor {
    let d = expert_rows.shape[1];
    let experts = offsets.len() - 1;
    let mut out = HostTensor { shape: vec![experts, d + 1], data: vec![0.0; experts * (d + 1)] };
    for e in 0..experts {
        let rows = offsets[e] as usize..offsets[e + 1] as usize;
        for c in 0..d {
            out.data[e * (d + 1) + c] = rows.clone().map(|r| row_weights[r] * expert_rows.data[r * d + c]).sum();
        }
        out.data[e * (d + 1) + d] = rows.map(|r| row_weights[r]).sum();
    }
    out
}

/// CPU reference of `expert_output_ema`.
pub fn expert_output_ema_reference(defaults: &HostTensor, sums: &HostTensor, beta: f64) -> HostTensor {
    let d = defaults.shape[1];
    let mut out = defaults.clone();
    for e in 0..defaults.shape[0] {
        let count = sums.data[e * (d + 1) + d];
        if count == 0.0 {
            continue;
        }
        for c in 0..d {
            out.data[e * d + c] = beta * defaults.data[e * d + c] + (1.0 - beta) * sums.data[e * (d + 1) + c] / count;
        }
    }
    out
}
