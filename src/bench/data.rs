//! `moegrad bench --suite data`: the data path on the CPU. Tokenization throughput (one
//! thread, and `prepare` on all cores) in MB/s of text, and the loader's throughput in
//! tokens/s for the random windows training draws from shards (each read at its offset),
//! with the process's own resident memory after drawing from 10 MB and from 1 GB of
//! tokens, which stays flat. `benches/tiktoken_prepare.py` times Python's tiktoken with
//! numpy on the same corpus, as nanoGPT's prepare scripts do it.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::data::{prepare, PrepareOptions, PrepareStart, ShardFolder};
use crate::train::config::TokenizerKind;
use crate::train::data::BUNDLED_CORPUS;
use crate::train::tokenizer::Standard;

/// Tokens a second an H200 trains the MoE LM step on (the top of the 80k-140k measured):
/// the loader's goal is a hundred times this.
pub const H200_STEP_TOKENS_PER_S: f64 = 140_000.0;

#[derive(Clone, Debug, Serialize)]
pub struct DataResult {
    pub key: String,
    pub value: f64,
    pub unit: &'static str,
    pub note: String,
}

/// The process's own resident memory now (`RssAnon`), in MiB (Linux).
fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(status.lines().find(|l| l.starts_with("RssAnon:"))?.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// llm.c shards of `tokens` random GPT-2 ids in `dir`: a val shard and train shards of
/// at most 100M tokens.
fn random_shards(dir: &Path, tokens: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(7);
    let write = |path: &Path, n: u64, rng: &mut StdRng| -> Result<()> {
        let mut f = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(path)?);
        let mut header = [0i32; 256];
        (header[0], header[1], header[2]) = (crate::data::shards::MAGIC, 1, n as i32);
        f.write_all(&header.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>())?;
        let mut left = n;
        while left > 0 {
            let m = left.min(1 << 20);
            let chunk: Vec<u8> = (0..m).flat_map(|_| rng.random_range(0..50_257u16).to_le_bytes()).collect();
            f.write_all(&chunk)?;
            left -= m;
        }
        Ok(f.flush()?)
    };
    write(&dir.join("bench_val_000000.bin"), 100_000, &mut rng)?;
    let (mut left, mut index) = (tokens, 1);
    while left > 0 {
        let n = left.min(100_000_000);
        write(&dir.join(format!("bench_train_{index:06}.bin")), n, &mut rng)?;
        (left, index) = (left - n, index + 1);
    }
    Ok(())
}

/// Runs the suite in `scratch` (a folder it fills and empties), each timing the best of
/// `iters`.
pub fn run_data_suite(scratch: &Path, iters: usize) -> Result<Vec<DataResult>> {
    std::fs::create_dir_all(scratch)?;
    let mut out = Vec::new();
    let text = BUNDLED_CORPUS.repeat(8);
    let mb = text.len() as f64 / 1e6;
    let corpus = scratch.join("corpus.txt");
    std::fs::write(&corpus, &text)?;
    let best = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..iters {
            let t = Instant::now();
            f()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    for encoding in [Standard::Gpt2, Standard::Llama3] {
        let tokenizer = crate::train::tokenizer::Tokenizer::Tiktoken { encoding };
        tokenizer.encode("warm up the rank tables")?;
        let s = best(&mut || tokenizer.encode(&text).map(|_| ()))?;
        out.push(DataResult { key: format!("tokenize/{}/1 thread", encoding.name()), value: mb / s, unit: "MB/s", note: format!("{mb:.1} MB of Shakespeare") });
        let shards = scratch.join(format!("prepared-{}", encoding.name()));
        let opts = PrepareOptions {
            tokenizer: TokenizerKind::Standard(encoding),
            out: shards,
            name: None,
            shard_tokens: 100_000_000,
            val_tokens: None,
            inputs: vec![corpus.clone()],
            start: PrepareStart::Force,
            stop_after_shards: None,
        };
        let s = best(&mut || prepare(&opts, |_, _| {}).map(|_| ()))?;
        let threads = rayon::current_num_threads();
        out.push(DataResult {
            key: format!("prepare/{}/{threads} threads", encoding.name()),
            value: mb / s,
            unit: "MB/s",
            note: "read, tokenize, write shards and meta.json".into(),
        });
    }
    for (name, tokens) in [("10 MB", 5_000_000u64), ("1 GB", 500_000_000)] {
        let dir = scratch.join(format!("shards-{}", tokens));
        random_shards(&dir, tokens)?;
        let folder = ShardFolder::open(&dir, Some(&TokenizerKind::Standard(Standard::Gpt2)))?;
        let train = folder.train_tokens()?;
        let (batch, context, steps) = (8, 1024, 2_000);
        let count = train.window_count(context);
        let mut rng = StdRng::seed_from_u64(1);
        let s = best(&mut || {
            for _ in 0..steps * batch {
                std::hint::black_box(train.window(rng.random_range(0..count), context)?);
            }
            Ok(())
        })?;
        let per_s = (steps * batch * context) as f64 / s;
        let rss = resident_mib().map_or("-".to_string(), |own| format!("then {own:.0} MiB of its own resident"));
        out.push(DataResult {
            key: format!("loader/{name} of tokens/random windows"),
            value: per_s,
            unit: "tokens/s",
            note: format!("{:.0}x an H200 step's {H200_STEP_TOKENS_PER_S:.0} tokens/s; {rss}", per_s / H200_STEP_TOKENS_PER_S),
        });
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::remove_dir_all(scratch)?;
    Ok(out)
}
