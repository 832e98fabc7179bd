//! The MoE routing options and the dense-gradient family, each as a whole layer against a
//! plain CPU MoE layer: sigmoid scores, the selection bias, capacity dropping, shared
//! experts, the Default MoE's estimators and DenseMixer, in outputs and in the gradients of
//! every input; fine-grained experts (E = 256, k = 8); the update rules of the bias and of
//! each estimator; and the kernels they add (capacity, weighted sums, bias update).

use moegrad::models::ffn::DenseFfn;
use moegrad::models::{Balance, DefaultEstimator, FfnActivation, FfnKind, MoeConfig, MoeFfn, RouterScore};
use moegrad::ops::capacity::capacity_keep_reference;
use moegrad::ops::expert_ema::{expert_output_ema_reference, expert_output_sums_weighted_reference};
use moegrad::ops::load_balance::bias_balance_update_reference;
use moegrad::ops::router::{route_scored_reference, Score};
use moegrad::ops::{bias_balance_update, capacity_keep, expert_output_sums_weighted, plan_routing, HostTensor, UnaryOp};
use moegrad::prelude::*;
use rand::Rng;

use crate::common::{assert_close, check_op, host, rng, upload, TOL};

/// One layer configuration under test.
#[derive(Clone)]
struct Variant {
    kind: FfnKind,
    cfg: MoeConfig,
    /// Width of the shared experts' MLP (0: none).
    shared: usize,
}

impl Variant {
    fn new(kind: FfnKind, experts: usize, k: usize, hidden: usize, change: impl FnOnce(&mut MoeConfig)) -> Variant {
        let mut cfg = MoeConfig {
            experts,
            top_k: k,
            expert_hidden: hidden,
            activation: FfnActivation::Gelu,
            aux_loss_coef: 0.0,
            z_loss_coef: 0.0,
            ..MoeConfig::default()
        };
        change(&mut cfg);
        Variant { kind, cfg, shared: 0 }
    }

    fn name(&self) -> String {
        let c = &self.cfg;
        format!(
            "{} E{} k{} score {:?} balance {:?} capacity {:?} estimator {:?} shared {}",
            self.kind.name(),
            c.experts,
            c.top_k,
            c.score,
            c.balance,
            c.capacity_factor,
            c.default_estimator,
            self.shared
        )
    }

    fn score(&self) -> Score {
        match self.cfg.score {
            RouterScore::Softmax => Score::Softmax,
            RouterScore::Sigmoid => Score::Sigmoid,
        }
    }

    fn renormalize(&self) -> bool {
        self.cfg.score == RouterScore::Sigmoid || (self.cfg.renormalize && self.kind != FfnKind::Default)
    }
}

/// Inputs `[x, router, w_in, w_out, shared_in, shared_out]`, the Default MoE's stored
/// defaults and the selection bias.
struct Case {
    inputs: Vec<HostTensor>,
    defaults: HostTensor,
    bias: HostTensor,
}

fn case(r: &mut rand::rngs::StdRng, v: &Variant, tokens: usize, d: usize) -> Case {
    let (e, f, s) = (v.cfg.experts, v.cfg.expert_hidden, v.shared.max(1));
    Case {
        inputs: vec![
            host(r, &[tokens, d], -1.0, 1.0),
            host(r, &[d, e], -1.0, 1.0),
            host(r, &[e, d, f], -0.7, 0.7),
            host(r, &[e, f, d], -0.7, 0.7),
            host(r, &[d, s], -0.7, 0.7),
            host(r, &[s, d], -0.7, 0.7),
        ],
        defaults: host(r, &[e, d], -1.0, 1.0),
        bias: host(r, &[e], -0.3, 0.3),
    }
}

fn gpu_layer(v: &Variant, t: &[Tensor], c: &Case) -> MoeFfn {
    let mut layer = MoeFfn::from_parts(v.kind, &v.cfg, t[1].clone(), t[2].clone(), t[3].clone(), upload(&c.defaults)).unwrap();
    if v.cfg.balance == Balance::Bias {
        layer.selection_bias = upload(&c.bias);
    }
    if v.shared > 0 {
        layer.shared = Some(DenseFfn { w_in: t[4].clone(), w_out: t[5].clone(), activation: FfnActivation::Gelu });
    }
    layer
}

