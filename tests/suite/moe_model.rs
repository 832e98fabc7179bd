//! The model's MoE layers (TopK and Default MoE) against a CPU reference: outputs, all
//! gradients, the router gradient of skipped experts, the router's losses and entropy,
//! and the default vectors' EMA rule.

use moegrad::models::{FfnActivation, FfnKind, MoeConfig, MoeFfn};
use moegrad::ops::expert_ema::{expert_output_ema_reference, expert_output_sums_reference};
use moegrad::ops::router::{route_reference, router_stats_reference};
use moegrad::ops::{concat, reshape, HostTensor, UnaryOp};
use moegrad::prelude::*;

use crate::common::{assert_close, check_op, host, rng, upload, TOL};

const TOKENS: usize = 11;
const D: usize = 6;
const HIDDEN: usize = 5;
const E: usize = 4;
const K: usize = 2;

fn config() -> MoeConfig {
    MoeConfig { experts: E, top_k: K, expert_hidden: HIDDEN, activation: FfnActivation::Gelu, aux_loss_coef: 0.0, z_loss_coef: 0.0, ..MoeConfig::default() }
}

/// Per token: router probabilities, chosen experts, and every expert's output E_i(x).
struct Reference {
    probs: HostTensor,
    indices: Vec<u32>,
    expert_out: Vec<Vec<Vec<f64>>>, // [token][expert][d]
}

fn reference(h: &[HostTensor]) -> Reference {
    let (x, wr, w_in, w_out) = (&h[0], &h[1], &h[2], &h[3]);
    let logits = moegrad::ops::matmul::matmul_reference(x, wr, false, false);
    let (probs, _, indices) = route_reference(&logits, K, false);
    let expert_out = (0..TOKENS)
        .map(|t| {
            (0..E)
                .map(|e| {
                    let hidden: Vec<f64> = (0..HIDDEN)
                        .map(|c| UnaryOp::Gelu.reference_scalar((0..D).map(|i| x.data[t * D + i] * w_in.data[(e * D + i) * HIDDEN + c]).sum()))
                        .collect();
                    (0..D).map(|o| (0..HIDDEN).map(|c| hidden[c] * w_out.data[(e * HIDDEN + c) * D + o]).sum()).collect()
                })
                .collect()
        })
        .collect();
    Reference { probs, indices, expert_out }
}

/// y = sum_{i in A} p_i E_i(x) (+ sum_{i not in A} p_i D_i for the Default MoE).
fn layer_reference(h: &[HostTensor], defaults: Option<&HostTensor>) -> HostTensor {
    let r = reference(h);
    let mut y = HostTensor::zeros(&[TOKENS, D]);
    for t in 0..TOKENS {
        let chosen = &r.indices[t * K..(t + 1) * K];
        for e in 0..E {
            let p = r.probs.data[t * E + e];
            for o in 0..D {
                y.data[t * D + o] += if chosen.contains(&(e as u32)) { p * r.expert_out[t][e][o] } else { defaults.map_or(0.0, |dv| p * dv.data[e * D + o]) };
            }
        }
    }
    y
}

fn inputs(seed: u64) -> (Vec<HostTensor>, HostTensor) {
    let mut r = rng(seed);
    let h = vec![
        host(&mut r, &[TOKENS, D], -1.0, 1.0),
        host(&mut r, &[D, E], -1.0, 1.0),
        host(&mut r, &[E, D, HIDDEN], -0.7, 0.7),
        host(&mut r, &[E, HIDDEN, D], -0.7, 0.7),
    ];
    (h, host(&mut r, &[E, D], -1.0, 1.0))
}

fn layer(kind: FfnKind, t: &[Tensor], defaults: &HostTensor, cfg: &MoeConfig) -> MoeFfn {
    MoeFfn::from_parts(kind, cfg, t[1].clone(), t[2].clone(), t[3].clone(), upload(defaults)).unwrap()
}

#[test]
fn topk_and_default_layers_match_reference_in_outputs_and_gradients() {
    for (kind, seed) in [(FfnKind::Topk, 90), (FfnKind::Default, 91)] {
        let (h, defaults) = inputs(seed);
        let with_defaults = (kind == FfnKind::Default).then_some(&defaults);
        check_op(kind.name(), &h, |t| layer(kind, t, &defaults, &config()).forward(&t[0], false).0, |h| layer_reference(h, with_defaults), TOL);
    }
}

#[test]
fn router_gradient_of_skipped_experts_is_zero_for_topk_and_the_default_term_for_default_moe() {
    for kind in [FfnKind::Topk, FfnKind::Default] {
        let (h, defaults) = inputs(92);
        let mut r = rng(93);
        let g = host(&mut r, &[TOKENS, D], -1.0, 1.0); // dL/dy
        let tensors: Vec<Tensor> = h.iter().map(|t| upload(t).requires_grad()).collect();
        layer(kind, &tensors, &defaults, &config()).forward(&tensors[0], false).0.backward_with(&upload(&g));
        // dL/dp_i = <g, E_i(x)> if i was chosen; <g, D_i> (Default) or 0 (TopK) if not.
        let rf = reference(&h);
        let mut dlogits = HostTensor::zeros(&[TOKENS, E]);
        for t in 0..TOKENS {
            let dot = |v: &dyn Fn(usize) -> f64| (0..D).map(|o| g.data[t * D + o] * v(o)).sum::<f64>();
            let dp: Vec<f64> = (0..E)
                .map(|e| {
                    if rf.indices[t * K..(t + 1) * K].contains(&(e as u32)) {
                        dot(&|o| rf.expert_out[t][e][o])
                    } else if kind == FfnKind::Default {
                        dot(&|o| defaults.data[e * D + o])
                    } else {
                        0.0
                    }
                })
                .collect();
            let p = &rf.probs.data[t * E..(t + 1) * E];
            let mean: f64 = (0..E).map(|e| p[e] * dp[e]).sum();
            for e in 0..E {
                dlogits.data[t * E + e] = p[e] * (dp[e] - mean); // the softmax Jacobian
            }
        }
        let d_router = moegrad::ops::matmul::matmul_reference(&h[0], &dlogits, true, false); // x^T dlogits
        assert_close(&format!("{} router gradient", kind.name()), &tensors[1].grad().unwrap().to_vec().unwrap(), &d_router.data, 1e-4);
    }
}

