//! Sum, mean and max over an axis and over everything.

use moegrad::ops::reduce::reduce_all_reference;
use moegrad::ops::rows::packed_layouts;
use moegrad::ops::rows::{layouts_reduce_correctly, reduces_correctly, WorkgroupReduce};
use moegrad::ops::{reduce, reduce_all, workgroup_reduction, HostTensor, ReduceOp};

use crate::common::{check_op, device, host, rng, shape, upload, TOL};

const OPS: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max];

#[test]
fn axis_reductions_match_reference_and_gradients() {
    let mut r = rng(10);
    for op in OPS {
        for rank in 1..=3 {
            for _ in 0..2 {
                let s = shape(&mut r, rank, 4000);
                let axis = rand::Rng::random_range(&mut r, 0..rank);
                let x = host(&mut r, &s, -3.0, 3.0);
                check_op(op.name(), &[x], |t| reduce(op, &t[0], axis, false), |h| op.reference(&h[0], axis), TOL);
            }
        }
    }
}

#[test]
fn full_reductions_match_reference_and_gradients() {
    let mut r = rng(11);
    for op in OPS {
        // 20,000 and 300,000 elements are summed in two passes (chunks, then their sums).
        for n in [1, 63, 1000, 20_000, 300_000] {
            let x = host(&mut r, &[n], -3.0, 3.0);
            check_op(op.name(), &[x], |t| reduce_all(op, &t[0]), |h| reduce_all_reference(op, &h[0]), TOL);
        }
    }
}

/// The shapes where the kernel changes strategy: long rows with few outputs and long
/// columns with few outputs (two passes for sum and mean), wide columns (a thread each).
#[test]
fn long_axes_with_few_outputs_match_reference_and_gradients() {
    let mut r = rng(12);
    for (s, axis) in [(vec![3, 9001], 1), (vec![5003, 3], 0), (vec![2, 701, 5], 1), (vec![130, 1, 517], 0), (vec![9, 70], 0)] {
        for op in OPS {
            let x = host(&mut r, &s, -3.0, 3.0);
            check_op(op.name(), &[x], |t| reduce(op, &t[0], axis, false), |h| op.reference(&h[0], axis), TOL);
        }
    }
}

#[test]
fn keepdim_keeps_a_unit_axis() {
    let x = upload(&HostTensor::from_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    let s = x.sum_keepdim(1);
    assert_eq!(s.shape(), &[2, 1]);
    assert_eq!(s.to_vec().unwrap(), vec![6.0, 15.0]);
}

#[test]
fn max_ties_go_to_the_first_position() {
    let x = upload(&HostTensor::from_f32(&[1, 4], &[2.0, 5.0, 5.0, 1.0])).requires_grad();
    x.max(1).sum_all().backward();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![0.0, 1.0, 0.0, 0.0]);
}

#[test]
#[should_panic(expected = "sum: axis 2 is out of range for shape [2, 3]")]
fn bad_axis_is_named() {
    upload(&HostTensor::zeros(&[2, 3])).sum(2);
}

#[test]
fn workgroup_reductions_give_every_thread_the_total_at_every_size() {
    // The row kernels' reductions, held to host sums for both implementations: on an
    // adapter with subgroups (lavapipe's have 8 lanes) the subgroup one must pass the
    // device's one-time check and be the one in use, and so must rows packed several to
    // a workgroup, a subgroup's lanes each.
    let dev = device();
    assert!(reduces_correctly(&dev, WorkgroupReduce::Memory), "workgroup-memory reductions are wrong");
    if dev.subgroup_sizes().is_some() {
        assert!(reduces_correctly(&dev, WorkgroupReduce::Subgroup), "subgroup reductions are wrong");
        assert_eq!(workgroup_reduction(&dev), "subgroup operations");
        let packed = packed_layouts(&dev);
        assert!(!packed.is_empty() && layouts_reduce_correctly(&dev, &packed), "packed rows reduce wrongly: {packed:?}");
    }
    assert_eq!(dev.with_policy(|p| p.subgroups = false, || workgroup_reduction(&dev)), "workgroup memory");
}