/// `gelu(x W_in) W_out` for one row.
fn mlp(x: &[f64], w_in: &[f64], w_out: &[f64], hidden: usize) -> Vec<f64> {
    let d = x.len();
    let h: Vec<f64> = (0..hidden).map(|c| UnaryOp::Gelu.reference_scalar((0..d).map(|i| x[i] * w_in[i * hidden + c]).sum())).collect();
    (0..d).map(|o| (0..hidden).map(|c| h[c] * w_out[c * d + o]).sum()).collect()
}

/// The routing of the textbook layer: scores `[T, E]`, chosen experts, their gate weights
/// with dropped slots at 0, and which slots were kept.
struct Routed {
    scores: Vec<f64>,
    indices: Vec<u32>,
    weights: Vec<f64>,
    keep: Vec<f64>,
}

fn route_cpu(h: &[HostTensor], v: &Variant, c: &Case) -> Routed {
    let (tokens, e, k) = (h[0].shape[0], v.cfg.experts, v.cfg.top_k);
    let logits = moegrad::ops::matmul::matmul_reference(&h[0], &h[1], false, false);
    let bias = (v.cfg.balance == Balance::Bias).then_some(c.bias.data.as_slice());
    let (scores, weights, indices) = route_scored_reference(&logits, k, v.score(), v.renormalize(), bias);
    let keep = match v.cfg.capacity_factor {
        Some(f) => capacity_keep_reference(&scores.data, &indices, e, k, (f as f64 * (tokens * k) as f64 / e as f64).ceil() as usize),
        None => vec![1.0; tokens * k],
    };
    let weights = weights.data.iter().zip(&keep).map(|(w, k)| w * k).collect();
    Routed { scores: scores.data, indices, weights, keep }
}

/// Expert `e`'s output on token `t`.
fn expert(h: &[HostTensor], e: usize, t: usize) -> Vec<f64> {
    let (d, f) = (h[0].shape[1], h[2].shape[2]);
    mlp(&h[0].data[t * d..(t + 1) * d], &h[2].data[e * d * f..(e + 1) * d * f], &h[3].data[e * f * d..(e + 1) * f * d], f)
}

/// The Default MoE's defaults for a pass at `h`: the stored ones, or for the batch-mean
/// estimator each expert's mean output over its routed slots (kept or not).
fn defaults_cpu(h: &[HostTensor], v: &Variant, c: &Case, routed: &Routed) -> Vec<f64> {
    let (d, e, k) = (h[0].shape[1], v.cfg.experts, v.cfg.top_k);
    let mut out = c.defaults.data.clone();
    if v.cfg.default_estimator == DefaultEstimator::BatchMean {
        for x in 0..e {
            let slots: Vec<usize> = (0..routed.indices.len()).filter(|&s| routed.indices[s] as usize == x).collect();
            if slots.is_empty() {
                continue;
            }
            let rows: Vec<Vec<f64>> = slots.iter().map(|&s| expert(h, x, s / k)).collect();
            (0..d).for_each(|o| out[x * d + o] = rows.iter().map(|r| r[o]).sum::<f64>() / rows.len() as f64);
        }
    }
    out
}

