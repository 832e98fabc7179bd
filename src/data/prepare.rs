//! `moegrad data prepare`: text (`.txt` files, folders of them, `.jsonl` files with a
//! `text` field) into token shards, on all cores, streaming: a text is read in pieces of
//! about `PIECE_BYTES` and no input is ever held whole.
//!
//! Each document (a `.txt` file, a `.jsonl` line) is preceded by the tokenizer's separator.
//! The first `val_tokens` tokens go to the held-out shard `N_val_000000.bin`, the rest to
//! `N_train_000001.bin`, ... of `shard_tokens` each; a document may run on into the next
//! shard, as in llm.c. A shard appears under its name only when complete, and after each
//! one `meta.json` records where the input stands, so `--resume` goes on from there and
//! writes exactly the shards an uninterrupted prepare would.
//!
//! A long text is cut between pieces only at a line break with a visible ASCII character
//! on both sides (`a\nb`): every built-in tokenizer's pre-tokenizer splits there anyway, so
//! the pieces give exactly the whole text's tokens (tested). A Hugging Face tokenizer whose
//! pre-tokenizer marks the start of a text (SentencePiece's prepended space) may differ at
//! a cut.

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::data::folder::{configured_tokenizer, ResumePoint, ShardEntry, ShardMeta, SourceFile, Split, HF_TOKENIZER_FILE, META_FILE};
use crate::data::shards::{ShardWriter, TokenWidth};
use crate::durable::{is_temporary, write_atomic};
use crate::folder_lock::lock_folder;
use crate::train::config::TokenizerKind;
use crate::train::tokenizer::Tokenizer;

/// The size a long text is cut into for tokenizing in parallel.
pub const PIECE_BYTES: usize = 1 << 18;
/// Text tokenized per parallel batch.
const BATCH_BYTES: usize = 1 << 25;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrepareStart {
    /// Into a folder without shards.
    Fresh,
    /// Go on with the unfinished prepare the folder holds.
    Resume,
    /// Delete the folder's shards and start over.
    Force,
}

#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub tokenizer: TokenizerKind,
    pub out: PathBuf,
    /// The shards' name prefix; default: the folder's name.
    pub name: Option<String>,
    pub shard_tokens: u64,
    /// Held-out tokens; default: about a tenth of the input (its bytes / 40), at most 10M.
    pub val_tokens: Option<u64>,
    pub inputs: Vec<PathBuf>,
    pub start: PrepareStart,
    /// Stop once this many shards are written, as if interrupted (`--resume` goes on).
    pub stop_after_shards: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceKind {
    Text,
    Jsonl,
}

/// The input files, folders expanded (recursively, in name order).
fn expand(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, SourceKind)>> {
    fn kind(path: &Path) -> Option<SourceKind> {
        match path.extension()?.to_str()? {
            "txt" => Some(SourceKind::Text),
            "jsonl" => Some(SourceKind::Jsonl),
            _ => None,
        }
    }
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, SourceKind)>) -> Result<()> {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for path in entries {
            // A link inside a folder can loop back into it or lead out of it: a file the
            // person means is named as an input of its own.
            if path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
                let target = std::fs::read_link(&path).map_or("?".to_string(), |t| t.display().to_string());
                bail!(
                    "{} is a symbolic link (to {target}); prepare follows no links inside input folders, which can loop or leave the folder: give what it points to as an input of its own",
                    path.display()
                );
            }
            if path.is_dir() {
                walk(&path, out)?;
            } else if let Some(k) = kind(&path).filter(|_| path.is_file()) {
                out.push((path, k));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let before = out.len();
            walk(input, &mut out)?;
            if out.len() == before {
                bail!("input folder {} has no .txt or .jsonl files", input.display());
            }
        } else if !input.exists() {
            bail!("input {} does not exist", input.display());
        } else if !input.is_file() {
            bail!("input {} is not a regular file or folder", input.display());
        } else {
            let k = kind(input).ok_or_else(|| anyhow::anyhow!("input {}: expected a .txt or .jsonl file, or a folder of them", input.display()))?;
            out.push((input.clone(), k));
        }
    }
    if out.is_empty() {
        bail!("no inputs: give .txt or .jsonl files, or folders of them");
    }
    Ok(out)
}

