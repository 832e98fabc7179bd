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

/// The prompt followed by `max_tokens` generated tokens. The model sees at most its
/// context: a longer prompt is cropped to its end, and when the window fills, the cache
/// starts again from the last half of it (one forward pass of half a context, then one
/// token at a time again), as nanoGPT crops, without a full pass for every token.
pub fn generate(device: &Device, model: &Transformer, tokenizer: &Tokenizer, prompt: &str, opts: &SampleOptions) -> Result<String> {
    Ok(tokenizer.decode(&generate_ids(device, model, tokenizer, prompt, opts)?))
}

/// `generate`'s tokens: the prompt's (or a line break's, for an empty prompt), then the
/// generated ones.
pub fn generate_ids(device: &Device, model: &Transformer, tokenizer: &Tokenizer, prompt: &str, opts: &SampleOptions) -> Result<Vec<u32>> {
    if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
        bail!("sampling temperature {} must be finite and at least 0", opts.temperature);
    }
    let mut ids = tokenizer.encode(prompt)?;
    if ids.is_empty() {
        ids = tokenizer.encode("\n")?;
    }
    let context = model.config.context;
    let restart = (context / 2).max(1);
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut cache = KvCache::new();
    let vocab = model.config.vocab_size;
    no_grad(|| {
        let mut in_cache = ids.len().min(context);
        let window = &ids[ids.len() - in_cache..];
        let mut logits = model.forward_cached(&Tensor::from_u32(device, window, &[1, in_cache])?, &mut cache);
        for generated in 1..=opts.max_tokens {
            let rows = logits.shape()[0];
            let last = logits.slice(0, rows - 1, 1).to_vec()?;
            let next = pick(&last, opts, &mut rng);
            ids.push(next);
            if generated == opts.max_tokens {
                break;
            }
            if in_cache == context {
                cache = KvCache::new();
                in_cache = restart;
                let window = &ids[ids.len() - restart..];
                logits = model.forward_cached(&Tensor::from_u32(device, window, &[1, restart])?, &mut cache);
            } else {
                in_cache += 1;
                logits = model.forward_cached(&Tensor::from_u32(device, &[next], &[1, 1])?, &mut cache);
            }
            debug_assert_eq!(logits.shape()[1], vocab);
        }
        Ok(ids)
    })
}
