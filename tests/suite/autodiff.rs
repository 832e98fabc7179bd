//! The tape: accumulation, no_grad, freeing, and error messages.

use moegrad::prelude::*;
use moegrad::{clear_tape, tape_len};

use crate::common::device;

fn param(values: &[f32]) -> Tensor {
    Tensor::from_slice(&device(), values, &[values.len()]).unwrap().requires_grad()
}

#[test]
fn gradients_accumulate_until_zeroed() {
    let x = param(&[1.0, -2.0, 3.0]);
    let loss = || x.square().sum_all(); // d/dx = 2x
    loss().backward();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![2.0, -4.0, 6.0]);
    loss().backward();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![4.0, -8.0, 12.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
    loss().backward();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![2.0, -4.0, 6.0]);
}

#[test]
fn a_tensor_used_twice_gets_both_contributions() {
    let x = param(&[3.0]);
    x.mul(&x).add(&x).sum_all().backward(); // d/dx (x^2 + x) = 2x + 1
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![7.0]);
}

#[test]
fn no_grad_records_nothing() {
    clear_tape();
    let x = param(&[1.0, 2.0]);
    let y = no_grad(|| x.exp().sum_all());
    assert_eq!(tape_len(), 0);
    assert!(!y.is_tracked());
    assert!(moegrad::is_grad_enabled(), "no_grad must restore the grad mode");
}

#[test]
#[should_panic(expected = "backward: this tensor depends on no parameter")]
fn backward_through_no_grad_result_says_why() {
    let x = param(&[1.0, 2.0]);
    no_grad(|| x.exp().sum_all()).backward();
}

#[test]
fn backward_frees_the_tape() {
    clear_tape();
    let x = param(&[0.5, 1.5]);
    let loss = x.exp().mul(&x).sum_all();
    assert_eq!(tape_len(), 4); // exp, mul, reshape, sum
    loss.backward();
    assert_eq!(tape_len(), 0);
}

#[test]
fn constants_get_no_gradient() {
    let x = param(&[1.0, 2.0]);
    let c = Tensor::from_slice(&device(), &[5.0, 6.0], &[2]).unwrap();
    x.mul(&c).sum_all().backward();
    assert!(c.grad().is_none());
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![5.0, 6.0]);
}

#[test]
#[should_panic(expected = "backward: the loss must have one element, got shape [2]")]
fn backward_needs_a_scalar() {
    param(&[1.0, 2.0]).exp().backward();
}