/// A piece of text to tokenize, and where it sits in its source.
struct Piece {
    source: usize,
    offset: u64,
    line: u64,
    /// Where the next piece starts.
    next: (u64, u64),
    starts_document: bool,
    text: String,
}

/// The end of the last cut point in `bytes`: just after a `\n` with a visible ASCII
/// character on each side.
pub fn last_line_cut(bytes: &[u8]) -> Option<usize> {
    let visible = |b: u8| b.is_ascii_graphic();
    (1..bytes.len().saturating_sub(1)).rev().find(|&i| bytes[i] == b'\n' && visible(bytes[i - 1]) && visible(bytes[i + 1])).map(|i| i + 1)
}

/// Reads pieces from the sources, starting at a resume point.
struct Pieces<'a> {
    sources: &'a [(PathBuf, SourceKind)],
    at: ResumePoint,
    reader: Option<std::io::BufReader<std::fs::File>>,
}

impl<'a> Pieces<'a> {
    fn new(sources: &'a [(PathBuf, SourceKind)], at: ResumePoint) -> Pieces<'a> {
        Pieces { sources, at: ResumePoint { skip: 0, ..at }, reader: None }
    }

    fn next_piece(&mut self) -> Result<Option<Piece>> {
        loop {
            let Some((path, kind)) = self.sources.get(self.at.source) else { return Ok(None) };
            if self.reader.is_none() {
                let mut f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
                f.seek(SeekFrom::Start(self.at.offset))?;
                self.reader = Some(std::io::BufReader::with_capacity(1 << 20, f));
            }
            let reader = self.reader.as_mut().expect("just opened");
            let (offset, line) = (self.at.offset, self.at.line);
            let piece = match kind {
                SourceKind::Text => read_text_piece(reader, path, offset)?.map(|(text, len)| (text, len, 0)),
                SourceKind::Jsonl => read_jsonl_line(reader, path, line)?,
            };
            match piece {
                None => {
                    self.at = ResumePoint { source: self.at.source + 1, offset: 0, line: 0, skip: 0 };
                    self.reader = None;
                }
                Some((text, len, lines)) => {
                    let next = (offset + len, line + lines);
                    (self.at.offset, self.at.line) = next;
                    let starts_document = *kind == SourceKind::Jsonl || offset == 0;
                    if text.is_empty() {
                        continue;
                    }
                    return Ok(Some(Piece { source: self.at.source, offset, line, next, starts_document, text }));
                }
            }
        }
    }
}

/// The next piece of a text file (about `PIECE_BYTES`, cut by `last_line_cut`) and its
/// length in bytes; `None` at the end.
fn read_text_piece(reader: &mut std::io::BufReader<std::fs::File>, path: &Path, offset: u64) -> Result<Option<(String, u64)>> {
    let mut buf = Vec::with_capacity(PIECE_BYTES);
    let mut want = PIECE_BYTES;
    loop {
        let before = buf.len();
        reader.by_ref().take((want - before) as u64).read_to_end(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        let at_end = buf.len() < want;
        if buf.is_empty() {
            return Ok(None);
        }
        let cut = if at_end { Some(buf.len()) } else { last_line_cut(&buf) };
        if let Some(cut) = cut {
            // Give back what follows the cut: the reader is seeked past it.
            let rest = (buf.len() - cut) as i64;
            buf.truncate(cut);
            if rest > 0 {
                reader.seek_relative(-rest)?;
            }
            let len = buf.len() as u64;
            let text = String::from_utf8(buf)
                .map_err(|e| anyhow::anyhow!("{}: not UTF-8 text at byte {}", path.display(), offset + e.utf8_error().valid_up_to() as u64))?;
            return Ok(Some((text, len)));
        }
        want *= 2;
    }
}

/// The next non-blank line of a `.jsonl` file: its `text`, its length in bytes and the
/// lines it spans (blank ones before it included); `None` at the end.
fn read_jsonl_line(reader: &mut impl BufRead, path: &Path, line: u64) -> Result<Option<(String, u64, u64)>> {
    let (mut len, mut lines) = (0u64, 0u64);
    loop {
        let mut raw = Vec::new();
        let n = reader.read_until(b'\n', &mut raw).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(if len > 0 { Some((String::new(), len, lines)) } else { None });
        }
        (len, lines) = (len + n as u64, lines + 1);
        let number = line + lines;
        let Ok(text) = std::str::from_utf8(&raw) else { bail!("{} line {number}: not UTF-8", path.display()) };
        if text.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{} line {number}: not JSON ({e})", path.display()))?;
        let Some(doc) = value.get("text").and_then(|t| t.as_str()) else { bail!("{} line {number}: no \"text\" string field", path.display()) };
        return Ok(Some((doc.to_string(), len, lines)));
    }
}

fn shard_name(name: &str, split: Split, index: usize) -> String {
    let split = match split {
        Split::Val => "val",
        Split::Train => "train",
    };
    format!("{name}_{split}_{index:06}.bin")
}

/// The shard being filled.
struct Open {
    writer: ShardWriter,
    file: String,
    split: Split,
    bytes: u64,
}

/// Writes tokens into shards, recording each finished one in `meta.json`.
struct Writer<'a> {
    dir: &'a Path,
    meta: ShardMeta,
    tokenizer: &'a Tokenizer,
    open: Option<Open>,
    written_now: usize,
    stop_after: Option<usize>,
}

