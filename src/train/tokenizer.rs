//! Tokenizers: raw bytes (256 tokens, nothing to store); a byte-level BPE trained on the
//! run's own corpus; the standard vocabularies GPT-2, Llama 3, cl100k and o200k (their
//! rank files ship inside the `tiktoken` crate, so nothing is downloaded); or any Hugging
//! Face `tokenizer.json`. The whole tokenizer travels with a run (its BPE merges, its
//! standard name, or the Hugging Face file's text), so a checkpoint decodes on its own.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use moegrad_models::MAX_VOCAB;
use serde::{Deserialize, Serialize};

/// The run folder's copy of its tokenizer, in moegrad's own format (the checkpoints carry
/// it too). Not `tokenizer.json`, which is Hugging Face's format.
pub const TOKENIZER_FILE: &str = "moegrad-tokenizer.json";

/// What runs before 2026-12 called `TOKENIZER_FILE`: still one of a run's files.
pub const LEGACY_TOKENIZER_FILE: &str = "tokenizer.json";

/// The longest token a BPE may have, in bytes (real vocabularies stay under a hundred).
pub const MAX_TOKEN_BYTES: usize = 1 << 12;

/// Models pad their vocabulary up to a multiple of this, as nanoGPT pads GPT-2's 50,257
/// to 50,304: the embedding and head matmuls then tile evenly. The padding ids never
/// occur in data.
pub const VOCAB_PADDING: usize = 64;

/// `vocab` rounded up to a multiple of `VOCAB_PADDING`.
pub fn padded_vocab(vocab: usize) -> usize {
    vocab.div_ceil(VOCAB_PADDING) * VOCAB_PADDING
}

/// A vocabulary that ships with the `tiktoken` crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standard {
    /// GPT-2's (tiktoken's `r50k_base`), as llm.c and nanoGPT use.
    Gpt2,
    Llama3,
    /// GPT-4's.
    Cl100k,
    /// GPT-4o's.
    O200k,
}

impl Standard {
    pub const ALL: [Standard; 4] = [Standard::Gpt2, Standard::Llama3, Standard::Cl100k, Standard::O200k];

    pub fn name(self) -> &'static str {
        match self {
            Standard::Gpt2 => "gpt2",
            Standard::Llama3 => "llama3",
            Standard::Cl100k => "cl100k",
            Standard::O200k => "o200k",
        }
    }

    pub fn from_name(name: &str) -> Option<Standard> {
        Standard::ALL.into_iter().find(|s| s.name() == name)
    }

    pub(crate) fn encoding(self) -> &'static tiktoken::CoreBpe {
        let name = match self {
            Standard::Gpt2 => "r50k_base",
            Standard::Llama3 => "llama3",
            Standard::Cl100k => "cl100k_base",
            Standard::O200k => "o200k_base",
        };
        tiktoken::get_encoding(name).expect("the tiktoken crate ships this encoding")
    }

    /// One more than the largest token id, special tokens included.
    pub fn vocab_size(self) -> usize {
        match self {
            Standard::Gpt2 => 50_257,
            Standard::Llama3 => 128_256,
            Standard::Cl100k => 100_277,
            Standard::O200k => 200_019,
        }
    }

    /// The special token that goes before each document: `<|endoftext|>`, or Llama 3's
    /// `<|begin_of_text|>`.
    pub fn separator(self) -> u32 {
        match self {
            Standard::Gpt2 => 50_256,
            Standard::Llama3 => 128_000,
            Standard::Cl100k => 100_257,
            Standard::O200k => 199_999,
        }
    }
}

/// A Hugging Face tokenizer: the text of its `tokenizer.json` (what a run stores) and the
/// tokenizer parsed from it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "HuggingFaceFile", into = "HuggingFaceFile")]
pub struct HuggingFace {
    json: Arc<str>,
    parsed: Arc<tokenizers::Tokenizer>,
    vocab_size: usize,
}

#[derive(Serialize, Deserialize)]
struct HuggingFaceFile {
    json: String,
}

/// Special tokens that mark a document's end or start, in the order they are looked for.
const SEPARATOR_NAMES: [&str; 6] = ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|begin_of_text|>", "<s>"];

