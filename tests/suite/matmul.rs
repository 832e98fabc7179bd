//! Matmul: 2-D and batched, every transpose combination, odd sizes.

use moegrad::ops::matmul::matmul_reference;
use moegrad::ops::{f16_matmul_kernel, matmul_t, HostTensor, Precision, Tiles};

use rand::Rng;

use crate::common::{check_op, device, dim, host, rng, upload, Tolerance};

/// Shape of an operand whose op(x) is rows x cols.
fn operand(batch: &[usize], rows: usize, cols: usize, transposed: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend(if transposed { [cols, rows] } else { [rows, cols] });
    s
}

const TOL: Tolerance = Tolerance { forward: 1e-4, grad: 2e-3 };

#[test]
fn two_d_all_transposes_odd_sizes() {
    let mut r = rng(20);
    for ta in [false, true] {
        for tb in [false, true] {
            for _ in 0..3 {
                let (m, k, n) = (dim(&mut r, 130), dim(&mut r, 130), dim(&mut r, 130));
                let a = host(&mut r, &operand(&[], m, k, ta), -1.0, 1.0);
                let b = host(&mut r, &operand(&[], k, n, tb), -1.0, 1.0);
                check_op("matmul", &[a, b], |t| matmul_t(&t[0], &t[1], ta, tb), |h| matmul_reference(&h[0], &h[1], ta, tb), TOL);
            }
        }
    }
}

#[test]
fn batched_and_shared_operands() {
    let mut r = rng(21);
    for ta in [false, true] {
        for tb in [false, true] {
            let (m, k, n, batch) = (dim(&mut r, 70), dim(&mut r, 70), dim(&mut r, 70), 1 + dim(&mut r, 4));
            // Both batched; right operand shared (x @ W); left operand shared.
            for (ba, bb) in [(vec![batch], vec![batch]), (vec![batch, 2], vec![]), (vec![], vec![batch])] {
                let a = host(&mut r, &operand(&ba, m, k, ta), -1.0, 1.0);
                let b = host(&mut r, &operand(&bb, k, n, tb), -1.0, 1.0);
                check_op("matmul", &[a, b], |t| matmul_t(&t[0], &t[1], ta, tb), |h| matmul_reference(&h[0], &h[1], ta, tb), TOL);
            }
        }
    }
}

#[test]
fn larger_than_one_tile_in_every_direction() {
    let mut r = rng(22);
    let a = host(&mut r, &[131, 200], -1.0, 1.0);
    let b = host(&mut r, &[200, 67], -1.0, 1.0);
    check_op("matmul", &[a, b], |t| matmul_t(&t[0], &t[1], false, false), |h| matmul_reference(&h[0], &h[1], false, false), TOL);
}

#[test]
#[should_panic(expected = "matmul: inner dimensions differ for a [3, 4] and bᵀ [5, 3]")]
fn inner_dimension_mismatch_names_both_shapes() {
    let a = upload(&HostTensor::zeros(&[3, 4]));
    let b = upload(&HostTensor::zeros(&[5, 3]));
    matmul_t(&a, &b, false, true);
}

/// Offsets for `rows` split over `experts` at random, some experts empty.
fn random_offsets(r: &mut rand::rngs::StdRng, rows: usize, experts: usize) -> Vec<u32> {
    let mut cuts: Vec<u32> = (0..experts - 1).map(|_| rand::Rng::random_range(r, 0..=rows as u32)).collect();
    if experts > 2 {
        cuts[0] = cuts[1]; // an empty expert
    }
    cuts.sort();
    std::iter::once(0).chain(cuts).chain(std::iter::once(rows as u32)).collect()
}

#[test]
fn grouped_matmul_per_expert_blocks_and_gradients() {
    let mut r = rng(23);
    for (rows, experts, inputs, outputs) in [(1, 1, 1, 1), (7, 3, 5, 9), (130, 4, 33, 65), (70, 8, 16, 7)] {
        check_grouped(&mut r, [rows, experts, inputs, outputs]);
    }
    let off_t = moegrad::Tensor::from_u32(&crate::common::device(), &[0, 0, 0], &[3]).unwrap();
    let out = moegrad::ops::grouped_matmul(&upload(&HostTensor::zeros(&[0, 4])), &upload(&HostTensor::zeros(&[2, 4, 4])), &off_t);
    assert_eq!(out.shape(), &[0, 4]);
}

