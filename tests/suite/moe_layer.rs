//! A full MoE feed-forward layer built from the kernel library (router -> permute ->
//! grouped matmul -> GELU -> grouped matmul -> combine) against a plain CPU MoE layer, in
//! outputs and in the gradients of the input, the router weights and both expert weights.

use moegrad::ops::router::route_reference;
use moegrad::ops::{combine_slots, gather_slots, grouped_matmul, matmul, plan_routing, route, HostTensor, UnaryOp};
use moegrad::prelude::*;

use crate::common::{check_op, host, rng, TOL};

fn moe_gpu(t: &[Tensor], experts: usize, k: usize, renormalize: bool) -> Tensor {
    let (x, w_router, w_in, w_out) = (&t[0], &t[1], &t[2], &t[3]);
    let routed = route(&matmul(x, w_router), k, renormalize);
    let plan = plan_routing(&routed.indices, experts);
    let hidden = grouped_matmul(&gather_slots(x, &plan), w_in, &plan.offsets).gelu();
    combine_slots(&grouped_matmul(&hidden, w_out, &plan.offsets), &routed.weights, &plan)
}

/// The textbook layer: per token, each chosen expert's MLP output times its gate weight.
fn moe_reference(h: &[HostTensor], k: usize, renormalize: bool) -> HostTensor {
    let (x, w_router, w_in, w_out) = (&h[0], &h[1], &h[2], &h[3]);
    let (tokens, d) = (x.shape[0], x.shape[1]);
    let (experts, f) = (w_in.shape[0], w_in.shape[2]);
    let logits = moegrad::ops::matmul::matmul_reference(x, w_router, false, false);
    let (_, weights, indices) = route_reference(&logits, k, renormalize);
    let mut y = HostTensor::zeros(&[tokens, d]);
    for t in 0..tokens {
        for j in 0..k {
            let e = indices[t * k + j] as usize;
            assert!(e < experts);
            let hidden: Vec<f64> =
                (0..f).map(|c| UnaryOp::Gelu.reference_scalar((0..d).map(|i| x.data[t * d + i] * w_in.data[(e * d + i) * f + c]).sum())).collect();
            for o in 0..d {
                let out: f64 = (0..f).map(|c| hidden[c] * w_out.data[(e * f + c) * d + o]).sum();
                y.data[t * d + o] += weights.data[t * k + j] * out;
            }
        }
    }
    y
}

#[test]
fn moe_layer_matches_cpu_reference_in_outputs_and_all_gradients() {
    let mut r = rng(80);
    for (tokens, d, f, experts, k, renormalize) in [(13, 8, 6, 4, 2, false), (33, 16, 12, 8, 2, true), (9, 5, 7, 3, 1, false)] {
        let inputs = [
            host(&mut r, &[tokens, d], -1.0, 1.0),
            host(&mut r, &[d, experts], -1.0, 1.0),
            host(&mut r, &[experts, d, f], -0.5, 0.5),
            host(&mut r, &[experts, f, d], -0.5, 0.5),
        ];
        check_op("moe_layer", &inputs, |t| moe_gpu(t, experts, k, renormalize), |h| moe_reference(h, k, renormalize), TOL);
    }
}
