//! Text generation with a KV cache: the prompt runs once, then each new token runs alone
//! against the cached keys and values. Sampling (temperature, top-k) happens on the host
//! from one row of logits per token.

use anyhow::{bail, Result};
use moegrad_core::{no_grad, Device, Tensor};
use moegrad_models::{KvCache, Transformer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::train::tokenizer::Tokenizer;

pub struct SampleOptions {
    pub max_tokens: usize,
    /// 0 picks the most likely token.
    pub temperature: f32,
    /// Sample among the k most likely tokens; 0 means all.
    pub top_k: usize,
    pub seed: u64,
}

/// Picks a token from one row of logits.
fn pick(logits: &[f32], opts: &SampleOptions, rng: &mut StdRng) -> u32 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if opts.temperature <= 0.0 {
        return order[0] as u32;
    }
    if opts.top_k > 0 {
        order.truncate(opts.top_k);
    }
    let max = logits[order[0]];
    let weights: Vec<f64> = order.iter().map(|&i| (((logits[i] - max) / opts.temperature) as f64).exp()).collect();
    let mut r = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (&i, w) in order.iter().zip(&weights) {
        r -= w;
        if r <= 0.0 {
            return i as u32;
        }
    }
    order[order.len() - 1] as u32
}

/// The prompt followed by up to `max_tokens` generated tokens (fewer if the context fills).
pub fn generate(device: &Device, model: &Transformer, tokenizer: &Tokenizer, prompt: &str, opts: &SampleOptions) -> Result<String> {
    let mut ids = tokenizer.encode(prompt);
    if ids.is_empty() {
        ids = tokenizer.encode("\n");
    }
    let context = model.config.context;
    if ids.len() >= context {
        bail!("the prompt has {} tokens; the model's context is {context}", ids.len());
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut cache = KvCache::new();
    let vocab = model.config.vocab_size;
    no_grad(|| {
        let mut logits = model.forward_cached(&Tensor::from_u32(device, &ids, &[1, ids.len()])?, &mut cache);
        for _ in 0..opts.max_tokens {
            let rows = logits.shape()[0];
            let last = logits.slice(0, rows - 1, 1).to_vec()?;
            let next = pick(&last, opts, &mut rng);
            ids.push(next);
            if ids.len() >= context {
                break;
            }
            logits = model.forward_cached(&Tensor::from_u32(device, &[next], &[1, 1])?, &mut cache);
            debug_assert_eq!(logits.shape()[1], vocab);
        }
        Ok(tokenizer.decode(&ids))
    })
}
