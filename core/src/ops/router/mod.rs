//! The fused MoE router: logits -> scores (softmax probabilities, or DeepSeek-V3's
//! sigmoids) -> top-k experts, chosen by score plus an optional per-expert selection bias
//! (auxiliary-loss-free balancing), and their weights (optionally renormalised over the
//! chosen k), in one kernel (`router.wgsl`). The full probabilities come back too: the Default MoE and the
//! load-balancing loss need them. `route_with_stats` also returns each token's
//! log-normaliser (for the z-loss) and entropy from the same pass, which would otherwise
//! take a dozen small kernels a layer. Backward goes through the softmax
//! (`router_backward.wgsl`).

use crate::{grid, record_multi, render_template, DType, Device, Tensor};

use crate::ops::common::{each_kept, floats_per_load, with_ranking, with_row_chunks, LANE_GROUPS_SUBGROUP};
use crate::ops::host::HostTensor;
use crate::ops::topk::{topk_reference, MAX_K, MAX_ROW};

const SHADER: &str = include_str!("router.wgsl");
const EXCHANGE_SUBGROUP: &str = include_str!("router_exchange_subgroup.wgsl");
const EXCHANGE_WORKGROUP: &str = include_str!("router_exchange_workgroup.wgsl");
/// Threads per token in the forward kernel, and its workgroup size: the fastest of those
/// timed on an H100 (the README's Performance section lists the others).
const LANES: usize = 8;
const ROUTER_WG: usize = 128;
const BACKWARD_SHADER: &str = include_str!("router_backward.wgsl");

/// How a router turns each token's logits into expert scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Score {
    /// Probabilities summing to 1 over the experts (Switch, Mixtral).
    #[default]
    Softmax,
    /// Each expert's own sigmoid, independent of the others (DeepSeek-V3); weights are
    /// then usually renormalised over the chosen k.
    Sigmoid,
}

/// What `route_scored` computes.
#[derive(Clone, Copy)]
pub struct RouterOptions<'a> {
    /// Experts per token, 1..=8.
    pub k: usize,
    pub score: Score,
    /// Weights = the chosen scores divided by their sum.
    pub renormalize: bool,
    /// `[E]` (f32) added to the scores to choose the experts, not to their weights:
    /// DeepSeek-V3's auxiliary-loss-free balancing. Not differentiated.
    pub selection_bias: Option<&'a Tensor>,
}

impl RouterOptions<'_> {
    /// Softmax scores, no bias.
    pub fn softmax(k: usize, renormalize: bool) -> RouterOptions<'static> {
        RouterOptions { k, score: Score::Softmax, renormalize, selection_bias: None }
    }
}

/// The router's outputs for `T` tokens and `E` experts.
pub struct RouterOutput {
    /// `[T, E]` the scores: softmax of the logits, or their sigmoids.
    pub probs: Tensor,
    /// `[T, k]` gate weight of each chosen expert.
    pub weights: Tensor,
    /// `[T, k]` chosen experts (u32), most probable first.
    pub indices: Tensor,
}

/// Per-token statistics of the router (`route_with_stats`).
pub struct RouterStats {
    /// `[T]` log-sum-exp of the logits, on the tape (its gradient is their softmax): the
    /// router z-loss is its mean square, whatever the score.
    pub log_normalizer: Tensor,
    /// `[T]` entropy in nats of the scores (sigmoid scores normalised to sum to 1); a
    /// diagnostic, off the tape.
    pub entropy: Tensor,
}

