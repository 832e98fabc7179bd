//! The softmax family and the fused cross-entropy.

use moegrad::ops::cross_entropy::cross_entropy_reference;
use moegrad::ops::rows::{loads_kept, MOST_KEPT};
use moegrad::ops::softmax::softmax_reference;
use moegrad::ops::{cross_entropy, row_threads_allowed, softmax_with, CrossEntropyOptions, HostTensor, Mask, SoftmaxKind, SoftmaxOptions, ROW_THREADS};
use moegrad::prelude::*;
use rand::Rng;

use crate::common::{assert_close, check_op, device, dim, host, on_both_paths, packed_row_lengths, rng, upload, TOL};

const KINDS: [SoftmaxKind; 3] = [SoftmaxKind::Softmax, SoftmaxKind::LogSoftmax, SoftmaxKind::StableMax];

#[test]
fn softmax_family_with_temperature_matches_reference_and_gradients() {
    on_both_paths(|| {
        let mut r = rng(50);
        for kind in KINDS {
            // Rows of whole vec4s (4, 64, 300) take the 16-byte-load kernel, the rest the scalar one.
            for n in [1, 4, 7, 33, 64, 65, 127, 300] {
                let rows = dim(&mut r, 9);
                let temperature = r.random_range(0.5..2.0f32);
                let x = host(&mut r, &[rows, n], -4.0, 4.0);
                let opts = SoftmaxOptions { temperature, ..SoftmaxOptions::new(kind) };
                check_op(kind.name(), &[x], |t| softmax_with(&t[0], &opts), |h| softmax_reference(&h[0], kind, temperature as f64, None, false), TOL);
            }
        }
    });
}

#[test]
fn every_workgroup_size_gives_the_same_softmax_and_cross_entropy() {
    on_both_paths(|| {
        let mut r = rng(56);
        for threads in row_threads_allowed(&device()) {
            for v in [37, 300] {
                let targets: Vec<u32> = (0..5).map(|_| r.random_range(0..v as u32)).collect();
                let logits = host(&mut r, &[5, v], -4.0, 4.0);
                device().with_policy(
                    |p| p.row_threads = Some(threads),
                    || check_cross_entropy(logits, &targets, CrossEntropyOptions { ignore_index: 2, z_coef: 0.1 }),
                );
            }
            for (kind, n) in [(SoftmaxKind::Softmax, 5), (SoftmaxKind::LogSoftmax, 36), (SoftmaxKind::StableMax, 300)] {
                let x = host(&mut r, &[3, 4, n], -3.0, 3.0);
                let opts = SoftmaxOptions { mask: Mask::Causal, ..SoftmaxOptions::new(kind) };
                let reference = |h: &[HostTensor]| softmax_reference(&h[0], kind, 1.0, None, true);
                if kind == SoftmaxKind::LogSoftmax {
                    let got = device().with_policy(|p| p.row_threads = Some(threads), || softmax_with(&upload(&x), &opts)).to_vec().unwrap();
                    assert_close(&format!("{} with {threads} threads", kind.name()), &got, &reference(&[x]).data, 1e-5);
                } else {
                    device().with_policy(|p| p.row_threads = Some(threads), || check_op(kind.name(), &[x], |t| softmax_with(&t[0], &opts), reference, TOL));
                }
            }
        }
    });
}

#[test]
fn causal_softmax_masks_the_future() {
    on_both_paths(|| {
        let mut r = rng(51);
        for kind in [SoftmaxKind::Softmax, SoftmaxKind::StableMax] {
            for (t, s) in [(1, 1), (7, 7), (5, 9), (8, 8), (5, 12), (33, 33)] {
                let x = host(&mut r, &[2, t, s], -3.0, 3.0);
                let opts = SoftmaxOptions { mask: Mask::Causal, ..SoftmaxOptions::new(kind) };
                check_op("causal", &[x], |t| softmax_with(&t[0], &opts), |h| softmax_reference(&h[0], kind, 1.0, None, true), TOL);
            }
        }
    });
}

