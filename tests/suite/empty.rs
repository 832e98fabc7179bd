//! Tensors with an empty dimension (a batch with no rows, an expert with no tokens): ops
//! give outputs of the right shape, a sum of nothing is 0 (and so is a gradient summed
//! over no rows), every gradient has its input's shape, and what has no value (a mean or
//! a maximum of nothing, attention heads of width 0) is refused with a message naming it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use moegrad::ops::matmul::matmul_reference;
use moegrad::ops::norm::norm_reference;
use moegrad::ops::reduce::reduce_all_reference;
use moegrad::ops::softmax::softmax_reference;
use moegrad::ops::*;
use moegrad::prelude::*;

use crate::common::{check_op, device, TOL};

fn none(shape: &[usize]) -> HostTensor {
    HostTensor::zeros(shape)
}

fn leaf(shape: &[usize]) -> Tensor {
    Tensor::zeros(&device(), shape).unwrap().requires_grad()
}

/// Runs `out`'s backward pass from ones, then checks each input's gradient has its shape.
fn backward_gives_shapes(what: &str, out: &Tensor, inputs: &[&Tensor]) {
    out.backward_with(&Tensor::ones(&device(), out.shape()).unwrap());
    for (i, t) in inputs.iter().enumerate() {
        let g = t.grad().unwrap_or_else(|| panic!("{what}: input {i} has no gradient"));
        assert_eq!(g.shape(), t.shape(), "{what}: gradient of input {i}");
        assert!(g.to_vec().unwrap().iter().all(|&v| v == 0.0), "{what}: input {i}'s gradient of nothing is not 0");
    }
}

#[test]
fn ops_on_no_rows_match_their_references() {
    let (rows, n) = (0, 5);
    check_op("gelu", &[none(&[rows, n])], |t| t[0].gelu(), |h| UnaryOp::Gelu.reference(&h[0]), TOL);
    check_op("mul", &[none(&[rows, n]), none(&[rows, n])], |t| t[0].mul(&t[1]), |h| BinaryOp::Mul.reference(&h[0], &h[1]), TOL);
    // The bias's gradient sums the rows' gradients: none, so 0.
    check_op("bias add", &[none(&[rows, n]), none(&[n])], |t| t[0].add(&t[1]), |h| BinaryOp::Add.reference(&h[0], &h[1]), TOL);
    check_op("sum over no rows", &[none(&[rows, n])], |t| t[0].sum(0), |h| ReduceOp::Sum.reference(&h[0], 0), TOL);
    check_op("sum of nothing", &[none(&[rows, n])], |t| t[0].sum_all(), |h| reduce_all_reference(ReduceOp::Sum, &h[0]), TOL);
    check_op("sum along empty rows", &[none(&[n, rows])], |t| t[0].sum(1), |h| ReduceOp::Sum.reference(&h[0], 1), TOL);
    for kind in [SoftmaxKind::Softmax, SoftmaxKind::LogSoftmax, SoftmaxKind::StableMax] {
        let opts = SoftmaxOptions::new(kind);
        check_op(kind.name(), &[none(&[rows, n])], |t| softmax_with(&t[0], &opts), |h| softmax_reference(&h[0], kind, 1.0, None, false), TOL);
    }
    check_op("rms_norm", &[none(&[rows, n]), none(&[n])], |t| rms_norm(&t[0], &t[1], 1e-5), |h| norm_reference(NormKind::Rms, &h[0], &h[1], None, 1e-5), TOL);
    check_op(
        "layer_norm",
        &[none(&[rows, n]), none(&[n]), none(&[n])],
        |t| layer_norm(&t[0], &t[1], &t[2], 1e-5),
        |h| norm_reference(NormKind::Layer, &h[0], &h[1], Some(&h[2]), 1e-5),
        TOL,
    );
    // No rows to multiply, and products over an empty depth (all zeros).
    check_op("matmul of no rows", &[none(&[rows, n]), none(&[n, 3])], |t| t[0].matmul(&t[1]), |h| matmul_reference(&h[0], &h[1], false, false), TOL);
    check_op("matmul of no depth", &[none(&[3, rows]), none(&[rows, n])], |t| t[0].matmul(&t[1]), |h| matmul_reference(&h[0], &h[1], false, false), TOL);
}

