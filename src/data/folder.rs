//! A folder of token shards: one that `moegrad data prepare` wrote (its `meta.json` names
//! the tokenizer, the shards with their token and byte counts, and the sources), or one of
//! llm.c's (`*_val_*.bin` and `*_train_*.bin`, no meta: the config names the tokenizer).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::shards::{Shard, TokenWidth};
use crate::data::tokens::Tokens;
use crate::train::config::TokenizerKind;
use crate::train::tokenizer::{HuggingFace, Standard, Tokenizer};

pub const META_FILE: &str = "meta.json";
/// The copy of a Hugging Face tokenizer that `prepare` keeps beside its shards.
pub const HF_TOKENIZER_FILE: &str = "tokenizer.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Val,
    Train,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub split: Split,
    pub tokens: u64,
    /// Bytes of text the shard's tokens stand for (separators aside): bits per byte needs them.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: String,
    pub bytes: u64,
}

/// Where an unfinished prepare goes on: the piece of text starting at byte `offset` (line
/// `line`, for messages) of source `source`, whose first `skip` tokens are written.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumePoint {
    pub source: usize,
    pub offset: u64,
    pub line: u64,
    pub skip: usize,
}

/// `meta.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardMeta {
    pub format: u32,
    pub name: String,
    /// A standard tokenizer's name, or `tokenizer.json` (a Hugging Face tokenizer, copied
    /// into the folder).
    pub tokenizer: String,
    pub vocab_size: usize,
    /// The token before each document.
    pub separator: u32,
    /// 2 (uint16, llm.c's version 1) or 4 (uint32, version 2).
    pub token_bytes: usize,
    pub shard_tokens: u64,
    pub val_tokens: u64,
    pub shards: Vec<ShardEntry>,
    pub sources: Vec<SourceFile>,
    /// False while a prepare is unfinished; `next` says where it goes on.
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<ResumePoint>,
}

