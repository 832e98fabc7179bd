//! reshape, transpose, slice and concat.

use moegrad::ops::layout::transpose_reference;
use moegrad::ops::slice::{concat_reference, slice_reference};
use moegrad::ops::{concat, reshape, slice, transpose, HostTensor};

use crate::common::{check_op, dim, host, rng, shape, upload, TOL};

#[test]
fn reshape_is_a_differentiable_view() {
    let mut r = rng(30);
    let x = host(&mut r, &[6, 35], -1.0, 1.0);
    check_op("reshape", &[x], |t| reshape(&t[0], &[3, 2, 5, 7]), |h| HostTensor::new(&[3, 2, 5, 7], h[0].data.clone()), TOL);
}

#[test]
fn transpose_any_two_axes() {
    let mut r = rng(31);
    for rank in 2..=4 {
        for _ in 0..3 {
            let s = shape(&mut r, rank, 3000);
            let d0 = rand::Rng::random_range(&mut r, 0..rank);
            let d1 = rand::Rng::random_range(&mut r, 0..rank);
            let x = host(&mut r, &s, -1.0, 1.0);
            check_op("transpose", &[x], |t| transpose(&t[0], d0, d1), |h| transpose_reference(&h[0], d0, d1), TOL);
        }
    }
}

#[test]
fn slice_along_each_axis() {
    let mut r = rng(32);
    for _ in 0..6 {
        let s = shape(&mut r, 3, 3000);
        let axis = rand::Rng::random_range(&mut r, 0..3);
        let start = rand::Rng::random_range(&mut r, 0..s[axis]);
        let len = rand::Rng::random_range(&mut r, 1..=s[axis] - start);
        let x = host(&mut r, &s, -1.0, 1.0);
        check_op("slice", &[x], |t| slice(&t[0], axis, start, len), |h| slice_reference(&h[0], axis, start, len), TOL);
    }
}

#[test]
fn concat_along_each_axis() {
    let mut r = rng(33);
    for axis in 0..3 {
        let base = shape(&mut r, 3, 1500);
        let inputs: Vec<HostTensor> = (0..3)
            .map(|_| {
                let mut s = base.clone();
                s[axis] = dim(&mut r, 9);
                host(&mut r, &s, -1.0, 1.0)
            })
            .collect();
        check_op("concat", &inputs, |t| concat(&t.iter().collect::<Vec<_>>(), axis), |h| concat_reference(&h.iter().collect::<Vec<_>>(), axis), TOL);
    }
}

#[test]
#[should_panic(expected = "slice: range 3..5 is out of bounds for axis 1 of shape [2, 4]")]
fn slice_out_of_bounds_is_named() {
    slice(&upload(&HostTensor::zeros(&[2, 4])), 1, 3, 2);
}

#[test]
#[should_panic(expected = "reshape: cannot view shape [2, 4] as [3, 3]")]
fn reshape_size_mismatch_is_named() {
    reshape(&upload(&HostTensor::zeros(&[2, 4])), &[3, 3]);
}
