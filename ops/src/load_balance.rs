//! The load-balancing loss of a top-k router (Switch Transformer), fused
//! (`shaders/load_balance.wgsl`): the expert shares and mean probabilities in one kernel,
//! the loss in a second, its gradient in one more, where the formula as tensor ops takes
//! a dozen small kernels a layer.

use moegrad_engine::{grid, record, DType, Tensor};

use crate::host::HostTensor;
use crate::workgroup_reduce::WorkgroupReduce;

const SHADER: &str = include_str!("../../shaders/load_balance.wgsl");

/// What `load_balancing_loss` gives.
pub struct LoadBalance {
    /// `[]` coef * E * sum_e f_e P_e, on the tape through the probabilities.
    pub loss: Tensor,
    /// `[E]` f_e, the share of the routed slots that went to each expert (a constant).
    pub load: Tensor,
}

/// The loss of router probabilities `probs` `[T, E]` whose tokens chose experts `indices`
/// (u32 `[T, k]`): coef * E * sum_e f_e P_e, with P_e the mean probability of expert e.
/// Its minimum, coef, is reached when both are uniform; f_e carries no gradient.
pub fn load_balancing_loss(probs: &Tensor, indices: &Tensor, coef: f32) -> LoadBalance {
    assert!(probs.rank() == 2 && probs.dtype() == DType::F32, "load_balancing_loss: probabilities must be f32 [tokens, experts], got {:?} {:?}", probs.dtype(), probs.shape());
    assert!(indices.rank() == 2 && indices.dtype() == DType::U32, "load_balancing_loss: indices must be u32 [tokens, k], got {:?} {:?}", indices.dtype(), indices.shape());
    let (tokens, experts, k) = (probs.shape()[0], probs.shape()[1], indices.shape()[1]);
    assert_eq!(indices.shape()[0], tokens, "load_balancing_loss: {:?} probabilities and {:?} indices disagree on the tokens", probs.shape(), indices.shape());
    let dev = probs.device();
    let params = [tokens as u32, experts as u32, k as u32, coef.to_bits()];
    let pipeline = |entry: &str| WorkgroupReduce::for_device(dev).entry_pipeline(dev, "load_balance", SHADER, entry);
    let live = tokens > 0 && experts > 0 && k > 0;
    // Without tokens there is nothing to balance: a loss of 0 and shares of 0.
    let alloc = |shape: &[usize]| if live { Tensor::empty(dev, shape, DType::F32) } else { Tensor::zeros(dev, shape) }.unwrap_or_else(|e| panic!("load_balancing_loss: {e}"));
    let (loss, load) = (alloc(&[]), alloc(&[experts]));
    if live {
        let mean_probs = alloc(&[experts]);
        dev.launch_bound(&pipeline("experts"), &params, &[(1, probs), (2, indices), (3, &load), (4, &mean_probs)], grid(experts));
        dev.launch_bound(&pipeline("finish"), &params, &[(3, &load), (4, &mean_probs), (5, &loss)], [1, 1, 1]);
    }
    let saved_load = load.clone();
    let shape = probs.shape().to_vec();
    let loss = record("load_balancing_loss", loss, &[probs], move |g| {
        let dev = saved_load.device();
        let dprobs = if live { Tensor::empty(dev, &shape, DType::F32) } else { Tensor::zeros(dev, &shape) };
        let dprobs = dprobs.unwrap_or_else(|e| panic!("load_balancing_loss backward: {e}"));
        if live {
            let pipeline = WorkgroupReduce::for_device(dev).entry_pipeline(dev, "load_balance", SHADER, "backward");
            dev.launch_bound(&pipeline, &params, &[(3, &saved_load), (6, g), (7, &dprobs)], grid((tokens * experts).div_ceil(256)));
        }
        vec![Some(dprobs)]
    });
    LoadBalance { loss, load }
}

/// CPU reference: (loss, f_e for each expert).
pub fn load_balancing_loss_reference(probs: &HostTensor, indices: &[u32], coef: f64) -> (f64, Vec<f64>) {
    let (tokens, experts) = (probs.shape[0], probs.shape[1]);
    let mut share = vec![0.0; experts];
    indices.iter().for_each(|&e| share[e as usize] += 1.0 / indices.len() as f64);
    let mean_prob = |e: usize| (0..tokens).map(|t| probs.data[t * experts + e]).sum::<f64>() / tokens as f64;
    let loss = coef * experts as f64 * (0..experts).map(|e| share[e] * mean_prob(e)).sum::<f64>();
    (loss, share)
}