/// A grouped matmul of `rows` rows over `experts` (random offsets, an empty expert among
/// them) and its gradients, against the reference.
fn check_grouped(r: &mut rand::rngs::StdRng, [rows, experts, inputs, outputs]: [usize; 4]) {
    let offsets = random_offsets(r, rows, experts);
    let off_t = moegrad::Tensor::from_u32(&crate::common::device(), &offsets, &[experts + 1]).unwrap();
    let x = host(r, &[rows, inputs], -1.0, 1.0);
    let w = host(r, &[experts, inputs, outputs], -1.0, 1.0);
    check_op(
        "grouped_matmul",
        &[x, w],
        |t| moegrad::ops::grouped_matmul(&t[0], &t[1], &off_t),
        |h| moegrad::ops::matmul::grouped_matmul_reference(&h[0], &h[1], &offsets),
        TOL,
    );
}

/// Each entry of the per-device tile table, whichever the adapter would pick: sizes that
/// are multiples of 4 take the vector-load path, odd ones the scalar one, and each spans
/// several tiles of the largest shape in some direction.
#[test]
fn every_tile_shape_with_vector_and_scalar_loads() {
    let mut r = rng(24);
    for tiles in Tiles::ALL {
        for ta in [false, true] {
            for tb in [false, true] {
                let multiple_of_4 = r.random_bool(0.5);
                let size = |r: &mut rand::rngs::StdRng| {
                    if multiple_of_4 {
                        4 * dim(r, 40)
                    } else {
                        dim(r, 150) | 1
                    }
                };
                let (m, k, n) = (size(&mut r), size(&mut r), size(&mut r));
                let a = host(&mut r, &operand(&[2], m, k, ta), -1.0, 1.0);
                let b = host(&mut r, &operand(&[], k, n, tb), -1.0, 1.0);
                device().with_policy(
                    |p| p.matmul_tiles = Some(tiles),
                    || check_op("matmul", &[a, b], |t| matmul_t(&t[0], &t[1], ta, tb), |h| matmul_reference(&h[0], &h[1], ta, tb), TOL),
                );
            }
        }
        let dims = [4 * dim(&mut r, 40), 3, 4 * dim(&mut r, 20), dim(&mut r, 70)];
        device().with_policy(|p| p.matmul_tiles = Some(tiles), || check_grouped(&mut r, dims));
    }
}

/// Depth split into slices whose partial products are summed (what a GPU does for small
/// outputs with a long depth), forced here on any adapter: odd depths that leave the last
/// slices short or empty, every transpose, batches, and the expert weight gradient of a
/// grouped matmul (depth grouped by expert).
#[test]
fn split_depth_products_sum_their_slices() {
    let mut r = rng(25);
    for splits in [2, 3, 7] {
        for ta in [false, true] {
            for tb in [false, true] {
                let (m, k, n) = (dim(&mut r, 70), dim(&mut r, 300), dim(&mut r, 70));
                let a = host(&mut r, &operand(&[2], m, k, ta), -1.0, 1.0);
                let b = host(&mut r, &operand(&[], k, n, tb), -1.0, 1.0);
                device().with_policy(
                    |p| p.matmul_splits = Some(splits),
                    || check_op("matmul", &[a, b], |t| matmul_t(&t[0], &t[1], ta, tb), |h| matmul_reference(&h[0], &h[1], ta, tb), TOL),
                );
            }
        }
        let dims = [dim(&mut r, 200), 4, dim(&mut r, 30), dim(&mut r, 30)];
        device().with_policy(|p| p.matmul_splits = Some(splits), || check_grouped(&mut r, dims));
    }
}

/// Mixed precision split the same way (tensor cores where the adapter has them) agrees
/// with the unsplit product: the same rounded operands, summed in another order.
#[test]
fn split_depth_products_in_f16_agree_with_unsplit_ones() {
    let mut r = rng(26);
    let dev = crate::common::device();
    for (m, k, n) in [(150, 700, 136), (33, 517, 70)] {
        let a = upload(&host(&mut r, &[m, k], -1.0, 1.0));
        let b = upload(&host(&mut r, &[k, n], -1.0, 1.0));
        let product = |splits| {
            device().with_policy(|p| (p.precision, p.matmul_splits) = (Precision::F16, Some(splits)), || matmul_t(&a, &b, false, false)).to_vec().unwrap()
        };
        let (whole, split) = (product(1), product(5));
        let worst = whole.iter().zip(&split).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{} ({}): split f16 product differs by {worst}", dev.name(), f16_matmul_kernel(&dev));
    }
}
