//! The Default MoE's running defaults: each expert's EMA of its own outputs
//! (`expert_ema.wgsl`). Not differentiable: the defaults are model state.

use crate::{elementwise_grid, DType, Tensor};

use crate::ops::host::HostTensor;

const SHADER: &str = include_str!("expert_ema.wgsl");

/// New defaults `[E, d]` from the old ones, this step's expert outputs in expert order
/// (`[rows, d]`) and the experts' `offsets` (u32 `[E + 1]`).
pub fn expert_output_ema(defaults: &Tensor, expert_rows: &Tensor, offsets: &Tensor, beta: f32) -> Tensor {
    let (experts, d) = (defaults.shape()[0], defaults.shape()[1]);
    assert!(expert_rows.rank() == 2 && expert_rows.shape()[1] == d, "expert_output_ema: rows {:?} must be [_, {d}]", expert_rows.shape());
    assert_eq!(offsets.shape(), &[experts + 1], "expert_output_ema: offsets must be [{}]", experts + 1);
    let dev = defaults.device();
    let updated = Tensor::output(dev, defaults.shape(), DType::F32, "expert_output_ema");
    if updated.numel() > 0 && expert_rows.numel() > 0 {
        let pipeline = dev.pipeline("expert_ema", "main", || SHADER.to_string());
        let params = [experts as u32, d as u32, beta.to_bits()];
        dev.launch(&pipeline, &params, &[defaults, expert_rows, offsets, &updated], elementwise_grid(updated.numel()));
        updated
    } else {
        defaults.detach()
    }
}

/// CPU reference.
pub fn expert_output_ema_reference(defaults: &HostTensor, expert_rows: &HostTensor, offsets: &[u32], beta: f64) -> HostTensor {
    let d = defaults.shape[1];
    let mut out = defaults.clone();
    for e in 0..defaults.shape[0] {
        let (begin, end) = (offsets[e] as usize, offsets[e + 1] as usize);
        if begin == end {
            continue;
        }
        for c in 0..d {
            let mean = (begin..end).map(|r| expert_rows.data[r * d + c]).sum::<f64>() / (end - begin) as f64;
            out.data[e * d + c] = beta * defaults.data[e * d + c] + (1.0 - beta) * mean;
        }
    }
    out
}
