//! Unary and broadcasting binary ops against their references, with gradient checks.

use moegrad::ops::binary::sum_to_reference;
use moegrad::ops::{binary, broadcast_to, grad_norm, sum_to, unary, AdamW, AdamWConfig, BinaryOp, HostTensor, UnaryOp};
use moegrad::prelude::*;
use rand::Rng;

use crate::common::{check_op, dim, host, rng, shape, TOL};

const UNARY: [UnaryOp; 11] = [
    UnaryOp::Neg,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Square,
    UnaryOp::Relu,
    UnaryOp::Gelu,
    UnaryOp::Silu,
    UnaryOp::Sigmoid,
    UnaryOp::AddScalar(0.75),
    UnaryOp::MulScalar(-1.5),
];

#[test]
fn unary_ops_match_reference_and_gradients() {
    let mut r = rng(1);
    for op in UNARY {
        for rank in 0..=3 {
            let s = shape(&mut r, rank, 3000);
            // log and sqrt need positive inputs; the rest see both signs and large values.
            let x = if matches!(op, UnaryOp::Log | UnaryOp::Sqrt) { host(&mut r, &s, 0.2, 4.0) } else { host(&mut r, &s, -4.0, 4.0) };
            check_op(op.name(), &[x], |t| unary(op, &t[0]), |h| op.reference(&h[0]), TOL);
        }
    }
}

#[test]
fn activations_survive_extreme_inputs() {
    let x = HostTensor::from_f32(&[6], &[-1e4, -100.0, -30.0, 30.0, 100.0, 1e4]);
    for op in [UnaryOp::Gelu, UnaryOp::Silu, UnaryOp::Sigmoid, UnaryOp::Relu] {
        let got = unary(op, &crate::common::upload(&x)).to_vec().unwrap();
        crate::common::assert_close(op.name(), &got, &op.reference(&x).data, 1e-5);
    }
}

/// A random length that is a multiple of 4 (the kernels load vec4s) or is not (they load
/// floats), at most 4 * max.
fn length(r: &mut rand::rngs::StdRng, vec4: bool, max: usize) -> usize {
    let n = 4 * dim(r, max);
    if vec4 {
        n
    } else {
        n - r.random_range(1..=3)
    }
}

#[test]
fn element_wise_kernels_load_four_floats_where_lengths_allow() {
    let mut r = rng(4);
    for vec4 in [true, false] {
        for op in UNARY {
            let n = length(&mut r, vec4, 300);
            let x = if matches!(op, UnaryOp::Log | UnaryOp::Sqrt) { host(&mut r, &[n], 0.2, 4.0) } else { host(&mut r, &[n], -4.0, 4.0) };
            check_op(op.name(), &[x], |t| unary(op, &t[0]), |h| op.reference(&h[0]), TOL);
        }
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            // Equal shapes, and a bias repeating along the rows, on either side.
            let (rows, n) = (dim(&mut r, 9), length(&mut r, vec4, 30));
            for (sa, sb) in [(vec![rows, n], vec![rows, n]), (vec![rows, n], vec![n]), (vec![1, n], vec![rows, 3, n])] {
                let a = host(&mut r, &sa, -2.0, 2.0);
                let b = if op == BinaryOp::Div { host(&mut r, &sb, 0.5, 2.0) } else { host(&mut r, &sb, -2.0, 2.0) };
                check_op(op.name(), &[a, b], |t| binary(op, &t[0], &t[1]), |h| op.reference(&h[0], &h[1]), TOL);
            }
        }
        // x * x reaches x by two paths: the tape sums the two gradients.
        let n = length(&mut r, vec4, 300);
        let x = host(&mut r, &[n], -2.0, 2.0);
        check_op("x * x", &[x], |t| binary(BinaryOp::Mul, &t[0], &t[0]), |h| UnaryOp::Square.reference(&h[0]), TOL);
    }
}

#[test]
fn empty_operands_repeat_zero_times() {
    let dev = crate::common::device();
    let (row, none) = (Tensor::ones(&dev, &[3]).unwrap(), Tensor::ones(&dev, &[0, 3]).unwrap());
    for (a, b) in [(&row, &none), (&none, &row)] {
        let out = binary(BinaryOp::Add, a, b);
        assert_eq!(out.shape(), [0, 3]);
        assert!(out.to_vec().unwrap().is_empty());
    }
}

