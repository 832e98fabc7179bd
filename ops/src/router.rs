//! The fused MoE router: logits -> softmax probabilities -> top-k experts and their
//! weights (optionally renormalised over the chosen k), in one kernel
//! (`shaders/router.wgsl`). The full probabilities come back too: the Default MoE and the
//! load-balancing loss need them. Backward goes through the softmax
//! (`shaders/router_backward.wgsl`).

use moegrad_engine::{grid, record_multi, render_template, DType, Tensor};

use crate::host::HostTensor;
use crate::topk::{topk_reference, MAX_K, MAX_ROW};
use crate::wgsl_library::with_ranking;

const SHADER: &str = include_str!("../../shaders/router.wgsl");
/// Threads per token in the forward kernel, and its workgroup size. On an H100 (65536
/// tokens, 64 experts) 8 lanes took 68 us, 4 took 98 and one thread per token 137; 64-
/// and 128-thread workgroups 67 us, 256 threads 68.
const LANES: usize = 8;
const ROUTER_WG: usize = 128;
const BACKWARD_SHADER: &str = include_str!("../../shaders/router_backward.wgsl");

/// The router's outputs for `T` tokens and `E` experts.
pub struct RouterOutput {
    /// `[T, E]` softmax of the logits.
    pub probs: Tensor,
    /// `[T, k]` gate weight of each chosen expert.
    pub weights: Tensor,
    /// `[T, k]` chosen experts (u32), most probable first.
    pub indices: Tensor,
}

fn flag(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

pub fn route(logits: &Tensor, k: usize, renormalize: bool) -> RouterOutput {
    assert!(logits.rank() == 2, "router: logits must be [tokens, experts], got {:?}", logits.shape());
    assert_eq!(logits.dtype(), DType::F32, "router: logits must be f32, got {:?}", logits.dtype());
    let (tokens, experts) = (logits.shape()[0], logits.shape()[1]);
    assert!((1..=MAX_K).contains(&k) && k <= experts, "router: k = {k} must be in 1..={} for {experts} experts", MAX_K.min(experts));
    assert!(experts <= MAX_ROW, "router: at most {MAX_ROW} experts, got {experts}");
    let dev = logits.device();
    let alloc = |shape: &[usize], dtype| Tensor::empty(dev, shape, dtype).unwrap_or_else(|e| panic!("router: {e}"));
    let probs = alloc(&[tokens, experts], DType::F32);
    let weights = alloc(&[tokens, k], DType::F32);
    let indices = alloc(&[tokens, k], DType::U32);
    let params = [tokens, experts, k].map(|v| v as u32);
    if tokens > 0 {
        let pipeline = dev.pipeline(&format!("router/{renormalize}/{experts}"), "main", || {
            let values = [("RENORMALIZE", flag(renormalize)), ("EXPERTS", &experts.to_string()), ("LANES", &LANES.to_string()), ("WG", &ROUTER_WG.to_string())];
            with_ranking(render_template(SHADER, &values))
        });
        dev.launch(&pipeline, &params, &[logits, &probs, &weights, &indices], grid(tokens.div_ceil(ROUTER_WG / LANES)));
    }
    let (sp, sw, si) = (probs.clone(), weights.clone(), indices.clone());
    record_multi("router", &[&probs, &weights], &[logits], move |grads| {
        let dev = sp.device();
        let zeros_like = |t: &Tensor| Tensor::zeros(dev, t.shape()).unwrap_or_else(|e| panic!("router backward: {e}"));
        let g_probs = grads[0].clone().unwrap_or_else(|| zeros_like(&sp));
        let g_weights = grads[1].clone().unwrap_or_else(|| zeros_like(&sw));
        let dlogits = Tensor::empty(dev, sp.shape(), DType::F32).unwrap_or_else(|e| panic!("router backward: {e}"));
        if tokens > 0 {
            let key = format!("router_backward/{renormalize}");
            let pipeline = dev.pipeline(&key, "main", || render_template(BACKWARD_SHADER, &[("RENORMALIZE", flag(renormalize))]));
            dev.launch(&pipeline, &params, &[&sp, &sw, &si, &g_probs, &g_weights, &dlogits], grid(tokens.div_ceil(64)));
        }
        vec![Some(dlogits)]
    });
    RouterOutput { probs, weights, indices }
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
