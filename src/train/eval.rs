//! Held-out loss: `evaluate`, the trainer's quick estimate from a few batches of windows
//! spread over the held-out tokens, and `score_all`, which `moegrad eval` uses to score
//! every token of a text exactly once.

use anyhow::{bail, Result};
use moegrad_core::ops::{cross_entropy, CrossEntropyOptions};
use moegrad_core::{no_grad, Device, Tensor};
use moegrad_models::Transformer;

use crate::train::data::eval_batch;

/// Mean cross-entropy over `batches` held-out batches, in evaluation mode.
pub fn evaluate(device: &Device, model: &Transformer, tokens: &[u32], batch: usize, batches: usize) -> Result<f32> {
    let context = model.config.context;
    no_grad(|| {
        let mut total = 0.0;
        for i in 0..batches {
            let b = eval_batch(device, tokens, batch, context, i, batches)?;
            let logits = model.forward(&b.inputs, false).logits;
            total += cross_entropy(&logits, &b.targets.reshape(&[batch * context]), CrossEntropyOptions::default()).item()?;
        }
        Ok(total / batches as f32)
    })
}

/// What `score_all` scored.
#[derive(Clone, Copy, Debug)]
pub struct Score {
    /// Mean cross-entropy per scored token (nats).
    pub loss: f64,
    /// Tokens predicted: all but the first, or fewer when a batch limit stopped early.
    pub tokens: usize,
    /// Windows of the model's context they were scored in.
    pub windows: usize,
}

/// The windows that predict every token after the first exactly once: back to back from
/// the start, the last one moved back to end at the text's end, with the targets it shares
/// with the one before masked (`u32::MAX`, cross-entropy's ignore index).
fn windows(tokens: &[u32], context: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    let n = tokens.len();
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < n {
        let (s, overlap) = if start + context < n { (start, 0) } else { (n - 1 - context, start - (n - 1 - context)) };
        let mut targets = tokens[s + 1..s + 1 + context].to_vec();
        targets[..overlap].fill(u32::MAX);
        out.push((tokens[s..s + context].to_vec(), targets));
        start = s + context;
    }
    out
}

/// Scores every token of `tokens` (each predicted once, from the text before it within a
/// window of the model's context), `batch` windows at a time, calling `progress(done,
/// total)` in windows after each batch; `max_batches` stops early (`Score` says how far).
pub fn score_all(
    device: &Device,
    model: &Transformer,
    tokens: &[u32],
    batch: usize,
    max_batches: Option<usize>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Score> {
    let context = model.config.context;
    if tokens.len() <= context {
        bail!("{} tokens are too few to score with a context of {context}: at least {} are needed", tokens.len(), context + 1);
    }
    let all = windows(tokens, context);
    let take = max_batches.map_or(all.len(), |b| (b * batch).min(all.len()));
    let (mut sum, mut scored) = (0.0f64, 0usize);
    no_grad(|| {
        for (i, chunk) in all[..take].chunks(batch).enumerate() {
            let inputs: Vec<u32> = chunk.iter().flat_map(|(x, _)| x.iter().copied()).collect();
            let targets: Vec<u32> = chunk.iter().flat_map(|(_, y)| y.iter().copied()).collect();
            let counted = targets.iter().filter(|&&t| t != u32::MAX).count();
            let x = Tensor::from_u32(device, &inputs, &[chunk.len(), context])?;
            let y = Tensor::from_u32(device, &targets, &[targets.len()])?;
            let mean = cross_entropy(&model.forward(&x, false).logits, &y, CrossEntropyOptions::default()).item()? as f64;
            sum += mean * counted as f64;
            scored += counted;
            progress((i * batch + chunk.len()).min(take), take);
        }
        Ok(Score { loss: sum / scored as f64, tokens: scored, windows: take })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_predict_every_token_after_the_first_exactly_once() {
        for (n, context) in [(10, 3), (9, 4), (5, 4), (17, 16), (40, 7)] {
            let tokens: Vec<u32> = (0..n as u32).collect();
            let mut predicted = vec![0; n];
            for (x, y) in windows(&tokens, context) {
                assert_eq!(x.len(), context);
                for (i, &t) in y.iter().enumerate().filter(|(_, &t)| t != u32::MAX) {
                    assert_eq!(t, x[i] + 1, "a target is the token after its input");
                    predicted[t as usize] += 1;
                }
            }
            assert_eq!(predicted[0], 0);
            assert!(predicted[1..].iter().all(|&c| c == 1), "n {n} context {context}: {predicted:?}");
        }
    }
}
