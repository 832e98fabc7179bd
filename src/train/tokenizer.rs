//! Tokenizers: raw bytes (256 tokens, nothing to store), or a byte-level BPE trained on
//! the run's own corpus and saved next to the run so it is reproducible.

use std::collections::HashMap;

use moegrad_models::MAX_VOCAB;
use serde::{Deserialize, Serialize};

/// The longest token a BPE may have, in bytes (real vocabularies stay under a hundred).
pub const MAX_TOKEN_BYTES: usize = 1 << 12;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tokenizer {
    Bytes,
    /// Token `256 + i` is the concatenation of the pair `merges[i]`.
    Bpe {
        merges: Vec<(u32, u32)>,
    },
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

    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Bpe { merges } => 256 + merges.len(),
        }
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            Tokenizer::Bytes => text.bytes().map(u32::from).collect(),
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
        }
    }

    /// The bytes of every token.
    fn token_bytes(&self) -> Vec<Vec<u8>> {
        let mut table: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        if let Tokenizer::Bpe { merges } = self {
            for &(a, b) in merges {
                let joined = [table[a as usize].clone(), table[b as usize].clone()].concat();
                table.push(joined);
            }
        }
        table
    }

    /// Text of `ids`; invalid UTF-8 (a token cut mid-character) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let table = self.token_bytes();
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| table.get(i as usize).cloned().unwrap_or_default()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer 1601 times";

    #[test]
    fn bytes_round_trip() {
        let t = Tokenizer::Bytes;
        assert_eq!(t.decode(&t.encode(TEXT)), TEXT);
        assert_eq!(t.vocab_size(), 256);
    }

    #[test]
    fn bpe_learns_merges_shortens_text_and_round_trips() {
        let corpus = TEXT.repeat(20);
        let t = Tokenizer::train_bpe(&corpus, 300);
        assert_eq!(t.vocab_size(), 300);
        let ids = t.encode(TEXT);
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

    #[test]
    fn pieces_keep_a_leading_space_with_the_word() {
        assert_eq!(pieces("to be,  or 42"), vec!["to", " be", ",", "  ", "or", " ", "42"]);
    }
}
