//! `moegrad data prepare` and `moegrad data inspect`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use moegrad::data::folder::{Split, META_FILE};
use moegrad::data::{prepare, PrepareOptions, PrepareStart, ShardFolder};
use moegrad::train::config::TokenizerKind;

/// Token shards for research-scale corpora: write them from text, or look inside them.
#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    Prepare(PrepareArgs),
    Inspect(InspectArgs),
}

/// Tokenizes .txt files, folders of them and .jsonl files (a `text` field a line) into
/// llm.c-format shards on all cores.
#[derive(Args)]
struct PrepareArgs {
    /// gpt2, llama3, cl100k, o200k, or the path of a Hugging Face tokenizer.json.
    #[arg(long, default_value = "gpt2", value_parser = |s: &str| TokenizerKind::try_from(s.to_string()))]
    tokenizer: TokenizerKind,
    /// The shard folder to write.
    #[arg(long)]
    out: PathBuf,
    /// The shards' name prefix (default: the folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Tokens per train shard.
    #[arg(long, default_value_t = 100_000_000)]
    shard_tokens: u64,
    /// Tokens of the held-out shard (default: about a tenth of the input, at most 10M).
    #[arg(long)]
    val_tokens: Option<u64>,
    /// Go on with the unfinished prepare in --out.
    #[arg(long)]
    resume: bool,
    /// Delete the shards --out holds and start over.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Stop after writing this many shards, as if interrupted (--resume goes on).
    #[arg(long, value_parser = crate::at_least_one)]
    stop_after_shards: Option<usize>,
    /// .txt files, .jsonl files, or folders of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// Prints a shard folder's tokenizer, shards, sources, and the start of its shards decoded.
#[derive(Args)]
struct InspectArgs {
    folder: PathBuf,
    /// The tokenizer of llm.c shards, which record none (a prepared folder's meta.json names its own).
    #[arg(long, default_value = "gpt2", value_parser = |s: &str| TokenizerKind::try_from(s.to_string()))]
    tokenizer: TokenizerKind,
    /// Tokens to decode from the start of the val and the first train shard.
    #[arg(long, default_value_t = 48)]
    tokens: usize,
}

impl DataArgs {
    pub fn run(self) -> Result<()> {
        match self.command {
            DataCommand::Prepare(a) => a.run(),
            DataCommand::Inspect(a) => a.run(),
        }
    }
}

impl PrepareArgs {
    fn run(self) -> Result<()> {
        let start = match (self.resume, self.force) {
            (true, _) => PrepareStart::Resume,
            (false, true) => PrepareStart::Force,
            (false, false) => PrepareStart::Fresh,
        };
        let opts = PrepareOptions {
            tokenizer: self.tokenizer,
            out: self.out.clone(),
            name: self.name,
            shard_tokens: self.shard_tokens,
            val_tokens: self.val_tokens,
            inputs: self.inputs,
            start,
            stop_after_shards: self.stop_after_shards,
        };
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} [{elapsed} < {eta}]").expect("valid template"),
        );
        let clock = Instant::now();
        let meta = prepare(&opts, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })?;
        bar.finish_and_clear();
        let seconds = clock.elapsed().as_secs_f64();
        let count = |split| meta.shards.iter().filter(|s| s.split == split).map(|s| s.tokens).sum::<u64>();
        let bytes: u64 = meta.shards.iter().map(|s| s.bytes).sum();
        let state = if meta.complete { "complete" } else { "stopped early; go on with --resume" };
        println!(
            "{}: {} shards ({} val tokens, {} train tokens) of {} from {:.1} MB of text in {seconds:.1} s ({:.1} MB/s); {state}",
            self.out.display(),
            meta.shards.len(),
            count(Split::Val),
            count(Split::Train),
            meta.tokenizer,
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / seconds.max(1e-9)
        );
        println!("next:  moegrad data inspect {}", self.out.display());
        println!("       moegrad train --config configs/<name>.toml --data {} --out runs/<name>", self.out.display());
        Ok(())
    }
}

impl InspectArgs {
    fn run(self) -> Result<()> {
        if !self.folder.is_dir() {
            bail!("{} is not a folder", self.folder.display());
        }
        let has_meta = self.folder.join(META_FILE).is_file();
        let folder = ShardFolder::open(&self.folder, (!has_meta).then_some(&self.tokenizer))?;
        let t = &folder.tokenizer;
        println!("{}: tokenizer {} ({} tokens, separator {:?})", self.folder.display(), t.describe(), t.vocab_size(), t.separator());
        match &folder.meta {
            Some(meta) => {
                println!("{:<32} {:>6} {:>14} {:>14} {:>8}", "shard", "split", "tokens", "bytes", "B/token");
                for s in &meta.shards {
                    let split = if s.split == Split::Val { "val" } else { "train" };
                    println!("{:<32} {split:>6} {:>14} {:>14} {:>8.3}", s.file, s.tokens, s.bytes, s.bytes as f64 / s.tokens.max(1) as f64);
                }
                println!("sources ({}):", meta.sources.len());
                for s in meta.sources.iter().take(20) {
                    println!("  {} ({} bytes)", s.path, s.bytes);
                }
                if meta.sources.len() > 20 {
                    println!("  ... and {} more", meta.sources.len() - 20);
                }
            }
            None => println!("llm.c shards (no meta.json: the tokenizer is --tokenizer's, byte counts unknown)"),
        }
        for (what, tokens) in [("val", folder.val_tokens()?), ("train", folder.train_tokens()?)] {
            println!("{what}: {} tokens in {} shards, every header checked", tokens.len(), tokens.sequence_lens().len());
            let first = tokens.sequence_lens()[0].min(self.tokens as u64) as usize;
            let ids = tokens.read(0, 0, first)?;
            println!("  first {first} ids: {ids:?}");
            println!("  decoded: {:?}", t.decode(&ids));
        }
        Ok(())
    }
}