fn flag(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Softmax routing of `logits` `[T, E]` to the top `k` experts.
pub fn route(logits: &Tensor, k: usize, renormalize: bool) -> RouterOutput {
    route_and_measure(logits, &RouterOptions::softmax(k, renormalize), false).0
}

/// `route`, with each token's log-normaliser and entropy computed in the same kernel.
pub fn route_with_stats(logits: &Tensor, k: usize, renormalize: bool) -> (RouterOutput, RouterStats) {
    route_scored(logits, &RouterOptions::softmax(k, renormalize))
}

/// Routing with any score and selection bias, with the statistics.
pub fn route_scored(logits: &Tensor, options: &RouterOptions) -> (RouterOutput, RouterStats) {
    let (out, stats) = route_and_measure(logits, options, true);
    (out, stats.expect("the router kernel writes statistics when asked"))
}

fn route_and_measure(logits: &Tensor, options: &RouterOptions, stats: bool) -> (RouterOutput, Option<RouterStats>) {
    assert!(logits.rank() == 2, "router: logits must be [tokens, experts], got {:?}", logits.shape());
    assert_eq!(logits.dtype(), DType::F32, "router: logits must be f32, got {:?}", logits.dtype());
    let (tokens, experts) = (logits.shape()[0], logits.shape()[1]);
    let (k, renormalize, sigmoid) = (options.k, options.renormalize, options.score == Score::Sigmoid);
    assert!((1..=MAX_K).contains(&k) && k <= experts, "router: k = {k} must be in 1..={} for {experts} experts", MAX_K.min(experts));
    assert!(experts <= MAX_ROW, "router: at most {MAX_ROW} experts, got {experts}");
    if let Some(bias) = options.selection_bias {
        assert!(
            bias.shape() == [experts] && bias.dtype() == DType::F32,
            "router: the selection bias must be f32 [{experts}], got {:?} {:?}",
            bias.dtype(),
            bias.shape()
        );
    }
    let dev = logits.device();
    let (probs, weights, indices, stats) = launch_router(logits, options, use_subgroup_exchange(dev), stats);
    let params = [tokens, experts, k].map(|v| v as u32);
    let (sp, sw, si, saved_logits) = (probs.clone(), weights.clone(), indices.clone(), logits.clone());
    let mut outputs = vec![&probs, &weights];
    outputs.extend(stats.as_ref().map(|s| &s.log_normalizer));
    record_multi("router", &outputs, &[logits], move |grads| {
        let dev = sp.device();
        let zeros_like = |t: &Tensor| Tensor::output_zeros(dev, t.shape(), DType::F32, "router backward");
        let g_probs = grads[0].clone().unwrap_or_else(|| zeros_like(&sp));
        let g_weights = grads[1].clone().unwrap_or_else(|| zeros_like(&sw));
        let g_log_normalizer = grads.get(2).cloned().flatten();
        let dlogits = Tensor::output(dev, sp.shape(), DType::F32, "router backward");
        if tokens > 0 {
            let lse_grad = g_log_normalizer.is_some();
            let key = format!("router_backward/{renormalize}/sigmoid{sigmoid}/lse_grad{lse_grad}");
            // Sigmoid scores recompute the softmax of the logits for the log-normaliser.
            let lse_code = match (lse_grad, sigmoid) {
                (true, true) => {
                    "@group(0) @binding(7) var<storage, read> g_lse: array<f32>;\n\
                     @group(0) @binding(8) var<storage, read> logits: array<f32>;\n\
                     fn lse_grad(t: u32) -> f32 { return g_lse[t]; }\n\
                     fn logit(i: u32) -> f32 { return logits[i]; }"
                }
                (true, false) => {
                    "@group(0) @binding(7) var<storage, read> g_lse: array<f32>;\n\
                     fn lse_grad(t: u32) -> f32 { return g_lse[t]; }\n\
                     fn logit(i: u32) -> f32 { return 0.0; }"
                }
                (false, _) => "fn lse_grad(t: u32) -> f32 { return 0.0; }\nfn logit(i: u32) -> f32 { return 0.0; }",
            };
            let values = [("RENORMALIZE", flag(renormalize)), ("SIGMOID", flag(sigmoid)), ("LSE_GRAD", lse_code)];
            let pipeline = dev.pipeline(&key, "main", || render_template(BACKWARD_SHADER, &values));
            let mut buffers = vec![&sp, &sw, &si, &g_probs, &g_weights, &dlogits];
            buffers.extend(g_log_normalizer.as_ref());
            if lse_grad && sigmoid {
                buffers.push(&saved_logits);
            }
            dev.launch(&pipeline, &params, &buffers, grid(tokens.div_ceil(64)));
        }
        vec![Some(dlogits)]
    });
    (RouterOutput { probs, weights, indices }, stats)
}

/// How the router's lanes exchange partials on `dev`, in words (for benchmark reports).
pub fn router_exchange(dev: &Device) -> &'static str {
    if use_subgroup_exchange(dev) {
        "subgroup shuffles"
    } else {
        "workgroup memory"
    }
}