impl Writer<'_> {
    /// Writes `tokens` (a piece's, its separator first when it starts a document) from
    /// `skip` on; true when the run should stop here (`stop_after_shards`).
    fn write(&mut self, piece: &Piece, tokens: &[u32], skip: usize) -> Result<bool> {
        let mut pos = skip;
        while pos < tokens.len() {
            if self.open.is_none() {
                let index = self.meta.shards.len();
                let split = if index == 0 { Split::Val } else { Split::Train };
                let file = shard_name(&self.meta.name, split, index);
                let width = if self.meta.token_bytes == 2 { TokenWidth::U16 } else { TokenWidth::U32 };
                self.open = Some(Open { writer: ShardWriter::create(&self.dir.join(&file), width)?, file, split, bytes: 0 });
            }
            let open = self.open.as_mut().expect("just opened");
            let capacity = match open.split {
                Split::Val => self.meta.val_tokens,
                Split::Train => self.meta.shard_tokens,
            };
            let room = (capacity - open.writer.tokens()) as usize;
            let take = room.min(tokens.len() - pos);
            let part = &tokens[pos..pos + take];
            open.writer.push(part)?;
            open.bytes += if take == tokens.len() {
                piece.text.len() as u64
            } else {
                let sep = self.meta.separator;
                self.tokenizer.decode_bytes(&part.iter().copied().filter(|&t| t != sep).collect::<Vec<_>>()).len() as u64
            };
            pos += take;
            if open.writer.tokens() == capacity {
                let next = if pos < tokens.len() {
                    ResumePoint { source: piece.source, offset: piece.offset, line: piece.line, skip: pos }
                } else {
                    ResumePoint { source: piece.source, offset: piece.next.0, line: piece.next.1, skip: 0 }
                };
                self.finish_shard(Some(next))?;
                self.written_now += 1;
                if self.stop_after.is_some_and(|n| self.written_now >= n) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Renames the open shard into place and records it (and where the input stands) in
    /// `meta.json`.
    fn finish_shard(&mut self, next: Option<ResumePoint>) -> Result<()> {
        let Some(open) = self.open.take() else { return Ok(()) };
        let tokens = open.writer.finish()?;
        self.meta.shards.push(ShardEntry { file: open.file, split: open.split, tokens, bytes: open.bytes });
        self.meta.next = next;
        self.meta.complete = next.is_none();
        write_atomic(&self.dir.join(META_FILE), serde_json::to_string_pretty(&self.meta)?.as_bytes())
    }
}

/// The folder's shard files and meta, which `--force` (or a fresh start, when no shard is
/// among them: a prepare that failed before its first) deletes.
fn prepared_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n == META_FILE || n == HF_TOKENIZER_FILE || n.ends_with(".bin")
            })
        })
        .collect();
    out.sort();
    out
}

