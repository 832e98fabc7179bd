//! Routing: top-k, the fused router, token permutation, gather and combine.

use moegrad::ops::load_balance::load_balancing_loss_reference;
use moegrad::ops::permute::{combine_slots_reference, gather_slots_reference, plan_routing_reference};
use moegrad::ops::router::{route_reference, route_scored_reference, router_stats_reference, sigmoid_entropy_reference};
use moegrad::ops::topk::topk_reference;
use moegrad::ops::{
    combine_slots, concat, gather_slots, load_balancing_loss, plan_routing, reshape, route, route_scored, route_with_stats, router_exchange, topk, HostTensor,
    RouterOptions, Score,
};
use moegrad::prelude::*;
use rand::Rng;

use crate::common::{assert_close, check_op, device, dim, host, on_both_paths, packed_row_lengths, random_choices, rng, upload, TOL};

#[test]
fn topk_values_indices_and_gradient() {
    let mut r = rng(60);
    for n in [1, 2, 7, 33, 64, 65, 256] {
        let k = r.random_range(1..=n.min(8));
        let rows = dim(&mut r, 70);
        let x = host(&mut r, &[rows, n], -2.0, 2.0);
        let (_, want_idx) = topk_reference(&x, k);
        let (_, idx) = topk(&upload(&x), k);
        assert_eq!(idx.to_vec_u32().unwrap(), want_idx, "topk indices, n = {n}, k = {k}");
        check_op("topk", &[x], |t| topk(&t[0], k).0, |h| topk_reference(&h[0], k).0, TOL);
    }
}

#[test]
fn topk_ties_go_to_the_lower_index() {
    let x = upload(&HostTensor::from_f32(&[2, 5], &[1.0, 3.0, 3.0, 0.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0]));
    let (v, i) = topk(&x, 3);
    assert_eq!(i.to_vec_u32().unwrap(), vec![1, 2, 4, 0, 1, 2]);
    assert_eq!(v.to_vec().unwrap(), vec![3.0, 3.0, 3.0, 2.0, 2.0, 2.0]);
}

/// The router on random logits against the reference: indices exactly; probabilities,
/// weights and log-normalisers with their gradients; entropies.
fn check_router(r: &mut rand::rngs::StdRng) {
    for (tokens, experts, k) in [(1, 1, 1), (7, 8, 2), (33, 64, 8), (130, 17, 2), (65, 256, 4), (5, 3, 3)] {
        for renormalize in [false, true] {
            let logits = host(r, &[tokens, experts], -3.0, 3.0);
            let (out, stats) = route_with_stats(&upload(&logits), k, renormalize);
            let (_, _, want_idx) = route_reference(&logits, k, renormalize);
            assert_eq!(out.indices.to_vec_u32().unwrap(), want_idx);
            assert_eq!(route(&upload(&logits), k, renormalize).indices.to_vec_u32().unwrap(), want_idx, "route without statistics");
            let (_, want_entropy) = router_stats_reference(&logits);
            assert_close("router entropy", &stats.entropy.to_vec().unwrap(), &want_entropy.data, 1e-5);
            // Probabilities, weights and log-normalisers all carry gradients: check them together.
            let all = |t: &[Tensor]| {
                let (o, s) = route_with_stats(&t[0], k, renormalize);
                concat(&[&reshape(&o.probs, &[tokens * experts]), &reshape(&o.weights, &[tokens * k]), &s.log_normalizer], 0)
            };
            let all_ref = |h: &[HostTensor]| {
                let (p, w, _) = route_reference(&h[0], k, renormalize);
                let (lse, _) = router_stats_reference(&h[0]);
                HostTensor::new(&[tokens * (experts + k + 1)], p.data.into_iter().chain(w.data).chain(lse.data).collect())
            };
            check_op("router", &[logits], all, all_ref, TOL);
        }
    }
}

#[test]
fn router_matches_reference_with_and_without_renormalisation() {
    // Lanes exchange through subgroup shuffles where the adapter has subgroups of 8 to 128
    // lanes (lavapipe's are 8): the shuffle kernel must pass its self-check and be used.
    let dev = device();
    if dev.subgroup_sizes().is_some_and(|(smallest, largest)| smallest >= 8 && largest <= 128) {
        assert_eq!(router_exchange(&dev), "subgroup shuffles");
    }
    check_router(&mut rng(61));
}

#[test]
fn router_without_subgroups_matches_reference() {
    device().with_policy(|p| p.subgroups = false, || check_router(&mut rng(63)));
}