/// The forward kernel on `[tokens, experts]` logits, its lanes exchanging through
/// subgroup shuffles or workgroup memory: (probs, weights, indices, and the statistics
/// when `stats`), off the tape.
fn launch_router(logits: &Tensor, options: &RouterOptions, shuffles: bool, stats: bool) -> (Tensor, Tensor, Tensor, Option<RouterStats>) {
    let (tokens, experts) = (logits.shape()[0], logits.shape()[1]);
    let (k, renormalize, sigmoid, bias) = (options.k, options.renormalize, options.score == Score::Sigmoid, options.selection_bias);
    let dev = logits.device();
    let alloc = |shape: &[usize], dtype| Tensor::output(dev, shape, dtype, "router");
    let probs = alloc(&[tokens, experts], DType::F32);
    let weights = alloc(&[tokens, k], DType::F32);
    let indices = alloc(&[tokens, k], DType::U32);
    let stats = stats.then(|| RouterStats { log_normalizer: alloc(&[tokens], DType::F32), entropy: alloc(&[tokens], DType::F32) });
    if tokens > 0 {
        let exchange = if shuffles { "subgroup" } else { "workgroup" };
        let vec = floats_per_load(experts);
        let key = format!("router/{renormalize}/{experts}/{k}/{exchange}/vec{vec}/stats{}/sigmoid{sigmoid}/bias{}", stats.is_some(), bias.is_some());
        let bias_code = if bias.is_some() {
            "@group(0) @binding(7) var<storage, read> selection_bias: array<f32>;\n\
             fn bias_of(e: u32) -> f32 { return selection_bias[e]; }"
        } else {
            "fn bias_of(e: u32) -> f32 { return 0.0; }"
        };
        let stats_code = if stats.is_some() {
            "@group(0) @binding(5) var<storage, read_write> log_normalizer: array<f32>;\n\
             @group(0) @binding(6) var<storage, read_write> entropy: array<f32>;\n\
             fn write_stats(t: u32, lse: f32, h: f32) { log_normalizer[t] = lse; entropy[t] = h; }"
        } else {
            "fn write_stats(t: u32, lse: f32, h: f32) {}"
        };
        // Each lane keeps every LANES-th load of its token's row.
        let per_lane = (experts / vec).div_ceil(LANES);
        let source = || {
            let (experts, k, lanes, wg) = (experts.to_string(), k.to_string(), LANES.to_string(), ROUTER_WG.to_string());
            let exchange = if shuffles { format!("{LANE_GROUPS_SUBGROUP}\n{EXCHANGE_SUBGROUP}") } else { EXCHANGE_WORKGROUP.to_string() };
            let values = [
                ("RENORMALIZE", flag(renormalize)),
                ("STATS", flag(stats.is_some())),
                ("STATS_OUTPUT", stats_code),
                ("SIGMOID", flag(sigmoid)),
                ("BIASED", flag(bias.is_some())),
                ("SELECTION_BIAS", bias_code),
                ("EXPERTS", &experts),
                ("K", &k),
                ("LANES", &lanes),
                ("WG", &wg),
                ("EXCHANGE", &exchange),
            ];
            with_row_chunks(with_ranking(render_template(&each_kept(SHADER, per_lane), &values)), vec)
        };
        // SAFETY: logits, probs, weights, indices and the statistics are indexed only for
        // live tokens (t < tokens), loads below E / vec and choices below K; the selection
        // bias only by candidates' experts (below E, or NONE never looked up); the workgroup
        // arrays by lane below their constant sizes; every loop has a constant bound.
        let pipeline = unsafe { dev.pipeline_unchecked(&key, "main", source) };
        let params = [tokens, experts, k].map(|v| v as u32);
        let mut buffers = vec![(1, logits), (2, &probs), (3, &weights), (4, &indices)];
        buffers.extend(stats.iter().flat_map(|s| [(5, &s.log_normalizer), (6, &s.entropy)]));
        buffers.extend(bias.map(|b| (7, b)));
        dev.launch_bound(&pipeline, &params, &buffers, grid(tokens.div_ceil(ROUTER_WG / LANES)));
    }
    (probs, weights, indices, stats)
}

