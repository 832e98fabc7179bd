//! Embedding lookup and its scatter-add backward.

use moegrad::ops::embedding::embedding_reference;
use moegrad::ops::{embedding, HostTensor};
use moegrad::prelude::*;
use rand::Rng;

use crate::common::{check_op, device, dim, host, rng, TOL};

#[test]
fn gathers_rows_and_scatters_gradients() {
    let mut r = rng(40);
    // Up to a few backward workgroups' worth of rows (64 each) and chunks of ids (256
    // each), the last one part-full; the first case has both for sure.
    for case in 0..6 {
        let (rows, d) = if case == 0 { (150, 257) } else { (dim(&mut r, 200), dim(&mut r, 300)) };
        let ids_shape = if case == 0 { [5, 123] } else { [dim(&mut r, 9), dim(&mut r, 70)] };
        // Few rows and many ids, so most rows are hit several times.
        let ids: Vec<u32> = (0..ids_shape[0] * ids_shape[1]).map(|_| r.random_range(0..rows as u32)).collect();
        let ids_t = Tensor::from_u32(&device(), &ids, &ids_shape).unwrap();
        let table = host(&mut r, &[rows, d], -1.0, 1.0);
        check_op("embedding", &[table], |t| embedding(&t[0], &ids_t), |h| embedding_reference(&h[0], &ids, &ids_shape), TOL);
    }
}

#[test]
fn out_of_range_ids_give_zero_rows() {
    let table = crate::common::upload(&HostTensor::from_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]));
    let ids = Tensor::from_u32(&device(), &[1, 7], &[2]).unwrap();
    assert_eq!(embedding(&table, &ids).to_vec().unwrap(), vec![3.0, 4.0, 0.0, 0.0]);
}