#[test]
fn element_wise_kernels_name_their_load_width() {
    // A device of its own, so that the profile holds only these kernels.
    let dev = Device::new().unwrap();
    if !dev.has_gpu_timer() {
        return; // no profile without timestamp queries (lavapipe has them)
    }
    for (n, width) in [(4 * 37, "vec4"), (4 * 37 + 1, "vec1")] {
        let x = Tensor::ones(&dev, &[n]).unwrap().requires_grad();
        let ((), profile) = dev.profile_gpu(|| x.mul(&x).exp().sum_all().backward());
        let kernels: Vec<String> = profile.unwrap().into_iter().map(|k| k.kernel).collect();
        // x * x gives x two gradients, which the tape sums with the add op.
        for kernel in ["zip/mul/", "unary/exp/forward/", "unary/exp/backward/", "zip/add/"] {
            assert!(kernels.iter().any(|k| k.starts_with(kernel) && k.ends_with(width)), "{n} floats: no {kernel}{width} in {kernels:?}");
        }
        x.zero_grad();
        // A bias over 3 rows of x: the bias repeats, four floats at a time where x's
        // length allows.
        let rows = Tensor::ones(&dev, &[3, n]).unwrap();
        let ((), profile) = dev.profile_gpu(|| drop(rows.add(&x)));
        let kernels: Vec<String> = profile.unwrap().into_iter().map(|k| k.kernel).collect();
        assert_eq!(kernels, [format!("zip/add/{width}/b_repeats")], "{n} floats");
        // The optimizer's passes over every parameter: the gradient norm, then a clipped
        // AdamW step.
        let mut opt = AdamW::new(std::slice::from_ref(&x), AdamWConfig::default()).unwrap();
        x.set_grad(Tensor::ones(&dev, &[n]).unwrap());
        let ((), profile) = dev.profile_gpu(|| opt.step_clipped(1e-3, &grad_norm(std::slice::from_ref(&x), 1.0, 1.0).unwrap()));
        let kernels: Vec<String> = profile.unwrap().into_iter().map(|k| k.kernel).collect();
        for kernel in ["grad_norm/partial_squares/", "adamw/clipped/"] {
            assert!(kernels.iter().any(|k| k.starts_with(kernel) && k.ends_with(width)), "{n} floats: no {kernel}..{width} in {kernels:?}");
        }
    }
}

/// Pairs of shapes covering the broadcasts models use: equal shapes, a bias row, a
/// per-row scale, a scalar, outer-product style, and a missing leading dimension.
fn broadcast_pairs(r: &mut rand::rngs::StdRng) -> Vec<(Vec<usize>, Vec<usize>)> {
    let (a, b, c) = (dim(r, 40), dim(r, 40), dim(r, 9));
    vec![
        (vec![a, b], vec![a, b]),
        (vec![a, b], vec![b]),
        (vec![a, b], vec![a, 1]),
        (vec![a, b], vec![]),
        (vec![a, 1], vec![1, b]),
        (vec![c, a, b], vec![a, b]),
        (vec![c, 1, b], vec![c, a, 1]),
        (vec![1], vec![c, a, b]),
    ]
}

#[test]
fn binary_ops_broadcast_and_match_gradients() {
    let mut r = rng(2);
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        for (sa, sb) in broadcast_pairs(&mut r) {
            let a = host(&mut r, &sa, -2.0, 2.0);
            // Keep divisors away from zero so finite differences stay meaningful.
            let b = if op == BinaryOp::Div { host(&mut r, &sb, 0.5, 2.0) } else { host(&mut r, &sb, -2.0, 2.0) };
            check_op(op.name(), &[a, b], |t| binary(op, &t[0], &t[1]), |h| op.reference(&h[0], &h[1]), TOL);
        }
    }
}

#[test]
fn broadcast_to_and_sum_to_are_adjoint() {
    let mut r = rng(3);
    // Summed dimensions in one run (leading, middle, trailing, all), which reduce as
    // [outer, n, inner], and in several runs, which take the general kernel.
    let one_run = [(vec![1, 5], vec![3, 5]), (vec![7], vec![4, 2, 7]), (vec![3, 1, 2], vec![3, 9, 2]), (vec![5, 1], vec![5, 300]), (vec![], vec![6, 5])];
    let several_runs = [(vec![1, 4, 1], vec![3, 4, 5]), (vec![2, 1, 3, 1], vec![2, 6, 3, 5])];
    for (small, big) in one_run.into_iter().chain(several_runs) {
        let x = host(&mut r, &small, -1.0, 1.0);
        let target = big.clone();
        check_op("broadcast_to", &[x], |t| broadcast_to(&t[0], &target), |h| BinaryOp::Add.reference(&h[0], &HostTensor::zeros(&target)), TOL);
        let g = host(&mut r, &big, -1.0, 1.0);
        let target = small.clone();
        check_op("sum_to", &[g], |t| sum_to(&t[0], &target), |h| sum_to_reference(&h[0], &target), TOL);
    }
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4] cannot be broadcast together")]
fn mismatched_shapes_name_op_and_shapes() {
    let x = crate::common::upload(&HostTensor::zeros(&[2, 3]));
    let y = crate::common::upload(&HostTensor::zeros(&[4]));
    binary(BinaryOp::Add, &x, &y);
}