/// The textbook layer at `h`, with what autodiff treats as constant taken at `base` (the
/// unperturbed inputs): the Default MoE's defaults, and DenseMixer's gate values, so that
/// central differences of this function give the estimators' gradients exactly.
fn layer_cpu(h: &[HostTensor], v: &Variant, c: &Case, base: &[HostTensor]) -> HostTensor {
    let (tokens, d, e, k) = (h[0].shape[0], h[0].shape[1], v.cfg.experts, v.cfg.top_k);
    let routed = route_cpu(h, v, c);
    let at_base = route_cpu(base, v, c);
    let mut y = HostTensor::zeros(&[tokens, d]);
    for t in 0..tokens {
        let mut add = |scale: f64, row: &[f64]| (0..d).for_each(|o| y.data[t * d + o] += scale * row[o]);
        match v.kind {
            FfnKind::Densemixer => {
                // Gate stop(g) + s - stop(s): every expert's output reaches the router.
                for x in 0..e {
                    let chosen = (0..k).find(|&j| at_base.indices[t * k + j] as usize == x).map_or(0.0, |j| at_base.weights[t * k + j]);
                    add(chosen + routed.scores[t * e + x] - at_base.scores[t * e + x], &expert(h, x, t));
                }
            }
            _ => {
                for j in 0..k {
                    add(routed.weights[t * k + j], &expert(h, routed.indices[t * k + j] as usize, t));
                }
            }
        }
        if v.kind == FfnKind::Default {
            let defaults = defaults_cpu(base, v, c, &at_base);
            for x in 0..e {
                let kept = (0..k).any(|j| routed.indices[t * k + j] as usize == x && routed.keep[t * k + j] == 1.0);
                if !kept {
                    add(routed.scores[t * e + x], &defaults[x * d..(x + 1) * d]);
                }
            }
        }
        if v.shared > 0 {
            add(1.0, &mlp(&h[0].data[t * d..(t + 1) * d], &h[4].data, &h[5].data, v.shared));
        }
    }
    y
}

fn check_variant(v: &Variant, seed: u64, tokens: usize, d: usize) {
    let c = case(&mut rng(seed), v, tokens, d);
    let base = c.inputs.clone();
    check_op(&v.name(), &c.inputs, |t| gpu_layer(v, t, &c).forward(&t[0], false).0, |h| layer_cpu(h, v, &c, &base), TOL);
    // The dropped slots the layer reports.
    let tensors: Vec<Tensor> = c.inputs.iter().map(upload).collect();
    let (_, stats) = gpu_layer(v, &tensors, &c).forward(&tensors[0], true);
    let want = route_cpu(&c.inputs, v, &c).keep.iter().filter(|&&k| k == 0.0).count();
    match &stats.dropped {
        Some(dropped) => assert_eq!(dropped.item().unwrap(), want as f32, "{}: dropped slots", v.name()),
        None => assert!(v.cfg.capacity_factor.is_none(), "{}: a capacity factor must report dropped slots", v.name()),
    }
}

#[test]
fn every_routing_option_matches_a_cpu_moe_layer_in_outputs_and_gradients() {
    let (e, k, f) = (4, 2, 5);
    let variants = [
        Variant::new(FfnKind::Topk, e, k, f, |c| c.capacity_factor = Some(0.75)),
        Variant::new(FfnKind::Topk, e, k, f, |c| (c.score, c.balance) = (RouterScore::Sigmoid, Balance::Bias)),
        Variant { shared: 6, ..Variant::new(FfnKind::Topk, e, k, f, |c| c.renormalize = true) },
        Variant::new(FfnKind::Default, e, k, f, |c| (c.capacity_factor, c.default_estimator) = (Some(0.75), DefaultEstimator::BatchMean)),
        Variant::new(FfnKind::Default, e, k, f, |c| c.balance = Balance::Bias),
        Variant::new(FfnKind::Densemixer, e, k, f, |_| {}),
        Variant::new(FfnKind::Densemixer, e, k, f, |c| (c.score, c.capacity_factor) = (RouterScore::Sigmoid, Some(1.0))),
    ];
    for (i, v) in variants.iter().enumerate() {
        check_variant(v, 200 + i as u64, 13, 6);
    }
}

#[test]
fn fine_grained_experts_e256_k8_match_a_cpu_moe_layer() {
    for kind in [FfnKind::Topk, FfnKind::Default] {
        let v = Variant { shared: 3, ..Variant::new(kind, 256, 8, 3, |c| c.capacity_factor = Some(4.0)) };
        check_variant(&v, 210, 37, 4);
    }
}