fn random_mask(r: &mut rand::rngs::StdRng, rows: usize, n: usize) -> HostTensor {
    let mut m = HostTensor::new(&[rows, n], (0..rows * n).map(|_| if r.random_bool(0.7) { 1.0 } else { 0.0 }).collect());
    m.data[..n].iter_mut().for_each(|v| *v = 0.0); // the first row fully masked
    m
}

#[test]
fn tensor_masks_give_exact_zeros_and_no_nan() {
    on_both_paths(|| {
        let mut r = rng(52);
        // 37 floats a row: scalar loads; 36: vec4 loads.
        for (kind, n) in KINDS.into_iter().flat_map(|k| [(k, 37), (k, 36)]) {
            let mask_rows = 4;
            let mask = random_mask(&mut r, mask_rows, n);
            let mask_t = upload(&mask);
            let x = host(&mut r, &[3, mask_rows, n], -3.0, 3.0);
            let opts = SoftmaxOptions { mask: Mask::Tensor(mask_t.clone()), ..SoftmaxOptions::new(kind) };
            let got = softmax_with(&upload(&x), &opts).to_vec().unwrap();
            assert!(got.iter().all(|v| v.is_finite()), "{}: NaN or inf in a masked softmax", kind.name());
            assert_close(kind.name(), &got, &softmax_reference(&x, kind, 1.0, Some(&mask), false).data, 1e-5);
            for (i, v) in got.iter().enumerate() {
                if mask.data[(i / n % mask_rows) * n + i % n] == 0.0 && kind != SoftmaxKind::LogSoftmax {
                    assert_eq!(*v, 0.0, "{}: masked entry {i} must be exactly 0", kind.name());
                }
            }
            if kind != SoftmaxKind::LogSoftmax {
                // Gradients too (log-softmax's masked outputs are the most negative f32, which
                // leaves nothing for finite differences to measure).
                let opts2 = opts.clone();
                check_op(kind.name(), &[x], move |t| softmax_with(&t[0], &opts2), |h| softmax_reference(&h[0], kind, 1.0, Some(&mask), false), TOL);
            }
        }
    });
}

/// dx for output gradient `w`, from the reference output `y` of logits `x` (temperature
/// 1): the softmax family's Jacobian written out, where finite differences of rows this
/// long would be lost in their tolerance.
fn softmax_grad_reference(kind: SoftmaxKind, x: &HostTensor, y: &HostTensor, w: &HostTensor) -> Vec<f64> {
    let n = *x.shape.last().unwrap();
    let live = |y: f64| if kind == SoftmaxKind::LogSoftmax { y > f32::MIN as f64 } else { y != 0.0 };
    let mut dx = Vec::with_capacity(x.numel());
    for ((x, y), w) in x.data.chunks(n).zip(y.data.chunks(n)).zip(w.data.chunks(n)) {
        let dot: f64 = (0..n).filter(|&j| live(y[j])).map(|j| if kind == SoftmaxKind::LogSoftmax { w[j] } else { w[j] * y[j] }).sum();
        dx.extend((0..n).map(|j| match kind {
            _ if !live(y[j]) => 0.0,
            SoftmaxKind::Softmax => y[j] * (w[j] - dot),
            SoftmaxKind::LogSoftmax => w[j] - y[j].exp() * dot,
            SoftmaxKind::StableMax => y[j] / (1.0 + x[j].abs()) * (w[j] - dot),
        }));
    }
    dx
}

/// `assert_close` relative to the largest finite value expected (the most negative f32 of
/// masked log-softmax entries aside): long rows' probabilities and gradients are far below
/// the tolerance's absolute floor of 1.
fn assert_close_to_largest(what: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().map(|v| v.abs()).filter(|&v| v < f32::MAX as f64).fold(f64::MIN_POSITIVE, f64::max);
    let got: Vec<f32> = got.iter().map(|&g| (g as f64 / scale) as f32).collect();
    assert_close(what, &got, &want.iter().map(|w| w / scale).collect::<Vec<_>>(), 1e-5);
}