fn remove_temporaries(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if is_temporary(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Prepares shards as `opts` asks, calling `progress(done, total)` in input bytes after each
/// batch; returns the folder's `meta.json` (unfinished when stopped by `stop_after_shards`).
pub fn prepare(opts: &PrepareOptions, progress: impl Fn(u64, u64)) -> Result<ShardMeta> {
    let dir = &opts.out;
    let tokenizer = configured_tokenizer(&opts.tokenizer)?;
    let Some(separator) = tokenizer.separator() else {
        bail!("prepare needs a tokenizer with a document separator (gpt2, llama3, cl100k, o200k, or a Hugging Face tokenizer.json that has one); {} is for text runs", opts.tokenizer)
    };
    if opts.shard_tokens == 0 || opts.shard_tokens > i32::MAX as u64 {
        bail!("--shard-tokens {} must be in 1..={} (llm.c's header counts tokens in an int32)", opts.shard_tokens, i32::MAX);
    }
    let sources = expand(&opts.inputs)?;
    let source_files: Vec<SourceFile> = sources
        .iter()
        .map(|(p, _)| {
            Ok(SourceFile { path: p.display().to_string(), bytes: std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?.len() })
        })
        .collect::<Result<_>>()?;
    let total_bytes: u64 = source_files.iter().map(|s| s.bytes).sum();
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => dir.file_name().map_or("data".to_string(), |n| n.to_string_lossy().into_owned()),
    };
    if name.is_empty() || name.contains(['/', '\\']) {
        bail!("--name {name:?} must be a plain file name prefix");
    }
    let tokenizer_name = match &opts.tokenizer {
        TokenizerKind::HuggingFace(_) => HF_TOKENIZER_FILE.to_string(),
        kind => kind.to_string(),
    };
    let val_tokens = opts.val_tokens.unwrap_or((total_bytes / 40).clamp(1, 10_000_000));
    if val_tokens == 0 || val_tokens > i32::MAX as u64 {
        bail!("--val-tokens {val_tokens} must be in 1..={}", i32::MAX);
    }
    let fresh = ShardMeta {
        format: 1,
        name,
        tokenizer: tokenizer_name,
        vocab_size: tokenizer.vocab_size(),
        separator,
        token_bytes: TokenWidth::for_vocab(tokenizer.vocab_size()).bytes(),
        shard_tokens: opts.shard_tokens,
        val_tokens,
        shards: Vec::new(),
        sources: source_files,
        complete: false,
        next: Some(ResumePoint { source: 0, offset: 0, line: 0, skip: 0 }),
    };
    // One prepare at a time in a folder: a second would race the first's renames.
    if opts.start != PrepareStart::Resume {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _lock = match dir.is_dir() {
        true => Some(lock_folder(dir)?),
        false => None,
    };
    let existing = prepared_files(dir);
    let holds_shards = existing.iter().any(|p| p.extension().is_some_and(|x| x == "bin"));
    let meta = match opts.start {
        PrepareStart::Resume => {
            let meta = ShardMeta::read(dir).context("--resume needs the unfinished prepare's folder")?;
            if meta.complete {
                bail!("{} is complete already ({} shards); nothing to resume", dir.display(), meta.shards.len());
            }
            let asked = ShardMeta { shards: meta.shards.clone(), next: meta.next, val_tokens: opts.val_tokens.unwrap_or(meta.val_tokens), ..fresh };
            let mut differs = Vec::new();
            for (key, a, b) in [
                ("tokenizer", &asked.tokenizer, &meta.tokenizer),
                ("name", &asked.name, &meta.name),
                ("shard tokens", &asked.shard_tokens.to_string(), &meta.shard_tokens.to_string()),
                ("val tokens", &asked.val_tokens.to_string(), &meta.val_tokens.to_string()),
                ("sources", &format!("{:?}", asked.sources), &format!("{:?}", meta.sources)),
            ] {
                if a != b {
                    differs.push(format!("{key}: {a} now vs {b} then"));
                }
            }
            if !differs.is_empty() {
                bail!("--resume: this prepare is not the one {} holds ({})", dir.display(), differs.join("; "));
            }
            if let TokenizerKind::HuggingFace(_) = &opts.tokenizer {
                if meta.tokenizer(dir)? != tokenizer {
                    bail!("--resume: the Hugging Face tokenizer differs from the copy in {}", dir.display());
                }
            }
            meta
        }
        PrepareStart::Fresh if holds_shards => {
            bail!(
                "{} already holds shards ({}); use --resume to finish an unfinished prepare, or --force to delete them and start over",
                dir.display(),
                existing
                    .iter()
                    .filter(|p| p.extension().is_some_and(|x| x == "bin"))
                    .take(3)
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        PrepareStart::Fresh | PrepareStart::Force => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for f in existing {
                std::fs::remove_file(&f).with_context(|| format!("cannot remove {}", f.display()))?;
            }
            if let Tokenizer::HuggingFace(t) = &tokenizer {
                write_atomic(&dir.join(HF_TOKENIZER_FILE), t.json().as_bytes())?;
            }
            write_atomic(&dir.join(META_FILE), serde_json::to_string_pretty(&fresh)?.as_bytes())?;
            fresh
        }
    };
    remove_temporaries(dir);
    let start = meta.next.expect("an unfinished prepare says where it goes on");
    let mut done: u64 = meta.sources[..start.source.min(meta.sources.len())].iter().map(|s| s.bytes).sum::<u64>() + start.offset;
    let mut pieces = Pieces::new(&sources, start);
    let mut writer = Writer { dir, meta, tokenizer: &tokenizer, open: None, written_now: 0, stop_after: opts.stop_after_shards };
    let mut skip = start.skip;
    loop {
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        while batch_bytes < BATCH_BYTES {
            let Some(piece) = pieces.next_piece()? else { break };
            batch_bytes += piece.text.len();
            batch.push(piece);
        }
        if batch.is_empty() {
            break;
        }
        let tokens: Vec<Vec<u32>> = batch
            .par_iter()
            .map(|p| {
                let mut ids = Vec::with_capacity(p.text.len() / 3 + 1);
                if p.starts_document {
                    ids.push(separator);
                }
                ids.extend(tokenizer.encode(&p.text)?);
                Ok(ids)
            })
            .collect::<Result<_>>()?;
        for (piece, ids) in batch.iter().zip(&tokens) {
            if writer.write(piece, ids, std::mem::take(&mut skip))? {
                return Ok(writer.meta);
            }
            done = writer.meta.sources[..piece.source].iter().map(|s| s.bytes).sum::<u64>() + piece.next.0;
        }
        progress(done, total_bytes);
    }
    match writer.open.as_ref().map(|o| o.split) {
        Some(Split::Train) => writer.finish_shard(None)?,
        _ => {
            let held = writer.open.as_ref().map_or(0, |o| o.writer.tokens()) + writer.meta.shards.iter().map(|s| s.tokens).sum::<u64>();
            if writer.meta.shards.iter().all(|s| s.split == Split::Val) {
                bail!(
                    "the inputs hold {held} tokens, no more than the {} the val shard takes; give more text or a smaller --val-tokens",
                    writer.meta.val_tokens
                );
            }
            writer.finish_shard(None)?;
            // Every train shard was full: the last finish said where to go on; now it is done.
            writer.meta.complete = true;
            writer.meta.next = None;
            write_atomic(&dir.join(META_FILE), serde_json::to_string_pretty(&writer.meta)?.as_bytes())?;
        }
    }
    Ok(writer.meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_between_visible_characters_around_a_line_break() {
        assert_eq!(last_line_cut(b"ab\ncd\nef"), Some(6));
        assert_eq!(last_line_cut(b"ab\n cd\n\nef"), None);
        assert_eq!(last_line_cut(b"ab\n"), None);
    }

    #[test]
    fn the_built_in_tokenizers_give_a_cut_text_the_whole_texts_tokens() {
        let text = &crate::train::data::BUNDLED_CORPUS[..200_000];
        let mut points = vec![0];
        for i in 1..text.len() - 1 {
            let b = text.as_bytes();
            if b[i] == b'\n' && b[i - 1].is_ascii_graphic() && b[i + 1].is_ascii_graphic() && i + 1 - points.last().unwrap() > 5_000 {
                points.push(i + 1);
            }
        }
        points.push(text.len());
        assert!(points.len() > 10);
        let mut tokenizers: Vec<Tokenizer> =
            ["gpt2", "llama3", "cl100k", "o200k"].iter().map(|k| configured_tokenizer(&TokenizerKind::try_from(k.to_string()).unwrap()).unwrap()).collect();
        tokenizers.push(Tokenizer::train_bpe(&text[..50_000], 400));
        for t in tokenizers {
            let whole = t.encode(text).unwrap();
            let pieces: Vec<u32> = points.windows(2).flat_map(|w| t.encode(&text[w[0]..w[1]]).unwrap()).collect();
            assert_eq!(pieces, whole, "{}", t.describe());
        }
    }
}
