//! A split's tokens: one sequence in memory (a small text corpus) or many shards on disk.
//! Training windows never cross from one sequence into the next, and every token read is
//! checked against the vocabulary, so a shard with ids the model cannot embed is
//! named instead of crashing a kernel, without reading a corpus whole to check it first.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::data::shards::Shard;

enum Part {
    Memory(Vec<u32>),
    OnDisk(Shard),
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Memory(t) => t.len() as u64,
            Part::OnDisk(s) => s.len(),
        }
    }
}

pub struct Tokens {
    /// What the tokens are, for messages: a split of a text, or a shard folder.
    name: String,
    parts: Vec<Part>,
    /// Ids must be below this.
    vocab: usize,
}

impl Tokens {
    pub fn in_memory(name: &str, tokens: Vec<u32>, vocab: usize) -> Tokens {
        Tokens { name: name.to_string(), parts: vec![Part::Memory(tokens)], vocab }
    }

    pub fn shards(name: &str, shards: Vec<Shard>, vocab: usize) -> Tokens {
        Tokens { name: name.to_string(), parts: shards.into_iter().map(Part::OnDisk).collect(), vocab }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every token, over all sequences.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(Part::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The length of each sequence.
    pub fn sequence_lens(&self) -> Vec<u64> {
        self.parts.iter().map(Part::len).collect()
    }

    /// Where sequence `part` lives, for messages.
    fn location(&self, part: usize) -> String {
        match &self.parts[part] {
            Part::Memory(_) => self.name.clone(),
            Part::OnDisk(s) => s.path().display().to_string(),
        }
    }

    /// Tokens `start..start + count` of sequence `part`, each checked against the vocabulary.
    pub fn read(&self, part: usize, start: u64, count: usize) -> Result<Vec<u32>> {
        let ids = match &self.parts[part] {
            Part::Memory(t) => t[start as usize..start as usize + count].to_vec(),
            Part::OnDisk(s) => s.read(start, count)?,
        };
        if let Some(at) = ids.iter().position(|&i| i as usize >= self.vocab) {
            bail!(
                "{}: token {} (id {}) is beyond the vocabulary of {} tokens; the data was made with another tokenizer",
                self.location(part),
                start + at as u64,
                ids[at],
                self.vocab
            );
        }
        Ok(ids)
    }

    /// How many windows of `context + 1` tokens (inputs and the next-token targets) start
    /// in some sequence and end within it.
    pub fn window_count(&self, context: usize) -> u64 {
        self.parts.iter().map(|p| p.len().saturating_sub(context as u64)).sum()
    }

    /// Checks that a window of `context + 1` tokens fits.
    pub fn check_fits(&self, what: &str, context: usize) -> Result<()> {
        if self.window_count(context) == 0 {
            let longest = self.parts.iter().map(Part::len).max().unwrap_or(0);
            bail!("the {what} tokens ({}) hold no sequence longer than a context of {context} needs (the longest has {longest} tokens); use more data or a smaller model.context", self.name);
        }
        Ok(())
    }

    /// Window `index` of `window_count(context)`: `context + 1` tokens, numbered sequence
    /// by sequence, so that a corpus in one sequence gives the windows it always has.
    pub fn window(&self, index: u64, context: usize) -> Result<Vec<u32>> {
        let mut rest = index;
        for (part, p) in self.parts.iter().enumerate() {
            let here = p.len().saturating_sub(context as u64);
            if rest < here {
                return self.read(part, rest, context + 1);
            }
            rest -= here;
        }
        panic!("window {index} of {} is past the last of {}", self.name, self.window_count(context));
    }

    /// The shard files behind these tokens (none when in memory).
    pub fn files(&self) -> Vec<PathBuf> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::OnDisk(s) => Some(s.path().to_path_buf()),
                Part::Memory(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_stay_inside_their_sequence_and_ids_are_checked() {
        let t = Tokens { name: "test".into(), parts: vec![Part::Memory((0..5).collect()), Part::Memory((10..13).collect())], vocab: 100 };
        assert_eq!(t.window_count(2), 3 + 1);
        let all: Vec<Vec<u32>> = (0..4).map(|i| t.window(i, 2).unwrap()).collect();
        assert_eq!(all, vec![vec![0, 1, 2], vec![1, 2, 3], vec![2, 3, 4], vec![10, 11, 12]]);
        assert!(t.check_fits("training", 3).is_ok());
        assert!(t.check_fits("training", 5).unwrap_err().to_string().contains("longest has 5 tokens"));
        let small = Tokens { vocab: 11, ..t };
        let err = small.window(3, 2).unwrap_err().to_string();
        assert!(err.contains("token 1 (id 11) is beyond the vocabulary of 11"), "{err}");
    }
}