#[test]
fn densemixer_router_gradient_sums_over_every_expert_and_its_forward_is_topk() {
    // dL/dp_e = <g, E_e(x)> for every expert e, chosen or not; TopK's is 0 for the others.
    let v = Variant::new(FfnKind::Densemixer, 4, 2, 5, |_| {});
    let c = case(&mut rng(211), &v, 9, 6);
    let g = host(&mut rng(212), &[9, 6], -1.0, 1.0);
    let run = |kind| {
        let tensors: Vec<Tensor> = c.inputs.iter().map(|t| upload(t).requires_grad()).collect();
        let y = gpu_layer(&Variant { kind, ..v.clone() }, &tensors, &c).forward(&tensors[0], false).0;
        y.backward_with(&upload(&g));
        (y.to_vec().unwrap(), tensors[1].grad().unwrap().to_vec().unwrap())
    };
    let ((y_mixer, g_mixer), (y_topk, _)) = (run(FfnKind::Densemixer), run(FfnKind::Topk));
    assert_eq!(y_mixer.len(), y_topk.len());
    assert_close("DenseMixer forward equals TopK's", &y_mixer, &y_topk.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5);
    let routed = route_cpu(&c.inputs, &v, &c);
    let (tokens, e) = (9, 4);
    let mut dlogits = HostTensor::zeros(&[tokens, e]);
    for t in 0..tokens {
        let dp: Vec<f64> = (0..e).map(|x| expert(&c.inputs, x, t).iter().zip(&g.data[t * 6..(t + 1) * 6]).map(|(a, b)| a * b).sum()).collect();
        let p = &routed.scores[t * e..(t + 1) * e];
        let mean: f64 = (0..e).map(|x| p[x] * dp[x]).sum();
        (0..e).for_each(|x| dlogits.data[t * e + x] = p[x] * (dp[x] - mean));
    }
    let want = moegrad::ops::matmul::matmul_reference(&c.inputs[0], &dlogits, true, false);
    assert_close("DenseMixer router gradient", &g_mixer, &want.data, 1e-4);
}

/// Expert outputs in expert order (stable by slot), their offsets and their slots.
fn expert_rows(h: &[HostTensor], indices: &[u32], e: usize, k: usize) -> (HostTensor, Vec<u32>, Vec<usize>) {
    let d = h[0].shape[1];
    let mut order: Vec<usize> = (0..indices.len()).collect();
    order.sort_by_key(|&s| indices[s]);
    let rows = HostTensor::new(&[indices.len(), d], order.iter().flat_map(|&s| expert(h, indices[s] as usize, s / k)).collect());
    let mut offsets = vec![0u32; e + 1];
    for x in 0..e {
        offsets[x + 1] = offsets[x] + indices.iter().filter(|&&i| i as usize == x).count() as u32;
    }
    (rows, offsets, order)
}

#[test]
fn each_default_estimator_moves_the_defaults_as_its_cpu_rule() {
    for estimator in [DefaultEstimator::Ema, DefaultEstimator::BatchMean, DefaultEstimator::ProbWeightedEma] {
        let v = Variant::new(FfnKind::Default, 4, 2, 5, |c| (c.default_estimator, c.beta) = (estimator, 0.8));
        let c = case(&mut rng(213), &v, 15, 6);
        let tensors: Vec<Tensor> = c.inputs.iter().map(upload).collect();
        let mut layer = gpu_layer(&v, &tensors, &c);
        let (_, stats) = layer.forward(&tensors[0], true);
        layer.apply(&stats);
        let routed = route_cpu(&c.inputs, &v, &c);
        let (rows, offsets, order) = expert_rows(&c.inputs, &routed.indices, 4, 2);
        let row_weights: Vec<f64> = match estimator {
            DefaultEstimator::ProbWeightedEma => order.iter().map(|&s| routed.weights[s]).collect(),
            _ => vec![1.0; order.len()],
        };
        let beta = if estimator == DefaultEstimator::BatchMean { 0.0 } else { 0.8 };
        let want = expert_output_ema_reference(&c.defaults, &expert_output_sums_weighted_reference(&rows, &offsets, &row_weights), beta);
        assert_close(&format!("{estimator:?} defaults after a step"), &layer.defaults.to_vec().unwrap(), &want.data, 1e-5);
    }
}

