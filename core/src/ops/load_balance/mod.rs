//! The load-balancing loss of a top-k router (Switch Transformer), fused
//! (`load_balance.wgsl`): the column sums of the probabilities (the reduction
//! kernel), then the loads and the loss in one kernel, and the gradient in one, where the
//! formula as tensor ops takes a dozen small kernels a layer. The loads come from the
//! routing plan's counts, not from the chosen experts again. The loss-free alternative,
//! DeepSeek-V3's selection bias, moves by `bias_balance_update` (`bias_update.wgsl`).

use crate::{elementwise_grid, record, DType, Tensor};

use crate::ops::common::rows::WorkgroupReduce;
use crate::ops::host::HostTensor;
use crate::ops::permute::Routing;
use crate::ops::reduce::{reduce, ReduceOp};

const SHADER: &str = include_str!("load_balance.wgsl");
const BIAS_SHADER: &str = include_str!("bias_update.wgsl");

/// What `load_balancing_loss` gives.
pub struct LoadBalance {
    /// `[]` coef * E * sum_e f_e P_e, on the tape through the probabilities.
    pub loss: Tensor,
    /// `[E]` f_e, the share of the routed slots that went to each expert (a constant).
    /// Data-parallel training overwrites it with the mean over ranks before the backward
    /// pass, whose gradient it scales.
    pub load: Tensor,
    /// `[E]` the column sums of the probabilities (T P_e), for a loss over several ranks'
    /// tokens.
    pub prob_sums: Tensor,
}

/// The loss of router probabilities `probs` `[T, E]` whose tokens were routed by `plan`:
/// coef * E * sum_e f_e P_e, with P_e the mean probability of expert e. Its minimum,
/// coef, is reached when both are uniform; f_e carries no gradient.
pub fn load_balancing_loss(probs: &Tensor, plan: &Routing, coef: f32) -> LoadBalance {
    assert!(
        probs.rank() == 2 && probs.dtype() == DType::F32,
        "load_balancing_loss: probabilities must be f32 [tokens, experts], got {:?} {:?}",
        probs.dtype(),
        probs.shape()
    );
    let (tokens, experts) = (probs.shape()[0], probs.shape()[1]);
    assert_eq!(
        [tokens, experts],
        [plan.tokens, plan.experts],
        "load_balancing_loss: probabilities {:?} and a routing plan of {} tokens over {} experts disagree",
        probs.shape(),
        plan.tokens,
        plan.experts
    );
    let dev = probs.device();
    let params = [tokens as u32, experts as u32, (tokens * plan.k) as u32, coef.to_bits()];
    let live = tokens > 0 && experts > 0 && plan.k > 0;
    // Without tokens there is nothing to balance: a loss of 0 and loads of 0.
    let alloc = |shape: &[usize]| {
        if live {
            Tensor::output(dev, shape, DType::F32, "load_balancing_loss")
        } else {
            Tensor::output_zeros(dev, shape, DType::F32, "load_balancing_loss")
        }
    };
    let (loss, load) = (alloc(&[]), alloc(&[experts]));
    let prob_sums = if live { reduce(ReduceOp::Sum, &probs.detach(), 0, false) } else { alloc(&[experts]) };
    if live {
        let pipeline = WorkgroupReduce::for_device(dev).entry_pipeline(dev, "load_balance", SHADER, "finish");
        dev.launch_bound(&pipeline, &params, &[(1, &prob_sums), (2, &plan.counts), (3, &load), (4, &loss)], [1, 1, 1]);
    }
    let saved_load = load.clone();
    let shape = probs.shape().to_vec();
    let loss = record("load_balancing_loss", loss, &[probs], move |g| {
        let dev = saved_load.device();
        let dprobs = if live {
            Tensor::output(dev, &shape, DType::F32, "load_balancing_loss backward")
        } else {
            Tensor::output_zeros(dev, &shape, DType::F32, "load_balancing_loss backward")
        };
        if live {
            let pipeline = WorkgroupReduce::for_device(dev).entry_pipeline(dev, "load_balance", SHADER, "backward");
            dev.launch_bound(&pipeline, &params, &[(3, &saved_load), (5, g), (6, &dprobs)], elementwise_grid(tokens * experts));
        }
        vec![Some(dprobs)]
    });
    LoadBalance { loss, load, prob_sums }
}

/// The selection bias `[E]` after one step of auxiliary-loss-free balancing from the
/// step's expert loads `[E]`: `b_e + rate * sign(mean load - load_e)`. Not differentiable
/// (the bias is model state).
pub fn bias_balance_update(bias: &Tensor, load: &Tensor, rate: f32) -> Tensor {
    let experts = bias.numel();
    assert!(
        bias.shape() == [experts] && load.shape() == [experts],
        "bias_balance_update: bias {:?} and load {:?} must both be [E]",
        bias.shape(),
        load.shape()
    );
    let dev = bias.device();
    let updated = Tensor::output(dev, &[experts], DType::F32, "bias_balance_update");
    if experts > 0 {
        let pipeline = dev.pipeline("bias_update", "main", || BIAS_SHADER.to_string());
        dev.launch(&pipeline, &[experts as u32, rate.to_bits()], &[bias, load, &updated], [experts.div_ceil(64) as u32, 1, 1]);
    }
    updated
}

/// CPU reference of `bias_balance_update`.
pub fn bias_balance_update_reference(bias: &[f64], load: &[f64], rate: f64) -> Vec<f64> {
    let mean = load.iter().sum::<f64>() / load.len() as f64;
    bias.iter().zip(load).map(|(b, l)| b + rate * (mean - l).signum() * f64::from(u8::from(mean != *l))).collect()
}

/// CPU reference from the chosen experts (u32 `[T * k]`): (loss, f_e for each expert).
pub fn load_balancing_loss_reference(probs: &HostTensor, indices: &[u32], coef: f64) -> (f64, Vec<f64>) {
    let (tokens, experts) = (probs.shape[0], probs.shape[1]);
    let mut share = vec![0.0; experts];
    indices.iter().for_each(|&e| share[e as usize] += 1.0 / indices.len() as f64);
    let mean_prob = |e: usize| (0..tokens).map(|t| probs.data[t * experts + e]).sum::<f64>() / tokens as f64;
    let loss = coef * experts as f64 * (0..experts).map(|e| share[e] * mean_prob(e)).sum::<f64>();
    (loss, share)
}