#[test]
fn ops_on_empty_rows_and_batches_give_shapes_and_zeros() {
    let dev = device();
    let x = leaf(&[5, 0]);
    for (what, out) in [("softmax", softmax(&x)), ("log_softmax", log_softmax(&x)), ("gelu", x.gelu()), ("transpose", x.transpose(0, 1))] {
        assert_eq!(out.numel(), 0, "{what}");
        backward_gives_shapes(what, &out, &[&x]);
    }
    let (x, w) = (leaf(&[5, 0]), leaf(&[0]));
    backward_gives_shapes("rms_norm of empty rows", &rms_norm(&x, &w, 1e-5), &[&x, &w]);

    // A batch with no targets has no loss: 0, as when every target is ignored.
    let logits = leaf(&[0, 7]);
    let loss = cross_entropy(&logits, &Tensor::from_u32(&dev, &[], &[0]).unwrap(), CrossEntropyOptions::default());
    assert_eq!(loss.item().unwrap(), 0.0);
    backward_gives_shapes("cross_entropy of no rows", &loss, &[&logits]);

    let table = leaf(&[4, 3]);
    let rows = embedding(&table, &Tensor::from_u32(&dev, &[], &[0]).unwrap());
    assert_eq!(rows.shape(), &[0, 3]);
    backward_gives_shapes("embedding of no ids", &rows, &[&table]);

    // Routing no tokens: nothing chosen, nothing gathered, nothing combined.
    let logits = leaf(&[0, 8]);
    let routed = route(&logits, 2, false);
    assert_eq!((routed.probs.shape(), routed.weights.shape(), routed.indices.shape()), (&[0, 8][..], &[0, 2][..], &[0, 2][..]));
    backward_gives_shapes("router of no tokens", &routed.weights, &[&logits]);
    let plan = plan_routing(&routed.indices, 8);
    assert_eq!(plan.counts.to_vec_u32().unwrap(), vec![0; 8]);
    let (x, expert_rows, weights) = (leaf(&[0, 4]), leaf(&[0, 4]), leaf(&[0, 2]));
    backward_gives_shapes("gather_slots of no tokens", &gather_slots(&x, &plan), &[&x]);
    backward_gives_shapes("combine_slots of no tokens", &combine_slots(&expert_rows, &weights, &plan), &[&expert_rows, &weights]);
    let (x, w) = (leaf(&[0, 4]), leaf(&[8, 4, 3]));
    backward_gives_shapes("grouped_matmul of no rows", &grouped_matmul(&x, &w, &plan.offsets), &[&x, &w]);
}

/// The message of `f`'s panic (the test checks the device still works afterwards).
fn refusal(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a refusal");
    payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

#[test]
fn what_has_no_value_is_refused_by_name() {
    let x = leaf(&[5, 0]);
    assert!(refusal(|| drop(x.mean(1))).contains("mean: cannot reduce the empty axis 1 of shape [5, 0]"));
    assert!(refusal(|| drop(x.max(1))).contains("max: cannot reduce the empty axis 1 of shape [5, 0]"));
    let q = leaf(&[2, 3, 0]);
    assert!(refusal(|| drop(attention(&q, &q, &q, true))).contains("attention: heads of width 0"));
    // A kernel never gets an empty tensor, and refusing one leaves the device working (the
    // check comes before the recorder's lock, which a panic would poison).
    let dev = device();
    let source = "struct P { n: u32 }\n@group(0) @binding(0) var<uniform> p: P;\n\
                  @group(0) @binding(1) var<storage, read_write> x: array<f32>;\n\
                  @compute @workgroup_size(1) fn main() { x[0] = f32(p.n); }";
    let kernel = dev.pipeline("test/write_first", "main", || source.to_string());
    let empty = Tensor::zeros(&dev, &[0]).unwrap();
    assert!(refusal(|| dev.launch(&kernel, &[1], &[&empty], [1, 1, 1])).contains("empty tensors are not bound to kernels"));
    let one = Tensor::zeros(&dev, &[1]).unwrap();
    dev.launch(&kernel, &[7], &[&one], [1, 1, 1]);
    assert_eq!(one.to_vec().unwrap(), vec![7.0]);
    assert_eq!(leaf(&[3]).add_scalar(1.0).to_vec().unwrap(), vec![1.0; 3]);
}