#[test]
fn selection_bias_moves_by_the_sign_of_the_load_gap_and_only_with_bias_balancing() {
    // The kernel on random loads (one exactly at the mean, which leaves its bias).
    let mut r = rng(214);
    for experts in [1, 3, 8, 64, 256] {
        let bias = host(&mut r, &[experts], -1.0, 1.0);
        let mut load: Vec<f32> = (0..experts).map(|_| r.random_range(0.0..1.0)).collect();
        let total: f32 = load.iter().sum();
        load.iter_mut().for_each(|l| *l /= total);
        if experts == 8 {
            // Loads of 1/8 each but two: the mean is exactly 1/8.
            load = vec![0.125, 0.125, 0.25, 0.0, 0.125, 0.125, 0.125, 0.125];
        }
        let got = bias_balance_update(&upload(&bias), &Tensor::from_slice(&crate::common::device(), &load, &[experts]).unwrap(), 0.01).to_vec().unwrap();
        let want = bias_balance_update_reference(&bias.data, &load.iter().map(|&l| l as f64).collect::<Vec<_>>(), 0.01);
        assert_close(&format!("bias update, {experts} experts"), &got, &want, 1e-6);
    }
    // A layer's step: its loads move its bias; aux balancing leaves the bias alone.
    for balance in [Balance::Bias, Balance::Aux] {
        let v = Variant::new(FfnKind::Topk, 4, 1, 5, |c| (c.balance, c.bias_rate) = (balance, 0.05));
        let c = case(&mut rng(215), &v, 21, 6);
        let tensors: Vec<Tensor> = c.inputs.iter().map(upload).collect();
        let mut layer = gpu_layer(&v, &tensors, &c);
        let before = layer.selection_bias.to_vec().unwrap();
        let (_, stats) = layer.forward(&tensors[0], true);
        let load: Vec<f64> = stats.load.to_vec().unwrap().into_iter().map(f64::from).collect();
        let routed = route_cpu(&c.inputs, &v, &c);
        let want_load: Vec<f64> = (0..4).map(|x| routed.indices.iter().filter(|&&i| i == x).count() as f64 / 21.0).collect();
        assert_close("layer loads", &stats.load.to_vec().unwrap(), &want_load, 1e-6);
        layer.apply(&stats);
        let after = layer.selection_bias.to_vec().unwrap();
        let want = match balance {
            Balance::Bias => bias_balance_update_reference(&before.iter().map(|&b| b as f64).collect::<Vec<_>>(), &load, 0.05),
            _ => before.iter().map(|&b| b as f64).collect(),
        };
        assert_close(&format!("{balance:?}: bias after a step"), &after, &want, 1e-6);
    }
}

#[test]
fn capacity_keeps_the_highest_scores_per_expert_ties_to_the_earlier_token() {
    let mut r = rng(216);
    let dev = crate::common::device();
    for (tokens, experts, k, capacity) in [(1, 1, 1, 0), (13, 4, 2, 5), (300, 8, 2, 40), (70, 256, 8, 3), (41, 5, 3, 100), (600, 3, 1, 150)] {
        let ids = crate::common::random_choices(&mut r, tokens, k, experts);
        // Scores from a few values, so that ties are common.
        let scores: Vec<f32> = (0..tokens * experts).map(|_| r.random_range(0..6) as f32 / 8.0).collect();
        let indices = Tensor::from_u32(&dev, &ids, &[tokens, k]).unwrap();
        let probs = Tensor::from_slice(&dev, &scores, &[tokens, experts]).unwrap();
        let keep = capacity_keep(&probs, &indices, &plan_routing(&indices, experts), capacity).to_vec().unwrap();
        let want = capacity_keep_reference(&scores.iter().map(|&s| s as f64).collect::<Vec<_>>(), &ids, experts, k, capacity);
        assert_close(&format!("capacity {capacity} of [{tokens}, {experts}] k {k}"), &keep, &want, 0.0);
    }
}