impl HuggingFace {
    /// Parses a `tokenizer.json`'s text.
    pub fn from_json(json: &str) -> Result<HuggingFace> {
        let parsed = tokenizers::Tokenizer::from_bytes(json.as_bytes()).map_err(|e| anyhow!("not a Hugging Face tokenizer.json: {e}"))?;
        let vocab_size = parsed.get_vocab(true).values().map(|&id| id as usize + 1).max().unwrap_or(0);
        if vocab_size == 0 || vocab_size > MAX_VOCAB {
            return Err(anyhow!("the Hugging Face tokenizer has {vocab_size} tokens; moegrad takes 1 to {MAX_VOCAB}"));
        }
        Ok(HuggingFace { json: json.into(), parsed: Arc::new(parsed), vocab_size })
    }

    /// Reads a `tokenizer.json` file.
    pub fn from_file(path: &std::path::Path) -> Result<HuggingFace> {
        let json = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read the tokenizer {}: {e}", path.display()))?;
        HuggingFace::from_json(&json).map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    /// The file's text, to write beside shards.
    pub fn json(&self) -> &str {
        &self.json
    }

    fn separator(&self) -> Option<u32> {
        SEPARATOR_NAMES.iter().find_map(|name| self.parsed.token_to_id(name))
    }
}

impl TryFrom<HuggingFaceFile> for HuggingFace {
    type Error = anyhow::Error;
    fn try_from(file: HuggingFaceFile) -> Result<HuggingFace> {
        HuggingFace::from_json(&file.json)
    }
}

impl From<HuggingFace> for HuggingFaceFile {
    fn from(t: HuggingFace) -> HuggingFaceFile {
        HuggingFaceFile { json: t.json.to_string() }
    }
}

impl PartialEq for HuggingFace {
    fn eq(&self, other: &HuggingFace) -> bool {
        self.json == other.json
    }
}

impl std::fmt::Debug for HuggingFace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HuggingFace({} tokens, {} bytes of JSON)", self.vocab_size, self.json.len())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tokenizer {
    Bytes,
    /// Token `256 + i` is the concatenation of the pair `merges[i]`.
    Bpe {
        merges: Vec<(u32, u32)>,
    },
    Tiktoken {
        encoding: Standard,
    },
    #[serde(rename = "huggingface")]
    HuggingFace(HuggingFace),
}

