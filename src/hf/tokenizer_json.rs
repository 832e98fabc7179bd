//! A run's tokenizer as Hugging Face's `tokenizer.json`. A Hugging Face tokenizer is its
//! own file; a standard vocabulary (GPT-2, Llama 3, cl100k, o200k) is converted from the
//! ranks the `tiktoken` crate ships: a byte-level BPE whose merges are read off the ranks
//! (each token's last merge is the pair the rank order builds it from), the encoding's
//! own split pattern, and whole pieces looked up before merging (`ignore_merges`), as
//! tiktoken does, so both give the same ids.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::train::tokenizer::{Standard, Tokenizer};

/// The split patterns of the original encodings (with the lookahead the tiktoken crate
/// emulates, which the tokenizers crate's regex engine has).
fn pattern(standard: Standard) -> &'static str {
    const CL100K: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match standard {
        Standard::Gpt2 => r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        Standard::Llama3 | Standard::Cl100k => CL100K,
        Standard::O200k => concat!(
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
        ),
    }
}

/// GPT-2's reversible map of bytes to printable characters, in which byte-level BPE
/// vocabularies are written.
fn byte_chars() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut out = ['\0'; 256];
    let mut next = 256;
    for b in 0..256u32 {
        out[b as usize] = if printable(b) {
            char::from_u32(b).expect("a Latin-1 code point")
        } else {
            next += 1;
            char::from_u32(next - 1).expect("a code point below 512")
        };
    }
    out
}

/// The two tokens BPE joins last to build `token` (of rank `rank`): merging the bytes by
/// the lowest rank first, as tiktoken does, stopping before rank `rank` itself.
fn last_merge<'a>(ranks: &HashMap<&[u8], u32>, token: &'a [u8], rank: u32) -> Option<(&'a [u8], &'a [u8])> {
    let mut bounds: Vec<usize> = (0..=token.len()).collect();
    loop {
        let best = (0..bounds.len() - 2).filter_map(|i| ranks.get(&token[bounds[i]..bounds[i + 2]]).map(|&r| (r, i))).filter(|&(r, _)| r < rank).min();
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => break,
        }
    }
    (bounds.len() == 3).then(|| (&token[..bounds[1]], &token[bounds[1]..]))
}

/// `tokenizer.json` for a standard vocabulary.
fn standard_json(standard: Standard) -> String {
    let bpe = standard.encoding();
    let chars = byte_chars();
    let show = |bytes: &[u8]| bytes.iter().map(|&b| chars[b as usize]).collect::<String>();
    let tokens: Vec<(u32, Vec<u8>)> = (0..bpe.vocab_size() as u32).map(|id| (id, bpe.decode(&[id]))).collect();
    let ranks: HashMap<&[u8], u32> = tokens.iter().map(|(id, bytes)| (bytes.as_slice(), *id)).collect();
    let vocab: serde_json::Map<String, Value> = tokens.iter().map(|(id, bytes)| (show(bytes), json!(id))).collect();
    let merges: Vec<Value> = tokens
        .iter()
        .filter(|(_, bytes)| bytes.len() > 1)
        .filter_map(|(id, bytes)| last_merge(&ranks, bytes, *id))
        .map(|(a, b)| json!([show(a), show(b)]))
        .collect();
    // The tokenizers crate numbers added tokens consecutively, so every unused id below
    // the last special token gets a name: Llama 3's own for its reserved ids (numbered in
    // order), the same form for cl100k's and o200k's gaps.
    let mut reserved = 0..;
    let added: Vec<Value> = (bpe.vocab_size() as u32..standard.vocab_size() as u32)
        .map(|id| match String::from_utf8(bpe.decode(&[id])).ok().filter(|s| !s.is_empty()) {
            Some(content) => (id, content),
            None => (id, format!("<|reserved_special_token_{}|>", reserved.next().expect("unbounded"))),
        })
        .map(
            |(id, content)| json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}),
        )
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern(standard)}, "behavior": "Isolated", "invert": false},
            byte_level,
        ]},
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": true, "vocab": vocab, "merges": merges,
        },
    })
    .to_string()
}

/// The `tokenizer.json` text of `tokenizer`, or why it has none: moegrad's byte
/// tokenizer and its own BPE split text by rules no Hugging Face pre-tokenizer states.
pub fn tokenizer_json(tokenizer: &Tokenizer) -> Result<String, String> {
    match tokenizer {
        Tokenizer::HuggingFace(hf) => Ok(hf.json().to_string()),
        Tokenizer::Tiktoken { encoding } => Ok(standard_json(*encoding)),
        Tokenizer::Bytes | Tokenizer::Bpe { .. } => Err(format!(
            "the run's tokenizer ({}) has no Hugging Face equivalent; feed the model token ids (moegrad-tokenizer.json holds the tokenizer)",
            tokenizer.describe()
        )),
    }
}
