//! The dense peaks of adapters whose figures are published (SXM and desktop parts, no
//! sparsity), against which the benchmarks report a fraction of peak and training reports
//! its model FLOPs utilisation (MFU). `MOEGRAD_PEAK_TFLOPS` gives the matmul peak of an
//! adapter the table lacks (or overrides the table's).

use anyhow::{anyhow, Result};
use moegrad_core::ops::Precision;
use moegrad_core::Device;

/// Names `MOEGRAD_PEAK_TFLOPS`: the matmul peak at the run's precision, in TFLOP/s.
pub const PEAK_VARIABLE: &str = "MOEGRAD_PEAK_TFLOPS";

/// An adapter's dense peaks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peaks {
    pub fp32_flops: f64,
    /// f16 inputs with f32 sums on tensor cores.
    pub fp16_tensor_flops: f64,
    /// Memory bandwidth, bytes a second.
    pub bytes: f64,
}

/// The published peaks of the adapter, when it is one we know.
pub fn known_peaks(device: &Device) -> Option<Peaks> {
    let name = device.name().to_lowercase();
    let table: [(&str, Peaks); 4] = [
        ("h100", Peaks { fp32_flops: 67e12, fp16_tensor_flops: 989e12, bytes: 3.35e12 }),
        ("h200", Peaks { fp32_flops: 67e12, fp16_tensor_flops: 989e12, bytes: 4.8e12 }),
        ("a100", Peaks { fp32_flops: 19.5e12, fp16_tensor_flops: 312e12, bytes: 2.04e12 }),
        ("rtx 4090", Peaks { fp32_flops: 82.6e12, fp16_tensor_flops: 165e12, bytes: 1.01e12 }),
    ];
    table.into_iter().find(|(part, _)| name.contains(part)).map(|(_, p)| p)
}

/// The matmul peak a run at `precision` is measured against, in FLOP/s, and where it came
/// from; None for an adapter we know nothing of (MFU is then not reported).
pub fn matmul_peak(device: &Device, precision: Precision) -> Result<Option<(f64, String)>> {
    if let Ok(text) = std::env::var(PEAK_VARIABLE) {
        let tflops: f64 = text.trim().parse().map_err(|e| anyhow!("{PEAK_VARIABLE}={text:?} is not a number of TFLOP/s ({e})"))?;
        if !(tflops > 0.0 && tflops.is_finite()) {
            return Err(anyhow!("{PEAK_VARIABLE}={text:?} must be a positive number of TFLOP/s"));
        }
        return Ok(Some((tflops * 1e12, PEAK_VARIABLE.to_string())));
    }
    Ok(known_peaks(device).map(|p| {
        let (flops, what) = match precision {
            Precision::F32 => (p.fp32_flops, "fp32"),
            Precision::F16 => (p.fp16_tensor_flops, "f16 tensor-core"),
        };
        (flops, format!("{}'s {what} peak", device.name()))
    }))
}

/// Model FLOPs utilisation: the model's FLOPs a second over the peak of all `ranks` GPUs.
pub fn mfu(flops_per_token: f64, tokens_per_s: f64, peak_flops: f64, ranks: usize) -> f64 {
    flops_per_token * tokens_per_s / (peak_flops * ranks as f64)
}
