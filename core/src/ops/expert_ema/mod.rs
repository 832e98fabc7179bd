//! The Default MoE's running defaults: each expert's EMA of its own outputs
//! (`expert_ema.wgsl`). Not differentiable: the defaults are model state. The update is
//! split into the per-expert sums of this step's outputs and the EMA from them, so that
//! data-parallel ranks can add up their sums (and counts) between the two: every rank
//! then moves its defaults by the mean over all ranks' tokens.

use crate::{elementwise_grid, DType, Tensor};

use crate::ops::host::HostTensor;

const SHADER: &str = include_str!("expert_ema.wgsl");

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
    let pipeline = dev.pipeline("expert_ema/sums", "sums", || SHADER.to_string());
    let params = [experts as u32, d as u32, 0];
    dev.launch_bound(&pipeline, &params, &[(2, expert_rows), (3, offsets), (4, &sums)], elementwise_grid(sums.numel()));
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
    let pipeline = dev.pipeline("expert_ema/update", "update", || SHADER.to_string());
    let params = [experts as u32, d as u32, beta.to_bits()];
    dev.launch_bound(&pipeline, &params, &[(1, defaults), (5, sums), (6, &updated)], elementwise_grid(updated.numel()));
    updated
}

/// CPU reference of `expert_output_sums`.
pub fn expert_output_sums_reference(expert_rows: &HostTensor, offsets: &[u32]) -> HostTensor {
    let d = expert_rows.shape[1];
    let experts = offsets.len() - 1;
    let mut out = HostTensor { shape: vec![experts, d + 1], data: vec![0.0; experts * (d + 1)] };
    for e in 0..experts {
        let rows = offsets[e] as usize..offsets[e + 1] as usize;
        for c in 0..d {
            out.data[e * (d + 1) + c] = rows.clone().map(|r| expert_rows.data[r * d + c]).sum();
        }
        out.data[e * (d + 1) + d] = rows.len() as f64;
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