/// Sigmoid scores and a selection bias, with and without renormalisation, against the
/// reference: the indices exactly (chosen by score plus bias), the scores, the unbiased
/// weights and the log-normaliser with their gradients, and the entropy.
fn check_scored_router(r: &mut rand::rngs::StdRng) {
    for (tokens, experts, k) in [(7, 8, 2), (33, 64, 8), (21, 17, 3), (9, 256, 8), (4, 1, 1)] {
        for (score, biased, renormalize) in
            [(Score::Sigmoid, false, true), (Score::Sigmoid, true, true), (Score::Softmax, true, false), (Score::Sigmoid, true, false)]
        {
            let logits = host(r, &[tokens, experts], -3.0, 3.0);
            // Biases of the size the balancing update reaches, so that they change choices.
            let bias = host(r, &[experts], -0.3, 0.3);
            let bias_ref = biased.then_some(bias.data.as_slice());
            let bias_gpu = upload(&bias);
            let options = RouterOptions { k, score, renormalize, selection_bias: biased.then_some(&bias_gpu) };
            let (out, stats) = route_scored(&upload(&logits), &options);
            let (_, _, want_idx) = route_scored_reference(&logits, k, score, renormalize, bias_ref);
            let what = format!("{score:?} router, bias {biased}, renormalize {renormalize}, [{tokens}, {experts}] k {k}");
            assert_eq!(out.indices.to_vec_u32().unwrap(), want_idx, "{what}: indices");
            let want_entropy = match score {
                Score::Sigmoid => sigmoid_entropy_reference(&logits),
                Score::Softmax => router_stats_reference(&logits).1,
            };
            assert_close(&format!("{what}: entropy"), &stats.entropy.to_vec().unwrap(), &want_entropy.data, 1e-5);
            let all = |t: &[Tensor]| {
                let (o, s) = route_scored(&t[0], &options);
                concat(&[&reshape(&o.probs, &[tokens * experts]), &reshape(&o.weights, &[tokens * k]), &s.log_normalizer], 0)
            };
            let all_ref = |h: &[HostTensor]| {
                let (p, w, _) = route_scored_reference(&h[0], k, score, renormalize, bias_ref);
                let (lse, _) = router_stats_reference(&h[0]);
                HostTensor::new(&[tokens * (experts + k + 1)], p.data.into_iter().chain(w.data).chain(lse.data).collect())
            };
            check_op(&what, &[logits], all, all_ref, TOL);
        }
    }
}

#[test]
fn sigmoid_and_biased_routers_match_reference() {
    check_scored_router(&mut rng(66));
}

#[test]
fn sigmoid_and_biased_routers_without_subgroups_match_reference() {
    device().with_policy(|p| p.subgroups = false, || check_scored_router(&mut rng(67)));
}

#[test]
fn sigmoid_router_weights_alone_give_a_gradient_through_the_sigmoid() {
    let mut r = rng(68);
    let logits = host(&mut r, &[11, 12], -2.0, 2.0);
    let options = RouterOptions { k: 3, score: Score::Sigmoid, renormalize: true, selection_bias: None };
    check_op(
        "sigmoid router weights",
        &[logits],
        |t| route_scored(&t[0], &options).0.weights,
        |h| route_scored_reference(&h[0], 3, Score::Sigmoid, true, None).1,
        TOL,
    );
}

#[test]
fn router_weights_alone_give_a_gradient_through_the_softmax() {
    let mut r = rng(62);
    let logits = host(&mut r, &[9, 16], -2.0, 2.0);
    check_op("router weights", &[logits], |t| route(&t[0], 2, true).weights, |h| route_reference(&h[0], 2, true).1, TOL);
}

#[test]
fn router_log_normaliser_alone_gives_the_probabilities_as_gradient() {
    let mut r = rng(65);
    let logits = host(&mut r, &[19, 12], -4.0, 4.0);
    check_op("router log-normaliser", &[logits], |t| route_with_stats(&t[0], 3, false).1.log_normalizer, |h| router_stats_reference(&h[0]).0, TOL);
}

#[test]
fn router_entropy_ignores_experts_of_zero_probability() {
    let logits = HostTensor::from_f32(&[2, 4], &[0.5, f32::NEG_INFINITY, -1.0, 2.0, 1.0, 1.0, 1.0, 1.0]);
    let (out, stats) = route_with_stats(&upload(&logits), 2, false);
    let entropy = stats.entropy.to_vec().unwrap();
    assert_close("entropy with a -inf logit", &entropy, &router_stats_reference(&logits).1.data, 1e-5);
    assert!((entropy[1] as f64 - 4f64.ln()).abs() < 1e-5, "uniform over 4 experts: ln 4, got {}", entropy[1]);
    assert_eq!(out.probs.to_vec().unwrap()[1], 0.0);
}

