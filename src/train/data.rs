//! A run's data: the bundled corpus or the user's text files (tokenized at the start,
//! split into training and held-out tokens), or a shard folder (read window by window); batches
//! are drawn deterministically from (seed, step, micro-batch), so that a resumed run sees
//! exactly the batches an uninterrupted one would.

use std::ops::Range;
use std::path::Path;

use anyhow::{bail, Context, Result};
use moegrad_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data::{ShardFolder, Tokens};
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
    pub train: Tokens,
    pub eval: Tokens,
    /// Bytes of held-out text per held-out token (for bits per byte), when known.
    pub eval_bytes_per_token: Option<f64>,
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
    /// Tokenizes a text corpus's two splits.
    pub fn new(train_text: &str, eval_text: &str, tokenizer: &Tokenizer, context: usize) -> Result<Corpus> {
        let vocab = tokenizer.vocab_size();
        let train = Tokens::in_memory("the training split", tokenizer.encode(train_text)?, vocab);
        let eval = Tokens::in_memory("the held-out split", tokenizer.encode(eval_text)?, vocab);
        for (name, tokens) in [("training", &train), ("held-out", &eval)] {
            if tokens.len() <= context as u64 + 1 {
                bail!("the {name} split has {} tokens, fewer than a context of {context} needs; use more text or a smaller context", tokens.len());
            }
        }
        let eval_bytes_per_token = Some(eval_text.len() as f64 / eval.len() as f64);
        Ok(Corpus { train, eval, eval_bytes_per_token })
    }

    /// A shard folder's train and val shards.
    pub fn from_shards(folder: &ShardFolder, context: usize) -> Result<Corpus> {
        let (train, eval) = (folder.train_tokens()?, folder.val_tokens()?);
        train.check_fits("training", context)?;
        // The evaluation's windows predict `context` tokens after one more.
        eval.check_fits("held-out", context + 1)?;
        Ok(Corpus { train, eval, eval_bytes_per_token: folder.val_bytes_per_token() })
    }
}

/// Inputs and next-token targets, both u32 `[batch, context]`.
#[derive(Clone)]
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
}

fn batch_at(device: &Device, tokens: &Tokens, windows: &[u64], context: usize) -> Result<Batch> {
    let (mut x, mut y) = (Vec::with_capacity(windows.len() * context), Vec::with_capacity(windows.len() * context));
    for &w in windows {
        let t = tokens.window(w, context)?;
        x.extend_from_slice(&t[..context]);
        y.extend_from_slice(&t[1..]);
    }
    let shape = [windows.len(), context];
    Ok(Batch { inputs: Tensor::from_u32(device, &x, &shape)?, targets: Tensor::from_u32(device, &y, &shape)? })
}

/// The windows `share` of the training batch `(seed, step, micro)`: `batch` random
/// windows, the same on every run, of which one process takes all (`0..batch`) and a
/// data-parallel rank its slice (`dist::rank_share`).
pub fn train_batch(
    device: &Device,
    tokens: &Tokens,
    batch: usize,
    share: Range<usize>,
    context: usize,
    (seed, step, micro): (u64, u64, usize),
) -> Result<Batch> {
    let mut rng = StdRng::seed_from_u64(seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (micro as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
    // Drawn as usize, as before shards existed, so runs on text keep their batches.
    let count = tokens.window_count(context) as usize;
    let windows: Vec<u64> = (0..batch).map(|_| rng.random_range(0..count) as u64).collect();
    batch_at(device, tokens, &windows[share], context)
}

/// Held-out batch `index` of `count`: windows spread evenly over the held-out tokens, the
/// same for every run and seed, so evaluations compare.
pub fn eval_batch(device: &Device, tokens: &Tokens, batch: usize, context: usize, index: usize, count: usize) -> Result<Batch> {
    let windows = (batch * count) as u64;
    let span = tokens.window_count(context) - 1;
    let starts: Vec<u64> = (0..batch as u64).map(|b| (index as u64 * batch as u64 + b) * span / windows.max(1)).collect();
    batch_at(device, tokens, &starts, context)
}