/// Whether a token's lanes exchange through subgroup shuffles: the adapter has subgroups
/// of at least LANES that tile the workgroup, and the shuffle kernel routes a test batch
/// as the portable one does (checked once per device: an adapter whose subgroups do not
/// behave falls back, with a warning).
fn use_subgroup_exchange(dev: &Device) -> bool {
    let Some((smallest, largest)) = dev.subgroup_sizes() else {
        return false;
    };
    if smallest < LANES as u32 || !(ROUTER_WG as u32).is_multiple_of(largest) {
        return false;
    }
    dev.verified("router/subgroup-exchange", || {
        let (tokens, experts, k) = (100, 24, 3);
        let values: Vec<f32> = (0..tokens * experts).map(|i| ((i * 7919 % 2003) as f32 / 500.0) - 2.0).collect();
        let logits = Tensor::from_slice(dev, &values, &[tokens, experts]).expect("router self-check upload");
        let run = |shuffles| {
            let (probs, _, indices, _) = launch_router(&logits, &RouterOptions::softmax(k, true), shuffles, false);
            (indices.to_vec_u32().expect("router self-check"), probs.to_vec().expect("router self-check"))
        };
        let ((indices, probs), (portable_indices, portable_probs)) = (run(true), run(false));
        let worst = probs.iter().zip(&portable_probs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let ok = indices == portable_indices && worst <= 1e-6;
        if !ok {
            eprintln!(
                "moegrad: {}'s subgroup shuffles route differently from workgroup memory (probabilities within {worst}); using workgroup memory",
                dev.name()
            );
        }
        ok
    })
}

/// CPU reference of softmax routing: (probs, weights, indices).
pub fn route_reference(logits: &HostTensor, k: usize, renormalize: bool) -> (HostTensor, HostTensor, Vec<u32>) {
    route_scored_reference(logits, k, Score::Softmax, renormalize, None)
}

/// CPU reference of `route_scored`: (scores, weights, indices), the experts chosen by
/// score plus `bias`, weighted by score.
pub fn route_scored_reference(logits: &HostTensor, k: usize, score: Score, renormalize: bool, bias: Option<&[f64]>) -> (HostTensor, HostTensor, Vec<u32>) {
    let e = logits.shape[1];
    let mut probs = logits.clone();
    for row in probs.data.chunks_mut(e) {
        match score {
            Score::Softmax => {
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
                row.iter_mut().for_each(|v| *v = (*v - m).exp() / s);
            }
            Score::Sigmoid => row.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        }
    }
    let mut keys = probs.clone();
    if let Some(bias) = bias {
        keys.data.iter_mut().enumerate().for_each(|(i, v)| *v += bias[i % e]);
    }
    let (_, indices) = topk_reference(&keys, k);
    let chosen = indices.iter().enumerate().map(|(slot, &x)| probs.data[(slot / k) * e + x as usize]).collect();
    let mut weights = HostTensor::new(&[logits.shape[0], k], chosen);
    if renormalize {
        for row in weights.data.chunks_mut(k) {
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
    }
    (probs, weights, indices)
}

/// CPU reference of the entropy of sigmoid scores normalised to sum to 1, `[T]`.
pub fn sigmoid_entropy_reference(logits: &HostTensor) -> HostTensor {
    let (tokens, e) = (logits.shape[0], logits.shape[1]);
    let entropy = logits
        .data
        .chunks(e)
        .map(|row| {
            let s: Vec<f64> = row.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
            let mass: f64 = s.iter().sum();
            -s.iter().filter(|&&v| v > 0.0).map(|v| v / mass * (v / mass).ln()).sum::<f64>()
        })
        .collect();
    HostTensor::new(&[tokens], entropy)
}

/// CPU reference of `route_with_stats`'s statistics: (log-normaliser `[T]`, entropy `[T]`).
pub fn router_stats_reference(logits: &HostTensor) -> (HostTensor, HostTensor) {
    let (tokens, e) = (logits.shape[0], logits.shape[1]);
    let (mut lse, mut entropy) = (Vec::with_capacity(tokens), Vec::with_capacity(tokens));
    for row in logits.data.chunks(e) {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_s = row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        lse.push(m + log_s);
        entropy.push(-row.iter().map(|v| v - m - log_s).filter(|log_p| log_p.is_finite()).map(|log_p| log_p.exp() * log_p).sum::<f64>());
    }
    (HostTensor::new(&[tokens], lse), HostTensor::new(&[tokens], entropy))
}
