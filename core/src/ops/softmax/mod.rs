//! The softmax family along the last axis: softmax, log-softmax and StableMax, each with an
//! optional temperature and mask (causal, or a 0/1 tensor). Forward
//! `softmax.wgsl`, backward `softmax_backward.wgsl`; the variants come
//! from those two templates.

use crate::{record, DType, Tensor};

use crate::ops::common::rows::{loads_kept, row_layout};
use crate::ops::common::{each_kept, floats_per_load, with_row_chunks};
use crate::ops::host::HostTensor;

const SHADER: &str = include_str!("softmax.wgsl");
const BACKWARD_SHADER: &str = include_str!("softmax_backward.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxKind {
    Softmax,
    LogSoftmax,
    /// s(z) = z + 1 for z >= 0, 1 / (1 - z) for z < 0, normalised by the row sum: a
    /// softmax replacement whose outputs do not collapse to exact zeros.
    StableMax,
}

impl SoftmaxKind {
    fn mode(self) -> u32 {
        match self {
            SoftmaxKind::Softmax => 0,
            SoftmaxKind::LogSoftmax => 1,
            SoftmaxKind::StableMax => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SoftmaxKind::Softmax => "softmax",
            SoftmaxKind::LogSoftmax => "log_softmax",
            SoftmaxKind::StableMax => "stablemax",
        }
    }
}

/// Which entries of each row take part.
#[derive(Clone, Debug, Default)]
pub enum Mask {
    #[default]
    None,
    /// For `[..., T, S]` scores (S >= T, keys aligned to the end), query i sees keys
    /// `0..=i + S - T`.
    Causal,
    /// A `[mask_rows, n]` tensor of 0/1 (f32); row r of the input uses mask row
    /// `r % mask_rows`, so a `[T, S]` mask serves `[batch, heads, T, S]` scores.
    Tensor(Tensor),
}

#[derive(Clone, Debug)]
pub struct SoftmaxOptions {
    pub kind: SoftmaxKind,
    pub mask: Mask,
    /// Logits are divided by this before normalising.
    pub temperature: f32,
}

impl SoftmaxOptions {
    pub fn new(kind: SoftmaxKind) -> Self {
        SoftmaxOptions { kind, mask: Mask::None, temperature: 1.0 }
    }
}

pub fn softmax(x: &Tensor) -> Tensor {
    softmax_with(x, &SoftmaxOptions::new(SoftmaxKind::Softmax))
}

pub fn log_softmax(x: &Tensor) -> Tensor {
    softmax_with(x, &SoftmaxOptions::new(SoftmaxKind::LogSoftmax))
}

pub fn stablemax(x: &Tensor) -> Tensor {
    softmax_with(x, &SoftmaxOptions::new(SoftmaxKind::StableMax))
}

/// Softmax with the causal mask, for attention scores `[..., T, S]`.
pub fn causal_softmax(x: &Tensor) -> Tensor {
    softmax_with(x, &SoftmaxOptions { mask: Mask::Causal, ..SoftmaxOptions::new(SoftmaxKind::Softmax) })
}

/// `allowed_chunk`: the mask's `allowed` over one load of `vec` floats.
fn allowed_chunk_code(vec: usize) -> &'static str {
    if vec == 4 {
        "fn allowed_chunk(row: u32, c: u32) -> vec4<bool> {\n\
             let j = 4u * c;\n\
             return vec4<bool>(allowed(row, j), allowed(row, j + 1u), allowed(row, j + 2u), allowed(row, j + 3u));\n\
         }"
    } else {
        "fn allowed_chunk(row: u32, c: u32) -> bool { return allowed(row, c); }"
    }
}

/// (rows, n, mask_rows, causal_t) after checking the options against `x`.
fn layout(op: &str, x: &Tensor, mask: &Mask) -> (usize, usize, usize, usize) {
    assert!(x.rank() >= 1, "{op}: needs at least one dimension, got a scalar");
    assert_eq!(x.dtype(), DType::F32, "{op}: expects an f32 tensor, got {:?}", x.dtype());
    let n = x.shape()[x.rank() - 1];
    let rows = x.numel().checked_div(n).unwrap_or(0);
    match mask {
        Mask::None => (rows, n, 1, 1),
        Mask::Causal => {
            assert!(x.rank() >= 2, "{op}: the causal mask needs [..., T, S] scores, got {:?}", x.shape());
            let t = x.shape()[x.rank() - 2];
            assert!(t <= n, "{op}: causal mask needs at least as many keys as queries, got {:?}", x.shape());
            (rows, n, 1, t)
        }
        Mask::Tensor(m) => {
            assert_eq!(m.dtype(), DType::F32, "{op}: the mask must be f32 0/1, got {:?}", m.dtype());
            let ok = m.rank() >= 1 && m.shape()[m.rank() - 1] == n && m.numel() > 0 && rows.is_multiple_of(m.numel() / n);
            assert!(ok, "{op}: mask of shape {:?} does not fit input {:?} (last dims must agree, mask rows must divide input rows)", m.shape(), x.shape());
            (rows, n, m.numel() / n, 1)
        }
    }
}

