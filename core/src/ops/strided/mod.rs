//! Launcher for `strided.wgsl`, the one kernel behind broadcasting binary ops,
//! `broadcast_to` and `transpose`: each output element combines one element of each
//! input, found through per-dimension strides.

use crate::{elementwise_grid, render_template, DType, Tensor};

/// Most dimensions the strided kernels accept (after merging contiguous ones).
pub const MAX_RANK: usize = 8;

const SHADER: &str = include_str!("strided.wgsl");

/// Drops size-1 dimensions and merges neighbours that are contiguous in both inputs, so
/// the kernel does as little index arithmetic as possible.
fn coalesce(shape: &[usize], sa: &[usize], sb: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (mut shp, mut a, mut b): (Vec<usize>, Vec<usize>, Vec<usize>) = (vec![], vec![], vec![]);
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        if let (Some(&pa), Some(&pb)) = (a.last(), b.last()) {
            if pa == sa[d] * shape[d] && pb == sb[d] * shape[d] {
                *shp.last_mut().unwrap() *= shape[d];
                *a.last_mut().unwrap() = sa[d];
                *b.last_mut().unwrap() = sb[d];
                continue;
            }
        }
        shp.push(shape[d]);
        a.push(sa[d]);
        b.push(sb[d]);
    }
    (shp, a, b)
}

/// Packs up to `MAX_RANK` values as the `array<vec4<u32>, 2>` a uniform struct expects.
pub(crate) fn pack_dims(op: &str, values: &[usize]) -> [u32; MAX_RANK] {
    assert!(values.len() <= MAX_RANK, "{op}: {} dimensions exceed the supported {MAX_RANK}", values.len());
    let mut out = [0u32; MAX_RANK];
    for (o, &v) in out.iter_mut().zip(values) {
        *o = u32::try_from(v).unwrap_or_else(|_| panic!("{op}: dimension {v} does not fit in u32"));
    }
    out
}

/// `out[i] = expr(a[offset_a(i)], b[offset_b(i)])` over `out_shape`; `op` names the variant
/// (and the pipeline), `expr` is its WGSL expression in `a` and `b`.
pub(crate) fn strided(op: &str, expr: &str, out_shape: &[usize], a: &Tensor, sa: &[usize], b: &Tensor, sb: &[usize]) -> Tensor {
    assert!(a.dtype() == DType::F32 && b.dtype() == DType::F32, "{op}: expects f32 tensors, got {:?} and {:?}", a.dtype(), b.dtype());
    assert!(a.device().same(b.device()), "{op}: tensors live on different devices");
    let dev = a.device();
    let out = Tensor::output(dev, out_shape, DType::F32, format_args!("{op}"));
    if out.numel() == 0 {
        return out;
    }
    let (shape, sa, sb) = coalesce(out_shape, sa, sb);
    let mut params = vec![out.numel() as u32, shape.len() as u32, 0, 0];
    params.extend(pack_dims(op, &shape));
    params.extend(pack_dims(op, &sa));
    params.extend(pack_dims(op, &sb));
    let pipeline = dev.pipeline(&format!("strided/{op}"), "main", || render_template(SHADER, &[("EXPR", expr)]));
    dev.launch(&pipeline, &params, &[a, b, &out], elementwise_grid(out.numel()));
    out
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn merges_contiguous_and_drops_unit_dims() {
        // A same-shape contiguous op collapses to one dimension.
        assert_eq!(coalesce(&[2, 3, 4], &[12, 4, 1], &[12, 4, 1]), (vec![24], vec![1], vec![1]));
        // Bias broadcast over rows keeps two.
        assert_eq!(coalesce(&[5, 1, 7], &[7, 7, 1], &[0, 0, 1]), (vec![5, 7], vec![7, 1], vec![0, 1]));
    }
}