#[test]
fn rows_read_once_and_rows_read_twice_agree_with_the_reference() {
    on_both_paths(|| {
        let mut r = rng(57);
        // With the fewest threads a row, rows up to MOST_KEPT loads a thread are read once
        // and kept in registers, longer ones are read twice: sizes either side of that
        // line, in scalar loads (odd n) and vec4 loads.
        let threads = ROW_THREADS[0] as usize;
        let most_scalar = MOST_KEPT * threads;
        let sizes = [(most_scalar - 1, true), (most_scalar + 1, false), (4 * most_scalar, true), (4 * most_scalar + 4, false)];
        for (n, kept) in sizes {
            let loads = if n % 4 == 0 { n / 4 } else { n };
            assert_eq!(loads_kept(loads, threads as u32) > 0, kept, "rows of {n}: which path the test covers");
            for kind in KINDS {
                let mask = random_mask(&mut r, 2, n);
                let masks = [("no mask", Mask::None), ("causal", Mask::Causal), ("tensor mask", Mask::Tensor(upload(&mask)))];
                for (mask_name, mask_opt) in masks {
                    let what = format!("{} of rows of {n} with {mask_name}", kind.name());
                    let x = host(&mut r, &[2, 3, n], -6.0, 6.0);
                    let host_mask = matches!(mask_opt, Mask::Tensor(_)).then_some(&mask);
                    let want = softmax_reference(&x, kind, 1.0, host_mask, matches!(mask_opt, Mask::Causal));
                    let opts = SoftmaxOptions { mask: mask_opt, ..SoftmaxOptions::new(kind) };
                    let input = upload(&x).requires_grad();
                    let y = device().with_policy(|p| p.row_threads = Some(threads as u32), || softmax_with(&input, &opts));
                    assert_close_to_largest(&what, &y.to_vec().unwrap(), &want.data);
                    let w = host(&mut r, &x.shape, -1.0, 1.0);
                    device().with_policy(|p| p.row_threads = Some(threads as u32), || y.backward_with(&upload(&w)));
                    let grad = input.grad().unwrap().to_vec().unwrap();
                    let want_grad = softmax_grad_reference(kind, &x, &want, &w);
                    assert_close_to_largest(&format!("gradient of {what}"), &grad, &want_grad);
                }
            }
        }
    });
}

#[test]
fn rows_packed_several_to_a_workgroup_match_the_reference_at_every_layout() {
    // Short rows share a workgroup, one subgroup's lanes each, on adapters with subgroups
    // (lavapipe's 8 lanes: rows of 1, 2, 4 and 8 threads). Each packed layout at random
    // row lengths that select it, scalar and vec4 loads, with a last workgroup that is
    // not full, every kind and mask, forward and gradient.
    let dev = device();
    let mut r = rng(58);
    for (layout, sizes) in packed_row_lengths(&dev, &mut r) {
        for n in sizes {
            let batch = 2 * layout.rows as usize / n.min(3) + 1;
            for kind in KINDS {
                let mask = random_mask(&mut r, n.min(3), n);
                let masks = [("no mask", Mask::None), ("causal", Mask::Causal), ("tensor mask", Mask::Tensor(upload(&mask)))];
                for (mask_name, mask_opt) in masks {
                    let x = host(&mut r, &[batch, n.min(3), n], -4.0, 4.0);
                    let host_mask = matches!(mask_opt, Mask::Tensor(_)).then_some(&mask);
                    let causal = matches!(mask_opt, Mask::Causal);
                    let reference = |h: &[HostTensor]| softmax_reference(&h[0], kind, 1.5, host_mask, causal);
                    let opts = SoftmaxOptions { mask: mask_opt.clone(), temperature: 1.5, ..SoftmaxOptions::new(kind) };
                    let what =
                        format!("{} of {} rows of {n} with {mask_name}, {} threads x {} rows", kind.name(), batch * n.min(3), layout.threads, layout.rows);
                    if kind == SoftmaxKind::LogSoftmax && !matches!(mask_opt, Mask::None) {
                        // Masked entries are the most negative f32, outside finite differences.
                        let got = softmax_with(&upload(&x), &opts).to_vec().unwrap();
                        assert_close(&what, &got, &reference(&[x]).data, 1e-5);
                    } else {
                        check_op(&what, &[x], |t| softmax_with(&t[0], &opts), reference, TOL);
                    }
                }
            }
        }
    }
}