impl ShardMeta {
    pub fn read(dir: &Path) -> Result<ShardMeta> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a shard folder's meta.json", path.display()))
    }

    /// The format of `meta.json` this moegrad writes and reads.
    pub const FORMAT: u32 = 1;

    /// Checks every field against `tokenizer` and itself (the shards' headers are checked
    /// as they are opened): a false vocabulary, width or separator, byte counts that would
    /// make bits per byte meaningless, and shard names that leave the folder are refused.
    pub fn check(&self, dir: &Path, tokenizer: &Tokenizer) -> Result<()> {
        let at = dir.join(META_FILE);
        let refuse = |what: String| Err(anyhow!("{}: {what}; the folder was not written by `moegrad data prepare` as it stands", at.display()));
        if self.format != Self::FORMAT {
            return refuse(format!("format {} is not the {} this moegrad reads", self.format, Self::FORMAT));
        }
        if self.vocab_size != tokenizer.vocab_size() {
            return refuse(format!("vocab_size = {} but its tokenizer {} has {} tokens", self.vocab_size, tokenizer.describe(), tokenizer.vocab_size()));
        }
        let width = TokenWidth::for_vocab(self.vocab_size).bytes();
        if self.token_bytes != width {
            return refuse(format!("token_bytes = {} but a vocabulary of {} tokens is stored in {width} bytes a token", self.token_bytes, self.vocab_size));
        }
        if self.separator as usize >= self.vocab_size {
            return refuse(format!("separator = {} is not a token of the {}-token vocabulary", self.separator, self.vocab_size));
        }
        if tokenizer.separator() != Some(self.separator) {
            let theirs = tokenizer.separator().map_or("no token".to_string(), |t| format!("token {t}"));
            return refuse(format!("separator = {} but {} separates documents with {theirs}", self.separator, tokenizer.describe()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for entry in &self.shards {
            let plain = Path::new(&entry.file).file_name().is_some_and(|n| n == std::ffi::OsStr::new(&entry.file));
            if !plain || entry.file.starts_with('.') {
                return refuse(format!("shard file {:?} is not a plain file name inside the folder", entry.file));
            }
            if !seen.insert(&entry.file) {
                return refuse(format!("shard file {:?} is listed twice", entry.file));
            }
            if entry.tokens > 0 && entry.bytes == 0 {
                return refuse(format!("shard {} holds {} tokens of 0 bytes of text (bits per byte needs its bytes)", entry.file, entry.tokens));
            }
        }
        Ok(())
    }

    /// The tokenizer the shards were made with.
    pub fn tokenizer(&self, dir: &Path) -> Result<Tokenizer> {
        match Standard::from_name(&self.tokenizer) {
            Some(encoding) => Ok(Tokenizer::Tiktoken { encoding }),
            None if self.tokenizer == HF_TOKENIZER_FILE => Ok(Tokenizer::HuggingFace(HuggingFace::from_file(&dir.join(HF_TOKENIZER_FILE))?)),
            None => bail!("{}: tokenizer {:?} is neither a standard one nor {HF_TOKENIZER_FILE}", dir.join(META_FILE).display(), self.tokenizer),
        }
    }
}

/// Whether `path` is a shard folder: a `meta.json`, or llm.c's `.bin` shards.
pub fn is_shard_folder(path: &Path) -> bool {
    path.is_dir() && (path.join(META_FILE).is_file() || !llm_c_shards(path).unwrap_or_default().is_empty())
}

/// llm.c's shard files in `dir`, each with its split, in name order.
fn llm_c_shards(dir: &Path) -> Result<Vec<(Split, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !name.ends_with(".bin") || name.starts_with('.') {
            continue;
        }
        if name.contains("_val") {
            out.push((Split::Val, path));
        } else if name.contains("_train") {
            out.push((Split::Train, path));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// An opened shard folder.
pub struct ShardFolder {
    pub dir: PathBuf,
    /// `None` for llm.c's shards.
    pub meta: Option<ShardMeta>,
    pub tokenizer: Tokenizer,
    val: Vec<PathBuf>,
    train: Vec<PathBuf>,
}

impl ShardFolder {
    /// Opens the folder. `configured` is the run's `data.tokenizer` where the config names
    /// one: llm.c's shards need it (bytes without), and a prepared folder's must be it.
    /// Every field of a `meta.json` is checked against the tokenizer and, as each shard
    /// is opened, against the shard's own header: a folder that lies is refused by field.
    pub fn open(dir: &Path, configured: Option<&TokenizerKind>) -> Result<ShardFolder> {
        let (meta, tokenizer, files) = if dir.join(META_FILE).is_file() {
            let meta = ShardMeta::read(dir)?;
            if !meta.complete {
                bail!(
                    "{} holds an unfinished prepare ({} shards written); finish it with `moegrad data prepare --resume --out {} ...`",
                    dir.display(),
                    meta.shards.len(),
                    dir.display()
                );
            }
            let tokenizer = meta.tokenizer(dir)?;
            meta.check(dir, &tokenizer)?;
            if let Some(configured) = configured {
                let asked = configured_tokenizer(configured)?;
                if asked != tokenizer {
                    bail!(
                        "data.tokenizer = \"{configured}\" but the shards in {} were made with {}; leave data.tokenizer out to use the folder's",
                        dir.display(),
                        tokenizer.describe()
                    );
                }
            }
            let files = meta.shards.iter().map(|s| (s.split, dir.join(&s.file))).collect();
            (Some(meta), tokenizer, files)
        } else {
            let files = llm_c_shards(dir)?;
            if files.is_empty() {
                bail!("{} has neither a meta.json nor llm.c shards (*_val_*.bin, *_train_*.bin)", dir.display());
            }
            (None, configured_tokenizer(configured.unwrap_or(&TokenizerKind::Byte))?, files)
        };
        let pick = |split| files.iter().filter(|(s, _)| *s == split).map(|(_, p)| p.clone()).collect::<Vec<_>>();
        let (val, train) = (pick(Split::Val), pick(Split::Train));
        if val.is_empty() {
            bail!("{} has no val shard (the held-out tokens, a file named like N_val_000000.bin)", dir.display());
        }
        if train.is_empty() {
            bail!("{} has no train shard (files named like N_train_000001.bin)", dir.display());
        }
        Ok(ShardFolder { dir: dir.to_path_buf(), meta, tokenizer, val, train })
    }

    fn map(&self, files: &[PathBuf], what: &str) -> Result<Tokens> {
        let shards = files.iter().map(|f| Shard::open(f)).collect::<Result<Vec<_>>>()?;
        if let Some(meta) = &self.meta {
            for shard in &shards {
                let name = shard.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let entry = meta.shards.iter().find(|e| e.file == name).expect("the shard came from meta.json");
                if entry.tokens != shard.len() {
                    bail!("{}: meta.json counts {} tokens but the shard holds {}", shard.path().display(), entry.tokens, shard.len());
                }
                if meta.token_bytes != shard.width().bytes() {
                    bail!(
                        "{}: meta.json says token_bytes = {} but the shard's header stores {}-byte tokens",
                        shard.path().display(),
                        meta.token_bytes,
                        shard.width().bytes()
                    );
                }
            }
        }
        Ok(Tokens::shards(&format!("the {what} shards of {}", self.dir.display()), shards, self.tokenizer.vocab_size()))
    }

    pub fn train_tokens(&self) -> Result<Tokens> {
        self.map(&self.train, "train")
    }

    pub fn val_tokens(&self) -> Result<Tokens> {
        self.map(&self.val, "val")
    }

    /// Bytes of text per held-out token, when the folder records bytes (llm.c's does not).
    pub fn val_bytes_per_token(&self) -> Option<f64> {
        let meta = self.meta.as_ref()?;
        let (tokens, bytes) = meta.shards.iter().filter(|s| s.split == Split::Val).fold((0, 0), |(t, b), s| (t + s.tokens, b + s.bytes));
        (tokens > 0).then(|| bytes as f64 / tokens as f64)
    }
}

/// The tokenizer `data.tokenizer` names, for shards (a BPE is trained on a run's own text,
/// so it cannot describe shards).
pub fn configured_tokenizer(kind: &TokenizerKind) -> Result<Tokenizer> {
    Ok(match kind {
        TokenizerKind::Byte => Tokenizer::Bytes,
        TokenizerKind::Bpe => bail!("data.tokenizer = \"bpe\" is trained on a text corpus and cannot read shards; set the tokenizer they were made with"),
        TokenizerKind::Standard(encoding) => Tokenizer::Tiktoken { encoding: *encoding },
        TokenizerKind::HuggingFace(path) => Tokenizer::HuggingFace(HuggingFace::from_file(Path::new(path)).map_err(|e| anyhow!("data.tokenizer: {e}"))?),
    })
}
