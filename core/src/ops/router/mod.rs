//! The fused MoE router: logits -> softmax probabilities -> top-k experts and their
//! weights (optionally renormalised over the chosen k), in one kernel
//! (`router.wgsl`). The full probabilities come back too: the Default MoE and the
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

/// The router's outputs for `T` tokens and `E` experts.
pub struct RouterOutput {
    /// `[T, E]` softmax of the logits.
    pub probs: Tensor,
    /// `[T, k]` gate weight of each chosen expert.
    pub weights: Tensor,
    /// `[T, k]` chosen experts (u32), most probable first.
    pub indices: Tensor,
}

/// Per-token statistics of the router's softmax (`route_with_stats`).
pub struct RouterStats {
    /// `[T]` log-sum-exp of the logits, on the tape (its gradient is the probabilities):
    /// the router z-loss is its mean square.
    pub log_normalizer: Tensor,
    /// `[T]` entropy of the probabilities in nats; a diagnostic, off the tape.
    pub entropy: Tensor,
}

fn flag(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

pub fn route(logits: &Tensor, k: usize, renormalize: bool) -> RouterOutput {
    route_and_measure(logits, k, renormalize, false).0
}

/// `route`, with each token's log-normaliser and entropy computed in the same kernel.
pub fn route_with_stats(logits: &Tensor, k: usize, renormalize: bool) -> (RouterOutput, RouterStats) {
    let (out, stats) = route_and_measure(logits, k, renormalize, true);
    (out, stats.expect("the router kernel writes statistics when asked"))
}

fn route_and_measure(logits: &Tensor, k: usize, renormalize: bool, stats: bool) -> (RouterOutput, Option<RouterStats>) {
    assert!(logits.rank() == 2, "router: logits must be [tokens, experts], got {:?}", logits.shape());
    assert_eq!(logits.dtype(), DType::F32, "router: logits must be f32, got {:?}", logits.dtype());
    let (tokens, experts) = (logits.shape()[0], logits.shape()[1]);
    assert!((1..=MAX_K).contains(&k) && k <= experts, "router: k = {k} must be in 1..={} for {experts} experts", MAX_K.min(experts));
    assert!(experts <= MAX_ROW, "router: at most {MAX_ROW} experts, got {experts}");
    let dev = logits.device();
    let (probs, weights, indices, stats) = launch_router(logits, k, renormalize, use_subgroup_exchange(dev), stats);
    let params = [tokens, experts, k].map(|v| v as u32);
    let (sp, sw, si) = (probs.clone(), weights.clone(), indices.clone());
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
            let key = format!("router_backward/{renormalize}/lse_grad{lse_grad}");
            let lse_code = if lse_grad {
                "@group(0) @binding(7) var<storage, read> g_lse: array<f32>;\n\
                 fn lse_grad(t: u32) -> f32 { return g_lse[t]; }"
            } else {
                "fn lse_grad(t: u32) -> f32 { return 0.0; }"
            };
            let pipeline = dev.pipeline(&key, "main", || render_template(BACKWARD_SHADER, &[("RENORMALIZE", flag(renormalize)), ("LSE_GRAD", lse_code)]));
            let mut buffers = vec![&sp, &sw, &si, &g_probs, &g_weights, &dlogits];
            buffers.extend(g_log_normalizer.as_ref());
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
fn launch_router(logits: &Tensor, k: usize, renormalize: bool, shuffles: bool, stats: bool) -> (Tensor, Tensor, Tensor, Option<RouterStats>) {
    let (tokens, experts) = (logits.shape()[0], logits.shape()[1]);
    let dev = logits.device();
    let alloc = |shape: &[usize], dtype| Tensor::output(dev, shape, dtype, "router");
    let probs = alloc(&[tokens, experts], DType::F32);
    let weights = alloc(&[tokens, k], DType::F32);
    let indices = alloc(&[tokens, k], DType::U32);
    let stats = stats.then(|| RouterStats { log_normalizer: alloc(&[tokens], DType::F32), entropy: alloc(&[tokens], DType::F32) });
    if tokens > 0 {
        let exchange = if shuffles { "subgroup" } else { "workgroup" };
        let vec = floats_per_load(experts);
        let key = format!("router/{renormalize}/{experts}/{k}/{exchange}/vec{vec}/stats{}", stats.is_some());
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
                ("EXPERTS", &experts),
                ("K", &k),
                ("LANES", &lanes),
                ("WG", &wg),
                ("EXCHANGE", &exchange),
            ];
            with_row_chunks(with_ranking(render_template(&each_kept(SHADER, per_lane), &values)), vec)
        };
        // SAFETY: logits, probs, weights, indices and the statistics are indexed only for
        // live tokens (t < tokens), loads below E / vec and choices below K; the workgroup
        // arrays by lane below their constant sizes; every loop has a constant bound.
        let pipeline = unsafe { dev.pipeline_unchecked(&key, "main", source) };
        let params = [tokens, experts, k].map(|v| v as u32);
        let mut buffers = vec![logits, &probs, &weights, &indices];
        buffers.extend(stats.iter().flat_map(|s| [&s.log_normalizer, &s.entropy]));
        dev.launch(&pipeline, &params, &buffers, grid(tokens.div_ceil(ROUTER_WG / LANES)));
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
            let (probs, _, indices, _) = launch_router(&logits, k, true, shuffles, false);
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

/// CPU reference: (probs, weights, indices).
pub fn route_reference(logits: &HostTensor, k: usize, renormalize: bool) -> (HostTensor, HostTensor, Vec<u32>) {
    let e = logits.shape[1];
    let mut probs = logits.clone();
    for row in probs.data.chunks_mut(e) {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        row.iter_mut().for_each(|v| *v = (*v - m).exp() / s);
    }
    let (mut weights, indices) = topk_reference(&probs, k);
    if renormalize {
        for row in weights.data.chunks_mut(k) {
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
    }
    (probs, weights, indices)
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
