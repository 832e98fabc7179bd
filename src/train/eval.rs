//! Held-out loss: `evaluate`, the trainer's quick estimate from a few batches of windows
//! spread over the held-out tokens, and `score_all`, which `moegrad eval` uses to score
//! every token of a text exactly once.

use anyhow::{bail, Result};
use moegrad_core::ops::{cross_entropy, CrossEntropyOptions};
use moegrad_core::{no_grad, Device, Tensor};
use moegrad_models::Transformer;

use crate::data::Tokens;
use crate::train::data::eval_batch;

/// Mean cross-entropy over `batches` held-out batches, in evaluation mode.
pub fn evaluate(device: &Device, model: &Transformer, tokens: &Tokens, batch: usize, batches: usize) -> Result<f32> {
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

/// The windows that predict every token after the first of a sequence of `n` exactly
/// once, as (start, targets masked at its start): back to back from the start, the last one
/// moved back to end at the sequence's end, with the targets it shares with the one before
/// masked (`u32::MAX`, cross-entropy's ignore index).
fn windows(n: u64, context: usize) -> Vec<(u64, usize)> {
    let c = context as u64;
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < n {
        let (s, overlap) = if start + c < n { (start, 0) } else { (n - 1 - c, (start - (n - 1 - c)) as usize) };
        out.push((s, overlap));
        start = s + c;
    }
    out
}

/// Scores every token of `tokens` (each predicted once, from the tokens before it in its
/// sequence within a window of the model's context), `batch` windows at a time, calling
/// `progress(done, total)` in windows after each batch; `max_windows` stops early (`Score`
/// says how far). Windows are read as they are scored, so a shard is never read whole.
pub fn score_all(
    device: &Device,
    model: &Transformer,
    tokens: &Tokens,
    batch: usize,
    max_windows: Option<usize>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Score> {
    let context = model.config.context;
    let all: Vec<(usize, u64, usize)> = tokens
        .sequence_lens()
        .into_iter()
        .enumerate()
        .filter(|&(_, n)| n > context as u64)
        .flat_map(|(part, n)| windows(n, context).into_iter().map(move |(s, overlap)| (part, s, overlap)))
        .collect();
    if all.is_empty() {
        bail!("{} tokens ({}) are too few to score with a context of {context}: a sequence of at least {} is needed", tokens.len(), tokens.name(), context + 1);
    }
    let take = max_windows.map_or(all.len(), |w| w.min(all.len()));
    let (mut sum, mut scored) = (0.0f64, 0usize);
    no_grad(|| {
        for (i, chunk) in all[..take].chunks(batch).enumerate() {
            let (mut inputs, mut targets) = (Vec::with_capacity(chunk.len() * context), Vec::with_capacity(chunk.len() * context));
            for &(part, s, overlap) in chunk {
                let t = tokens.read(part, s, context + 1)?;
                inputs.extend_from_slice(&t[..context]);
                targets.extend(t[1..].iter().enumerate().map(|(j, &id)| if j < overlap { u32::MAX } else { id }));
            }
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
            let mut predicted = vec![0; n];
            for (s, overlap) in windows(n as u64, context) {
                assert!(s as usize + context < n, "a window's targets end within the sequence");
                predicted[s as usize + 1 + overlap..s as usize + 1 + context].iter_mut().for_each(|p| *p += 1);
            }
            assert_eq!(predicted[0], 0);
            assert!(predicted[1..].iter().all(|&c| c == 1), "n {n} context {context}: {predicted:?}");
        }
    }
}