#[test]
fn load_balancing_loss_matches_reference_and_gradient() {
    on_both_paths(|| {
        let mut r = rng(66);
        for (tokens, experts, k) in [(1, 1, 1), (7, 8, 2), (300, 5, 3), (513, 64, 2), (33, 256, 8)] {
            let probs = host(&mut r, &[tokens, experts], 0.0, 1.0);
            let ids = random_choices(&mut r, tokens, k, experts);
            let plan = plan_routing(&Tensor::from_u32(&device(), &ids, &[tokens, k]).unwrap(), experts);
            let coef = r.random_range(0.01..2.0);
            let (_, want_load) = load_balancing_loss_reference(&probs, &ids, coef);
            let balance = load_balancing_loss(&upload(&probs), &plan, coef as f32);
            assert_close("expert load", &balance.load.to_vec().unwrap(), &want_load, 1e-6);
            check_op(
                "load_balancing_loss",
                &[probs],
                |t| load_balancing_loss(&t[0], &plan, coef as f32).loss,
                |h| HostTensor::new(&[], vec![load_balancing_loss_reference(&h[0], &ids, coef).0]),
                TOL,
            );
        }
        let no_tokens = plan_routing(&Tensor::from_u32(&device(), &[], &[0, 2]).unwrap(), 4);
        let empty = load_balancing_loss(&upload(&HostTensor::zeros(&[0, 4])), &no_tokens, 1.0);
        assert_eq!((empty.loss.item().unwrap(), empty.load.to_vec().unwrap()), (0.0, vec![0.0; 4]), "no tokens: nothing to balance");
    });
}

#[test]
fn permutation_is_stable_exact_and_deterministic() {
    let mut r = rng(63);
    for (tokens, k, experts) in [(1, 1, 1), (7, 2, 8), (300, 2, 8), (257, 1, 3), (100, 8, 256), (65, 4, 64)] {
        let ids = random_choices(&mut r, tokens, k, experts);
        let ids_t = Tensor::from_u32(&device(), &ids, &[tokens, k]).unwrap();
        let plan = plan_routing(&ids_t, experts);
        let (counts, offsets, sorted, positions) = plan_routing_reference(&ids, experts);
        assert_eq!(plan.counts.to_vec_u32().unwrap(), counts);
        assert_eq!(plan.offsets.to_vec_u32().unwrap(), offsets);
        assert_eq!(plan.sorted_slots.to_vec_u32().unwrap(), sorted);
        assert_eq!(plan.slot_positions.to_vec_u32().unwrap(), positions);
        let again = plan_routing(&ids_t, experts);
        assert_eq!(again.sorted_slots.to_vec_u32().unwrap(), sorted, "same input, same permutation");
    }
}

#[test]
fn gather_and_combine_match_reference_and_gradients() {
    let mut r = rng(64);
    // Rows of single floats, rows of whole vec4 loads (4 and a random multiple of 4), and
    // empty rows.
    let d4 = 4 * r.random_range(2..20);
    let mut cases = vec![(1, 1, 1, 1), (7, 2, 4, 33), (40, 3, 8, 65), (3, 1, 2, 4), (37, 2, 8, d4), (5, 2, 3, 0)];
    // The weights' gradient reduces each slot's dot product as a row kernel's row: each
    // layout that packs rows, over a last workgroup that is not full.
    for (layout, sizes) in packed_row_lengths(&device(), &mut r) {
        cases.extend(sizes.into_iter().map(|d| (layout.rows as usize / 2 + 1, 2, 4, d)));
    }
    let cases: Vec<_> = cases
        .into_iter()
        .map(|(tokens, k, experts, d)| {
            let ids = random_choices(&mut r, tokens, k, experts);
            let data = [host(&mut r, &[tokens, d], -1.0, 1.0), host(&mut r, &[tokens * k, d], -1.0, 1.0), host(&mut r, &[tokens, k], 0.0, 1.0)];
            (tokens, k, experts, d, ids, data)
        })
        .collect();
    on_both_paths(|| {
        for (tokens, k, experts, d, ids, [x, rows, w]) in &cases {
            let (tokens, k, experts, d) = (*tokens, *k, *experts, *d);
            let plan = plan_routing(&Tensor::from_u32(&device(), ids, &[tokens, k]).unwrap(), experts);
            let (_, _, sorted, positions) = plan_routing_reference(ids, experts);
            check_op("gather_slots", std::slice::from_ref(x), |t| gather_slots(&t[0], &plan), |h| gather_slots_reference(&h[0], &sorted, k), TOL);
            check_op(
                &format!("combine_slots of {tokens} x {k} slots of {d}"),
                &[rows.clone(), w.clone()],
                |t| combine_slots(&t[0], &t[1], &plan),
                |h| combine_slots_reference(&h[0], &h[1], &positions),
                TOL,
            );
        }
    });
}