#[test]
fn weighted_expert_sums_match_reference() {
    let mut r = rng(217);
    let dev = crate::common::device();
    for (tokens, experts, k, d) in [(9, 3, 2, 5), (64, 16, 4, 7), (5, 256, 8, 3)] {
        let ids: Vec<u32> = (0..tokens).flat_map(|t| (0..k).map(move |j| ((t * 7 + j * 13) % experts) as u32)).collect();
        let indices = Tensor::from_u32(&dev, &ids, &[tokens, k]).unwrap();
        let plan = plan_routing(&indices, experts);
        let rows = host(&mut r, &[tokens * k, d], -1.0, 1.0);
        let weights = host(&mut r, &[tokens, k], 0.0, 1.0);
        let got = expert_output_sums_weighted(&upload(&rows), &plan, &upload(&weights)).to_vec().unwrap();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&s| ids[s]);
        let mut offsets = vec![0u32; experts + 1];
        (0..experts).for_each(|x| offsets[x + 1] = offsets[x] + ids.iter().filter(|&&i| i as usize == x).count() as u32);
        let row_weights: Vec<f64> = order.iter().map(|&s| weights.data[s]).collect();
        let want = expert_output_sums_weighted_reference(&rows, &offsets, &row_weights);
        assert_close(&format!("weighted sums [{tokens}, {experts}] k {k}"), &got, &want.data, 1e-5);
    }
}

