//! Text data: the bundled corpus or the user's files, split into training and held-out
//! tokens, and batches drawn deterministically from (seed, step, micro-batch), so that a
//! resumed run sees exactly the batches an uninterrupted one would.

use std::path::Path;

use anyhow::{bail, Context, Result};
use moegrad_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::train::tokenizer::Tokenizer;

/// The bundled corpus: eight Shakespeare plays (see data/README.md for provenance).
pub const BUNDLED_CORPUS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare.txt"));

/// The text at `path` (a file, or every `.txt` file of a folder in name order), or the
/// bundled corpus when `path` is empty.
pub fn load_text(path: &str) -> Result<String> {
    if path.is_empty() {
        return Ok(BUNDLED_CORPUS.to_string());
    }
    let p = Path::new(path);
    if !p.exists() {
        bail!("data path {path:?} does not exist");
    }
    if !p.is_dir() && !p.is_file() {
        bail!("data path {path:?} is not a regular file or folder (a device, pipe or socket is no corpus)");
    }
    let text = if p.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(p)
            .with_context(|| format!("cannot list data folder {path:?}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("data folder {path:?} has no .txt files");
        }
        let texts = files
            .iter()
            .map(|f| std::fs::read_to_string(f).with_context(|| format!("cannot read {} as UTF-8 text", f.display())))
            .collect::<Result<Vec<_>>>()?;
        texts.join("\n\n")
    } else {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {path:?} as UTF-8 text"))?
    };
    if text.trim().is_empty() {
        bail!("data path {path:?} holds no text");
    }
    Ok(text)
}

/// Training and held-out tokens.
pub struct Corpus {
    pub train: Vec<u32>,
    pub eval: Vec<u32>,
    /// Bytes of held-out text per held-out token (for bits per byte).
    pub eval_bytes_per_token: f64,
}

/// (training text, held-out text): the last `eval_fraction` is held out, cut at a line
/// break when one is near.
pub fn split_text(text: &str, eval_fraction: f64) -> (&str, &str) {
    let mut cut = ((text.len() as f64) * (1.0 - eval_fraction)) as usize;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if let Some(nl) = text[..cut].rfind('\n').filter(|&nl| nl > cut / 2) {
        cut = nl + 1;
    }
    text.split_at(cut)
}

impl Corpus {
    pub fn new(train_text: &str, eval_text: &str, tokenizer: &Tokenizer, context: usize) -> Result<Corpus> {
        let (train, eval) = (tokenizer.encode(train_text), tokenizer.encode(eval_text));
        for (name, tokens) in [("training", &train), ("held-out", &eval)] {
            if tokens.len() <= context + 1 {
                bail!("the {name} split has {} tokens, fewer than a context of {context} needs; use more text or a smaller context", tokens.len());
            }
        }
        let eval_bytes_per_token = eval_text.len() as f64 / eval.len() as f64;
        Ok(Corpus { train, eval, eval_bytes_per_token })
    }
}

/// Inputs and next-token targets, both u32 `[batch, context]`.
#[derive(Clone)]
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
}

fn batch_at(device: &Device, tokens: &[u32], starts: &[usize], context: usize) -> Result<Batch> {
    let x: Vec<u32> = starts.iter().flat_map(|&s| tokens[s..s + context].iter().copied()).collect();
    let y: Vec<u32> = starts.iter().flat_map(|&s| tokens[s + 1..s + 1 + context].iter().copied()).collect();
    let shape = [starts.len(), context];
    Ok(Batch { inputs: Tensor::from_u32(device, &x, &shape)?, targets: Tensor::from_u32(device, &y, &shape)? })
}

/// The training batch for (seed, step, micro): random windows, the same on every run.
pub fn train_batch(device: &Device, tokens: &[u32], batch: usize, context: usize, seed: u64, step: u64, micro: usize) -> Result<Batch> {
    let mut rng = StdRng::seed_from_u64(seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (micro as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
    let starts: Vec<usize> = (0..batch).map(|_| rng.random_range(0..tokens.len() - context)).collect();
    batch_at(device, tokens, &starts, context)
}

/// Held-out batch `index` of `count`: windows spread evenly over the held-out tokens, the
/// same for every run and seed, so evaluations compare.
pub fn eval_batch(device: &Device, tokens: &[u32], batch: usize, context: usize, index: usize, count: usize) -> Result<Batch> {
    let windows = batch * count;
    let span = tokens.len() - context - 1;
    let starts: Vec<usize> = (0..batch).map(|b| (index * batch + b) * span / windows.max(1)).collect();
    batch_at(device, tokens, &starts, context)
}