/// Text pieces BPE merges within: a word with its leading space, a run of digits, of
/// whitespace, or of other symbols. Merges never cross them, which keeps training fast.
fn pieces(text: &str) -> Vec<&str> {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Letter,
        Digit,
        Space,
        Other,
    }
    let class = |c: char| {
        if c.is_alphabetic() || c == '\'' {
            Class::Letter
        } else if c.is_numeric() {
            Class::Digit
        } else if c.is_whitespace() {
            Class::Space
        } else {
            Class::Other
        }
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev: Option<Class> = None;
    for (i, c) in text.char_indices() {
        let cl = class(c);
        // A single space joins the word after it (" the"), as in GPT-2.
        let joins_space = prev == Some(Class::Space) && cl == Class::Letter && text[start..i] == *" ";
        if prev.is_some() && prev != Some(cl) && !joins_space {
            out.push(&text[start..i]);
            start = i;
        }
        prev = Some(cl);
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn merge_pair(symbols: &[u32], pair: (u32, u32), token: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(symbols.len());
    let mut i = 0;
    while i < symbols.len() {
        if i + 1 < symbols.len() && (symbols[i], symbols[i + 1]) == pair {
            out.push(token);
            i += 2;
        } else {
            out.push(symbols[i]);
            i += 1;
        }
    }
    out
}

impl Tokenizer {
    /// Learns `vocab - 256` merges from `text`, the most frequent pair first (ties to the
    /// smaller pair, so training is deterministic).
    pub fn train_bpe(text: &str, vocab: usize) -> Tokenizer {
        assert!(vocab >= 256, "BPE vocabulary {vocab} must be at least 256 (the bytes)");
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for p in pieces(text) {
            *counts.entry(p).or_default() += 1;
        }
        let mut words: Vec<(Vec<u32>, usize)> = counts.into_iter().map(|(w, c)| (w.bytes().map(u32::from).collect(), c)).collect();
        words.sort();
        let mut merges = Vec::new();
        while 256 + merges.len() < vocab {
            let mut pairs: HashMap<(u32, u32), usize> = HashMap::new();
            for (w, c) in &words {
                for p in w.windows(2) {
                    *pairs.entry((p[0], p[1])).or_default() += c;
                }
            }
            let Some((&best, _)) = pairs.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))) else { break };
            let token = 256 + merges.len() as u32;
            for (w, _) in &mut words {
                if w.len() > 1 {
                    *w = merge_pair(w, best, token);
                }
            }
            merges.push(best);
        }
        Tokenizer::Bpe { merges }
    }

    /// Checks a tokenizer read from a file: every merge joins tokens that exist before it,
    /// the vocabulary is within `MAX_VOCAB`, and no token is longer than `MAX_TOKEN_BYTES`
    /// (merges of a token with itself double its length: forty of them would make the
    /// decoding table a terabyte).
    pub fn validate(&self) -> Result<(), String> {
        let Tokenizer::Bpe { merges } = self else { return Ok(()) };
        if 256 + merges.len() > MAX_VOCAB {
            return Err(format!("{} BPE merges exceed the largest vocabulary, {MAX_VOCAB}", merges.len()));
        }
        let mut lengths: Vec<usize> = vec![1; 256];
        for (i, &(a, b)) in merges.iter().enumerate() {
            let token = 256 + i;
            let (Some(&la), Some(&lb)) = (lengths.get(a as usize), lengths.get(b as usize)) else {
                return Err(format!("merge {i} joins ({a}, {b}), but only tokens below {token} exist before it"));
            };
            if la + lb > MAX_TOKEN_BYTES {
                return Err(format!("merge {i} makes a token of {} bytes, more than {MAX_TOKEN_BYTES}", la + lb));
            }
            lengths.push(la + lb);
        }
        Ok(())
    }

    /// One more than the largest token id the tokenizer produces.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Bpe { merges } => 256 + merges.len(),
            Tokenizer::Tiktoken { encoding } => encoding.vocab_size(),
            Tokenizer::HuggingFace(t) => t.vocab_size,
        }
    }

    /// The vocabulary a model for this tokenizer has: `vocab_size` padded up to a multiple
    /// of `VOCAB_PADDING`.
    pub fn model_vocab(&self) -> usize {
        padded_vocab(self.vocab_size())
    }

    /// What the tokenizer is, for messages: `gpt2`, `bpe (512 tokens)`, ...
    pub fn describe(&self) -> String {
        match self {
            Tokenizer::Bytes => "byte".to_string(),
            Tokenizer::Bpe { merges } => format!("bpe ({} tokens)", 256 + merges.len()),
            Tokenizer::Tiktoken { encoding } => encoding.name().to_string(),
            Tokenizer::HuggingFace(t) => format!("a Hugging Face tokenizer ({} tokens)", t.vocab_size),
        }
    }

    /// The token that goes before every document of a shard corpus; the byte tokenizer and
    /// moegrad's own BPE have none.
    pub fn separator(&self) -> Option<u32> {
        match self {
            Tokenizer::Bytes | Tokenizer::Bpe { .. } => None,
            Tokenizer::Tiktoken { encoding } => Some(encoding.separator()),
            Tokenizer::HuggingFace(t) => t.separator(),
        }
    }

    /// The token ids of `text`; special tokens written in the text are ordinary text (as
    /// tiktoken's `encode_ordinary`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(match self {
            Tokenizer::Bytes => text.bytes().map(u32::from).collect(),
            Tokenizer::Tiktoken { encoding } => encoding.encoding().encode(text),
            Tokenizer::HuggingFace(t) => t.parsed.encode_fast(text, false).map_err(|e| anyhow!("the Hugging Face tokenizer failed: {e}"))?.get_ids().to_vec(),
            Tokenizer::Bpe { merges } => {
                let rank: HashMap<(u32, u32), u32> = merges.iter().enumerate().map(|(i, &p)| (p, i as u32)).collect();
                let mut cache: HashMap<&str, Vec<u32>> = HashMap::new();
                let mut out = Vec::with_capacity(text.len() / 3);
                for piece in pieces(text) {
                    let ids = cache.entry(piece).or_insert_with(|| {
                        let mut w: Vec<u32> = piece.bytes().map(u32::from).collect();
                        // Apply the earliest-learned merge present until none applies.
                        while let Some((_, r)) = w.windows(2).filter_map(|p| rank.get(&(p[0], p[1])).map(|&r| ((p[0], p[1]), r))).min_by_key(|&(_, r)| r) {
                            w = merge_pair(&w, merges[r as usize], 256 + r);
                        }
                        w
                    });
                    out.extend_from_slice(ids);
                }
                out
            }
        })
    }

    /// The bytes of every token of the byte tokenizer or a BPE.
    fn token_bytes(merges: &[(u32, u32)]) -> Vec<Vec<u8>> {
        let mut table: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for &(a, b) in merges {
            let joined = [table[a as usize].clone(), table[b as usize].clone()].concat();
            table.push(joined);
        }
        table
    }

    /// The bytes `ids` stand for (ids beyond the vocabulary stand for none; a Hugging Face
    /// tokenizer's are its decoded text).
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let merges: &[(u32, u32)] = match self {
            Tokenizer::Bytes => &[],
            Tokenizer::Bpe { merges } => merges,
            Tokenizer::Tiktoken { encoding } => return encoding.encoding().decode(ids),
            Tokenizer::HuggingFace(t) => {
                let known: Vec<u32> = ids.iter().copied().filter(|&i| (i as usize) < t.vocab_size).collect();
                return t.parsed.decode(&known, false).unwrap_or_default().into_bytes();
            }
        };
        let table = Tokenizer::token_bytes(merges);
        ids.iter().flat_map(|&i| table.get(i as usize).cloned().unwrap_or_default()).collect()
    }

    /// Text of `ids`; invalid UTF-8 (a token cut mid-character) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer 1601 times";

    #[test]
    fn bytes_round_trip() {
        let t = Tokenizer::Bytes;
        assert_eq!(t.decode(&t.encode(TEXT).unwrap()), TEXT);
        assert_eq!(t.vocab_size(), 256);
    }

    #[test]
    fn bpe_learns_merges_shortens_text_and_round_trips() {
        let corpus = TEXT.repeat(20);
        let t = Tokenizer::train_bpe(&corpus, 300);
        assert_eq!(t.vocab_size(), 300);
        let ids = t.encode(TEXT).unwrap();
        assert!(ids.len() < TEXT.len() / 2, "{} tokens for {} bytes", ids.len(), TEXT.len());
        assert_eq!(t.decode(&ids), TEXT);
        assert_eq!(Tokenizer::train_bpe(&corpus, 300), t, "training is deterministic");
    }

    #[test]
    fn tokenizers_read_from_files_are_checked() {
        assert!(Tokenizer::train_bpe(&TEXT.repeat(5), 290).validate().is_ok());
        let forward = Tokenizer::Bpe { merges: vec![(65, 66), (256, 300)] };
        assert!(forward.validate().unwrap_err().contains("merge 1 joins (256, 300)"));
        let doubling = Tokenizer::Bpe { merges: (0..20).map(|i| if i == 0 { (65, 65) } else { (255 + i, 255 + i) }).collect() };
        assert!(doubling.validate().unwrap_err().contains("bytes, more than"));
    }

    /// Published ids: GPT-2's from its `encoder.json` (as the issue quotes them), cl100k's
    /// and o200k's from OpenAI's tiktoken, Llama 3's from Meta's tokenizer (which shares
    /// cl100k's first 100k tokens).
    #[test]
    fn standard_tokenizers_give_the_published_ids() {
        let cases: [(Standard, &str, &[u32]); 5] = [
            (Standard::Gpt2, "Hello world", &[15496, 995]),
            (Standard::Cl100k, "hello world", &[15339, 1917]),
            (Standard::Cl100k, "Hello world", &[9906, 1917]),
            (Standard::Llama3, "Hello world", &[9906, 1917]),
            (Standard::O200k, "hello world", &[24912, 2375]),
        ];
        for (encoding, text, ids) in cases {
            let t = Tokenizer::Tiktoken { encoding };
            assert_eq!(t.encode(text).unwrap(), ids, "{} {text:?}", encoding.name());
            assert_eq!(t.decode(ids), text);
            let special = t.separator().unwrap();
            assert!((special as usize) < t.vocab_size() && t.vocab_size() <= t.model_vocab() && t.model_vocab().is_multiple_of(VOCAB_PADDING));
        }
        assert_eq!(Tokenizer::Tiktoken { encoding: Standard::Gpt2 }.model_vocab(), 50_304, "as nanoGPT pads it");
        let gpt2 = Tokenizer::Tiktoken { encoding: Standard::Gpt2 };
        assert!(!gpt2.encode("<|endoftext|>").unwrap().contains(&50256), "special tokens in text are ordinary text");
        assert_eq!(gpt2.decode(&[50256]), "<|endoftext|>");
        let json = serde_json::to_string(&gpt2).unwrap();
        assert_eq!(json, r#"{"kind":"tiktoken","encoding":"gpt2"}"#);
        assert_eq!(serde_json::from_str::<Tokenizer>(&json).unwrap(), gpt2);
    }

    #[test]
    fn pieces_keep_a_leading_space_with_the_word() {
        assert_eq!(pieces("to be,  or 42"), vec!["to", " be", ",", "  ", "or", " ", "42"]);
    }
}