/// The README's MoE comparison, as its command runs it: TopK, the Default MoE with each
/// estimator, DenseMixer and the sigmoid router with loss-free balancing, three seeds each.
#[test]
fn compare_over_topk_the_dense_gradient_family_and_sigmoid_bias_trains_every_variant() {
    use moegrad::research::compare::{compare, table, CompareOptions, Variant};
    let out = crate::common::scratch("compare-moe");
    let config = moegrad::train::config::RunConfig::load(Some(std::path::Path::new("configs/compare-moe.toml")), &[]).unwrap();
    let specs = [
        "topk",
        "default",
        "densemixer",
        "default:model.moe.default_estimator=batch_mean",
        "default:model.moe.default_estimator=prob_weighted_ema",
        "sigmoid-bias:model.ffn=\"topk\",model.moe.score=\"sigmoid\",model.moe.balance=\"bias\"",
    ];
    let variants: Vec<Variant> = specs.iter().map(|s| s.parse().unwrap()).collect();
    let rows = compare(
        &crate::common::device(),
        &CompareOptions { config, variants, seeds: 3, out: out.clone(), quiet: true, force: false, interrupt: Default::default() },
    )
    .unwrap();
    assert_eq!(rows.len(), specs.len());
    for r in &rows {
        assert_eq!(r.final_eval.len(), 3, "{}: three seeds", r.variant.label);
        // Sixty steps take every variant well below the untrained loss (ln 256 = 5.5).
        assert!(r.mean() < 4.0, "{}: eval loss {}", r.variant.label, r.mean());
        assert!(r.std() > 0.0, "{}: seeds must differ", r.variant.label);
        assert!(r.mean_tokens_per_s() > 0.0);
        assert!(r.moe_share.is_some_and(|s| s > 0.0 && s.is_finite()), "{}: MoE share {:?}", r.variant.label, r.moe_share);
        assert!(out.join(format!("{}-seed0-load.png", r.variant.label.replace([':', '=', '"', ',', '.'], "-"))).exists(), "{}: load heatmap", r.variant.label);
    }
    let text = table(&rows);
    assert!(text.contains("default:default_estimator=batch_mean") && text.contains("sigmoid-bias"), "{text}");
    // The sigmoid-bias runs moved their biases and logged them; the others have none.
    let last = |run: &str| std::fs::read_to_string(out.join(run).join("metrics.jsonl")).unwrap().lines().last().unwrap().to_string();
    let sigmoid: serde_json::Value = serde_json::from_str(&last("sigmoid-bias-seed0")).unwrap();
    let bias = sigmoid["moe"][0]["bias"].as_array().expect("a logged selection bias");
    assert!(bias.iter().any(|b| b.as_f64().unwrap() != 0.0), "the bias moved: {bias:?}");
    assert!(serde_json::from_str::<serde_json::Value>(&last("topk-seed0")).unwrap()["moe"][0].get("bias").is_none());
    for f in ["compare.png", "compare.svg", "compare.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
}

/// The options the comparison leaves out train too: a capacity factor (its drops logged),
/// shared experts, fine-grained experts (E = 256, k = 8), grad accumulation with bias
/// balancing; each run's checkpoint holds what the option keeps as state.
#[test]
fn capacity_shared_and_fine_grained_experts_train_and_log_their_metrics() {
    use moegrad::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
    use moegrad::train::run_folder::Start;
    let dir = crate::common::scratch("moe-options-train");
    let base = ["train.steps=3", "train.log_every=1", "model.ffn=\"topk\"", "model.moe.experts=4", "model.moe.top_k=2"];
    for (name, extra) in [
        ("capacity", &["model.moe.capacity_factor=0.5"][..]),
        ("shared", &["model.moe.shared_experts=2", "model.moe.shared_hidden=8"][..]),
        ("fine", &["model.moe.experts=256", "model.moe.top_k=8", "model.moe.expert_hidden=4"][..]),
        ("bias-accum", &["model.moe.balance=\"bias\"", "model.moe.bias_rate=0.01", "train.grad_accum=2", "model.ffn=\"default\""][..]),
    ] {
        let sets: Vec<&str> = base.iter().chain(extra).copied().collect();
        let config = crate::common::config_from_sets(&crate::common::TINY_DEFAULT_MOE, &sets);
        let summary = crate::common::train_quietly(config, &dir.join(name), Start::Fresh, None).unwrap();
        assert!(summary.final_eval_loss.is_finite(), "{name}");
        let text = std::fs::read_to_string(dir.join(name).join("metrics.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        let layer = &line["moe"][0];
        let load: Vec<f64> = layer["load"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!((load.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{name}: loads are shares of the slots: {load:?}");
        assert!(layer["load_cv"].as_f64().unwrap() >= 0.0 && layer["max_violation"].as_f64().unwrap() >= 0.0, "{name}: {layer}");
        let ckpt = Checkpoint::load(&dir.join(name).join(CHECKPOINT_FILE)).unwrap();
        match name {
            // 4 x 16 tokens, 128 slots a step into 4 experts with room for 16 each: at
            // least half are dropped.
            "capacity" => assert!(layer["dropped"].as_u64().unwrap() >= 64, "{layer}"),
            "shared" => assert_eq!(ckpt.get("param.blocks.0.ffn.shared.w_in", &[16, 16]).unwrap().len(), 256),
            "fine" => assert_eq!(load.len(), 256),
            _ => {
                let bias = ckpt.get("state.blocks.0.ffn.selection_bias", &[4]).unwrap();
                assert!(bias.iter().any(|&b| b != 0.0), "the bias is saved as it moved: {bias:?}");
                assert_eq!(layer["bias"].as_array().unwrap().len(), 4);
            }
        }
    }
}

#[test]
fn the_router_computes_in_f32_under_f16_matmuls() {
    // The routing statistics come from the router's logits alone: under f16 matmuls they
    // must be the f32 run's to the bit, whatever the experts' products do.
    let v = Variant::new(FfnKind::Topk, 8, 2, 5, |c| c.score = RouterScore::Sigmoid);
    let c = case(&mut rng(218), &v, 29, 8);
    let tensors: Vec<Tensor> = c.inputs.iter().map(upload).collect();
    let layer = gpu_layer(&v, &tensors, &c);
    let dev = crate::common::device();
    let stats = |precision| {
        dev.with_policy(
            |p| p.precision = precision,
            || {
                let (_, s) = layer.forward(&tensors[0], false);
                (s.entropy.item().unwrap(), s.load.to_vec().unwrap(), s.prob_sums.to_vec().unwrap())
            },
        )
    };
    assert_eq!(stats(moegrad::ops::Precision::F16), stats(moegrad::ops::Precision::F32));
}
