//! Counting NaN and infinite elements on the GPU (what the trainer checks before it writes
//! a checkpoint). The count is an integer with no gradient, so its test is exact agreement
//! with the CPU reference on random odd shapes salted with every kind of non-finite value
//! and with the finite values nearest to them.

use moegrad::ops::count_non_finite;
use moegrad::ops::finite::count_non_finite_reference;
use moegrad::Tensor;
use rand::Rng;

use crate::common::{device, rng, shape};

/// Finite values a careless test (exponent compare, `x != x`, `abs(x) > MAX`) could miscount.
const EDGE_FINITE: [f32; 6] = [f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45, -0.0, 0.0];
const NON_FINITE: [f32; 3] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

#[test]
fn counts_nan_and_infinities_exactly_across_tensors() {
    let mut r = rng(90);
    for case in 0..6 {
        let tensors: Vec<Vec<f32>> = (0..r.random_range(1..4))
            .map(|_| {
                let n: usize = shape(&mut r, 2, 5000).iter().product();
                (0..n)
                    .map(|_| match r.random_range(0..100) {
                        0..2 => NON_FINITE[r.random_range(0..3)],
                        2..6 => EDGE_FINITE[r.random_range(0..EDGE_FINITE.len())],
                        // A NaN with a payload other than the canonical one.
                        6 => f32::from_bits(0x7f80_0001 | r.random_range(0..0x7f_ffffu32)),
                        _ => r.random_range(-3.0..3.0),
                    })
                    .collect()
            })
            .collect();
        let on_gpu: Vec<Tensor> = tensors.iter().map(|t| Tensor::from_slice(&device(), t, &[t.len()]).unwrap()).collect();
        let got = count_non_finite(&on_gpu).unwrap().to_vec_u32().unwrap()[0] as u64;
        let wide: Vec<Vec<f64>> = tensors.iter().map(|t| t.iter().map(|&v| v as f64).collect()).collect();
        let want = count_non_finite_reference(&wide.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(got, want, "case {case}: {} tensors of {:?} elements", tensors.len(), tensors.iter().map(Vec::len).collect::<Vec<_>>());
    }
    let clean = Tensor::from_slice(&device(), &EDGE_FINITE, &[EDGE_FINITE.len()]).unwrap();
    assert_eq!(count_non_finite(&[clean]).unwrap().to_vec_u32().unwrap(), vec![0], "the finite extremes are finite");
    assert!(count_non_finite(&[]).is_none());
}