/// `[aux, z]`: coef_aux * E * sum_e f_e mean_t p_te (f_e the share of routed slots, a
/// constant) and coef_z * mean_t logsumexp_t^2.
fn router_losses_reference(h: &[HostTensor], aux_coef: f64, z_coef: f64) -> HostTensor {
    let logits = moegrad::ops::matmul::matmul_reference(&h[0], &h[1], false, false);
    let (probs, _, indices) = route_reference(&logits, K, false);
    let (lse, _) = router_stats_reference(&logits);
    let share = |e: usize| indices.iter().filter(|&&i| i as usize == e).count() as f64 / (TOKENS * K) as f64;
    let mean_prob = |e: usize| (0..TOKENS).map(|t| probs.data[t * E + e]).sum::<f64>() / TOKENS as f64;
    let aux = aux_coef * E as f64 * (0..E).map(|e| share(e) * mean_prob(e)).sum::<f64>();
    let z = z_coef * lse.data.iter().map(|l| l * l).sum::<f64>() / TOKENS as f64;
    HostTensor::new(&[2], vec![aux, z])
}

#[test]
fn router_losses_and_entropy_match_reference() {
    let cfg = MoeConfig { aux_loss_coef: 0.3, z_loss_coef: 0.2, ..config() };
    for (kind, seed) in [(FfnKind::Topk, 96), (FfnKind::Default, 97)] {
        let (h, defaults) = inputs(seed);
        let losses = |t: &[Tensor]| {
            let (_, stats) = layer(kind, t, &defaults, &cfg).forward(&t[0], true);
            let (aux, z) = (stats.aux_loss.expect("aux loss enabled"), stats.z_loss.expect("z-loss enabled"));
            concat(&[&reshape(&aux, &[1]), &reshape(&z, &[1])], 0)
        };
        check_op(&format!("{} router losses", kind.name()), &h, losses, |h| router_losses_reference(h, 0.3, 0.2), TOL);
        let tensors: Vec<Tensor> = h.iter().map(upload).collect();
        let entropy = layer(kind, &tensors, &defaults, &cfg).forward(&tensors[0], false).1.entropy.item().unwrap();
        let logits = moegrad::ops::matmul::matmul_reference(&h[0], &h[1], false, false);
        let want = router_stats_reference(&logits).1.data.iter().sum::<f64>() / TOKENS as f64;
        assert_close("mean router entropy", &[entropy], &[want], 1e-5);
    }
}

#[test]
fn default_vectors_follow_the_ema_of_expert_outputs() {
    let (h, defaults) = inputs(94);
    let beta = 0.9;
    let cfg = MoeConfig { beta, ..config() };
    let tensors: Vec<Tensor> = h.iter().map(upload).collect();
    let mut moe = layer(FfnKind::Default, &tensors, &defaults, &cfg);
    let (_, stats) = moe.forward(&tensors[0], false);
    assert!(stats.output_sums.is_none(), "evaluation must not update the defaults");
    moe.apply(&stats);
    assert_eq!(moe.defaults.to_vec().unwrap(), defaults.data.iter().map(|&v| v as f32).collect::<Vec<_>>(), "evaluation must not update the defaults");
    let (_, stats) = moe.forward(&tensors[0], true);
    assert_eq!(
        moe.defaults.to_vec().unwrap(),
        defaults.data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        "the forward pass must leave the defaults to the step"
    );
    moe.apply(&stats);
    // Expert outputs in expert order (stable by slot), as the GPU lays them out.
    let rf = reference(&h);
    let mut order: Vec<usize> = (0..TOKENS * K).collect();
    order.sort_by_key(|&s| rf.indices[s]);
    let rows = HostTensor::new(&[TOKENS * K, D], order.iter().flat_map(|&s| rf.expert_out[s / K][rf.indices[s] as usize].clone()).collect());
    let mut offsets = vec![0u32; E + 1];
    for e in 0..E {
        offsets[e + 1] = offsets[e] + rf.indices.iter().filter(|&&i| i as usize == e).count() as u32;
    }
    let want = expert_output_ema_reference(&defaults, &expert_output_sums_reference(&rows, &offsets), beta as f64);
    assert_close("default vectors after one step", &moe.defaults.to_vec().unwrap(), &want.data, 1e-5);
}

#[test]
fn backward_only_defaults_keep_the_topk_forward_and_the_default_gradient() {
    let (h, defaults) = inputs(95);
    let run = |kind, backward_only| {
        let cfg = MoeConfig { default_backward_only: backward_only, ..config() };
        let tensors: Vec<Tensor> = h.iter().map(|t| upload(t).requires_grad()).collect();
        let y = layer(kind, &tensors, &defaults, &cfg).forward(&tensors[0], false).0;
        y.sum_all().backward();
        (y.to_vec().unwrap(), tensors[1].grad().unwrap().to_vec().unwrap())
    };
    let (y_topk, _) = run(FfnKind::Topk, false);
    let (_, g_default) = run(FfnKind::Default, false);
    let (y_mixed, g_mixed) = run(FfnKind::Default, true);
    assert_eq!(y_mixed, y_topk, "forward must equal TopK's");
    assert_close("router gradient", &g_mixed, &g_default.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5);
}
