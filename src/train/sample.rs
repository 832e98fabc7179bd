//! Text generation with a KV cache: the prompt runs once, then each new token runs alone
//! against the cached keys and values. Sampling (temperature, top-k) happens on the host
//! from one row of logits per token.

use std::io::Write;

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

/// `generate`, writing the text to `out` as it is made (the prompt first), as samplers do:
/// a long generation shows its progress, and an interrupted one keeps what it made.
pub fn generate_to(device: &Device, model: &Transformer, tokenizer: &Tokenizer, prompt: &str, opts: &SampleOptions, out: &mut dyn Write) -> Result<()> {
    let mut stream: Option<TextStream> = None;
    let ids = generate_ids_with(device, model, tokenizer, prompt, opts, &mut |ids, prompt_len| {
        let stream = match &mut stream {
            Some(stream) => stream,
            None => {
                out.write_all(tokenizer.decode(&ids[..prompt_len]).as_bytes())?;
                stream.insert(TextStream::new(tokenizer, ids, prompt_len))
            }
        };
        stream.push(ids, out)
    })?;
    if let Some(mut stream) = stream {
        stream.finish(&ids, out)?;
    }
    Ok(writeln!(out)?)
}

/// The most tokens one `generate` makes: a bound that says "wrong number" before a run of
/// days (at a few hundred tokens a second on a GPU, 100,000 take minutes).
pub const MAX_SAMPLE_TOKENS: usize = 100_000;

/// Writes the text of generated tokens as they come. A token's text is what decoding the
/// tokens since `start` adds to what was written from there, so that tokenizers whose text
/// depends on the token before (a leading space) and tokens that end mid-character come
/// out right; `start` moves up every so often, so the work stays linear.
struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    start: usize,
    written: usize,
}

impl<'a> TextStream<'a> {
    /// A stream for the tokens after `ids[..from]` (decoded with the token before as context).
    fn new(tokenizer: &'a Tokenizer, ids: &[u32], from: usize) -> TextStream<'a> {
        let start = from.saturating_sub(1);
        TextStream { tokenizer, start, written: tokenizer.decode_bytes(&ids[start..from]).len() }
    }

    fn push(&mut self, ids: &[u32], out: &mut dyn Write) -> Result<()> {
        let bytes = self.tokenizer.decode_bytes(&ids[self.start..]);
        let whole = complete_prefix(&bytes);
        if whole > self.written {
            out.write_all(String::from_utf8_lossy(&bytes[self.written..whole]).as_bytes())?;
            out.flush()?;
            self.written = whole;
        }
        if ids.len() - self.start > 64 && self.written == bytes.len() {
            *self = TextStream::new(self.tokenizer, ids, ids.len());
        }
        Ok(())
    }

    /// Writes what is left (a character cut at the end becomes U+FFFD).
    fn finish(&mut self, ids: &[u32], out: &mut dyn Write) -> Result<()> {
        let bytes = self.tokenizer.decode_bytes(&ids[self.start..]);
        if bytes.len() > self.written {
            out.write_all(String::from_utf8_lossy(&bytes[self.written..]).as_bytes())?;
        }
        Ok(())
    }
}

/// The length of the longest prefix of `bytes` that ends on a whole character: only an
/// unfinished character at the end is held back (the next token may finish it); invalid
/// bytes before it are let through, to be written as U+FFFD.
fn complete_prefix(bytes: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match std::str::from_utf8(&bytes[at..]) {
            Ok(_) => return bytes.len(),
            Err(e) => match e.error_len() {
                Some(invalid) => at += e.valid_up_to() + invalid,
                None => return at + e.valid_up_to(),
            },
        }
    }
}

/// `generate`'s tokens: the prompt's (or a line break's, for an empty prompt), then the
/// generated ones.
pub fn generate_ids(device: &Device, model: &Transformer, tokenizer: &Tokenizer, prompt: &str, opts: &SampleOptions) -> Result<Vec<u32>> {
    generate_ids_with(device, model, tokenizer, prompt, opts, &mut |_, _| Ok(()))
}

/// `generate_ids`, calling `on_token(ids, prompt_len)` after each generated token.
fn generate_ids_with(
    device: &Device,
    model: &Transformer,
    tokenizer: &Tokenizer,
    prompt: &str,
    opts: &SampleOptions,
    on_token: &mut dyn FnMut(&[u32], usize) -> Result<()>,
) -> Result<Vec<u32>> {
    if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
        bail!("sampling temperature {} must be finite and at least 0", opts.temperature);
    }
    if opts.max_tokens > MAX_SAMPLE_TOKENS {
        bail!("{} tokens is more than the {MAX_SAMPLE_TOKENS} one sample makes; sample in several calls", opts.max_tokens);
    }
    let mut ids = tokenizer.encode(prompt)?;
    if ids.is_empty() {
        ids = tokenizer.encode("\n")?;
    }
    let prompt_len = ids.len();
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
            on_token(&ids, prompt_len)?;
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