#[test]
fn rows_of_sixty_five_thousand() {
    on_both_paths(|| {
        let mut r = rng(53);
        for (kind, n) in KINDS.into_iter().flat_map(|k| [(k, 65_536), (k, 65_533)]) {
            let x = host(&mut r, &[2, n], -8.0, 8.0);
            let got = softmax_with(&upload(&x), &SoftmaxOptions::new(kind)).to_vec().unwrap();
            assert_close(kind.name(), &got, &softmax_reference(&x, kind, 1.0, None, false).data, 1e-4);
        }
    });
}

/// Cross-entropy of `logits` against `targets`: value and gradient against the reference.
/// The gradient at each row's target too, where the one-hot term lives: `check_op`'s
/// random sample of a large gradient mostly misses those positions.
fn check_cross_entropy(logits: HostTensor, targets: &[u32], opts: CrossEntropyOptions) {
    let t = Tensor::from_u32(&device(), targets, &[targets.len()]).unwrap();
    check_op(
        "cross_entropy",
        std::slice::from_ref(&logits),
        |l| cross_entropy(&l[0], &t, opts),
        |h| HostTensor::new(&[], vec![cross_entropy_reference(&h[0], targets, opts)]),
        TOL,
    );
    let x = upload(&logits).requires_grad();
    cross_entropy(&x, &t, opts).backward();
    let grad = x.grad().unwrap().to_vec().unwrap();
    let v = logits.shape[1];
    for (row, &target) in targets.iter().enumerate().filter(|&(_, &t)| t != opts.ignore_index) {
        let at = row * v + target as usize;
        let nudged = |h: f64| {
            let mut l = logits.clone();
            l.data[at] += h;
            cross_entropy_reference(&l, targets, opts)
        };
        let numeric = (nudged(1e-6) - nudged(-1e-6)) / 2e-6;
        assert!(
            (grad[at] as f64 - numeric).abs() <= TOL.grad * numeric.abs().max(1.0),
            "cross_entropy: d/d logits[{row}, {target}] is {} on the GPU, {numeric} by finite differences",
            grad[at]
        );
    }
}

#[test]
fn cross_entropy_with_ignore_index_and_z_loss() {
    on_both_paths(|| {
        let mut r = rng(54);
        for (rows, v) in [(1, 1), (7, 5), (33, 65), (9, 1000)] {
            for z_coef in [0.0, 0.1] {
                let opts = CrossEntropyOptions { ignore_index: 3, z_coef };
                let targets: Vec<u32> = (0..rows).map(|_| r.random_range(0..v as u32)).chain([3]).take(rows).collect();
                check_cross_entropy(host(&mut r, &[rows, v], -5.0, 5.0), &targets, opts);
            }
        }
    });
}

#[test]
fn cross_entropy_over_a_fifty_thousand_vocabulary() {
    on_both_paths(|| {
        let mut r = rng(55);
        let (rows, v) = (3, 50_257);
        let targets: Vec<u32> = (0..rows).map(|_| r.random_range(0..v as u32)).collect();
        check_cross_entropy(host(&mut r, &[rows, v], -10.0, 10.0), &targets, CrossEntropyOptions::default());
    });
}

#[test]
fn all_ignored_gives_zero_loss_and_gradient() {
    let x = upload(&HostTensor::new(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).requires_grad();
    let t = Tensor::from_u32(&device(), &[7, 7], &[2]).unwrap();
    let loss = cross_entropy(&x, &t, CrossEntropyOptions { ignore_index: 7, z_coef: 0.0 });
    assert_eq!(loss.item().unwrap(), 0.0);
    loss.backward();
    assert!(x.grad().unwrap().to_vec().unwrap().iter().all(|&g| g == 0.0));
}