pub fn softmax_with(x: &Tensor, opts: &SoftmaxOptions) -> Tensor {
    let op = opts.kind.name();
    assert!(opts.temperature > 0.0, "{op}: temperature must be positive, got {}", opts.temperature);
    let (rows, n, mask_rows, causal_t) = layout(op, x, &opts.mask);
    let dev = x.device();
    let y = Tensor::output(dev, x.shape(), DType::F32, format_args!("{op}"));
    let inv_temp = 1.0 / opts.temperature;
    let vec = floats_per_load(n);
    let layout = row_layout(dev, n);
    let kept = loads_kept(n / vec, layout.threads);
    if rows > 0 {
        let (mask_key, mask_code) = match opts.mask {
            Mask::None => ("none", "fn allowed(row: u32, j: u32) -> bool { return true; }"),
            Mask::Causal => ("causal", "fn allowed(row: u32, j: u32) -> bool { return j + p.causal_t <= row % p.causal_t + p.n; }"),
            Mask::Tensor(_) => (
                "tensor",
                "@group(0) @binding(3) var<storage, read> mask: array<f32>;\n\
                 fn allowed(row: u32, j: u32) -> bool { return mask[(row % p.mask_rows) * p.n + j] != 0.0; }",
            ),
        };
        let key = format!("softmax/{op}/{mask_key}/{}/vec{vec}/kept{kept}", layout.name());
        let source = || {
            let (mode, kept_count) = (opts.kind.mode().to_string(), kept.to_string());
            let values = [("MODE", mode.as_str()), ("KEPT", kept_count.as_str()), ("MASK", mask_code), ("ALLOWED_CHUNK", allowed_chunk_code(vec))];
            with_row_chunks(layout.render(&each_kept(SHADER, kept), &values), vec)
        };
        // SAFETY: chunk c < n / vec of row < rows (slots past the last row read the last
        // row) indexes x and y within rows * n floats (kept loads past the row's end are
        // clamped or skipped), mask entries stay below mask_rows * n, and every loop counts
        // up to a bound.
        let pipeline = unsafe { dev.pipeline_unchecked(&key, "main", source) };
        let params = [rows as u32, n as u32, inv_temp.to_bits(), mask_rows as u32, causal_t as u32];
        match &opts.mask {
            Mask::Tensor(m) => dev.launch(&pipeline, &params, &[x, &y, m], layout.groups(rows)),
            _ => dev.launch(&pipeline, &params, &[x, &y], layout.groups(rows)),
        }
    }
    let (kind, saved_x, saved_y) = (opts.kind, x.clone(), y.clone());
    record(op, y, &[x], move |g| vec![Some(softmax_backward(kind, &saved_x, &saved_y, g, inv_temp))])
}

fn softmax_backward(kind: SoftmaxKind, x: &Tensor, y: &Tensor, g: &Tensor, inv_temp: f32) -> Tensor {
    let dev = y.device();
    let dx = Tensor::output(dev, y.shape(), DType::F32, format_args!("{} backward", kind.name()));
    let n = y.shape()[y.rank() - 1];
    let rows = y.numel().checked_div(n).unwrap_or(0);
    if rows == 0 {
        return dx;
    }
    let vec = floats_per_load(n);
    let layout = row_layout(dev, n);
    let kept = loads_kept(n / vec, layout.threads);
    let logits = match kind {
        SoftmaxKind::StableMax => {
            "@group(0) @binding(4) var<storage, read> x: array<V>;\n\
             fn ratio(c: u32) -> V { return 1.0 / (1.0 + abs(x[c] * p.inv_temp)); }"
        }
        _ => "fn ratio(c: u32) -> V { return V(1.0); }",
    };
    let key = format!("softmax_backward/{}/{}/vec{vec}/kept{kept}", kind.name(), layout.name());
    let source = || {
        let (mode, kept_count) = (kind.mode().to_string(), kept.to_string());
        let values = [("MODE", mode.as_str()), ("KEPT", kept_count.as_str()), ("LOGITS", logits)];
        with_row_chunks(layout.render(&each_kept(BACKWARD_SHADER, kept), &values), vec)
    };
    // SAFETY: chunk c < n / vec of row < rows (slots past the last row read the last row)
    // indexes y, g, dx and x within rows * n floats (kept loads past the row's end are
    // clamped or skipped), and every loop counts up to a bound.
    let pipeline = unsafe { dev.pipeline_unchecked(&key, "main", source) };
    let params = [rows as u32, n as u32, inv_temp.to_bits()];
    match kind {
        SoftmaxKind::StableMax => dev.launch(&pipeline, &params, &[y, g, &dx, x], layout.groups(rows)),
        _ => dev.launch(&pipeline, &params, &[y, g, &dx], layout.groups(rows)),
    }
    dx
}

/// CPU reference. `mask` is the 0/1 mask as a host tensor (`[mask_rows, n]`), or the
/// causal rule when `causal` is set.
pub fn softmax_reference(x: &HostTensor, kind: SoftmaxKind, temperature: f64, mask: Option<&HostTensor>, causal: bool) -> HostTensor {
    let n = *x.shape.last().unwrap();
    let t = if causal { x.shape[x.shape.len() - 2] } else { 1 };
    let mut out = x.clone();
    for (r, row) in out.data.chunks_mut(n).enumerate() {
        let allowed = |j: usize| match mask {
            Some(m) => m.data[(r % (m.numel() / n)) * n + j] != 0.0,
            None => !causal || j <= r % t + n - t,
        };
        let z: Vec<f64> = row.iter().map(|v| v / temperature).collect();
        let keep: Vec<usize> = (0..n).filter(|&j| allowed(j)).collect();
        let weight = |z: f64| match kind {
            SoftmaxKind::StableMax => {
                if z >= 0.0 {
                    z + 1.0
                } else {
                    1.0 / (1.0 - z)
                }
            }
            _ => z.exp(),
        };
        let total: f64 = keep.iter().map(|&j| weight(z[j])).sum();
        for j in 0..n {
            row[j] = match (allowed(j), kind) {
                (false, SoftmaxKind::LogSoftmax) => f32::MIN as f64,
                (false, _) => 0.0,
                (true, SoftmaxKind::LogSoftmax) => z[j] - total.ln(),
                (true, _) => weight(z[j]) / total,
            };
        }
    }
    out
}
