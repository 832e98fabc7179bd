//! Token shards in llm.c's format, so that shards from llm.c's and nanoGPT-style prepare
//! scripts are read as they are: a header of 256 little-endian int32 (magic 20240520, a
//! version, the token count, the rest zero), then the tokens. Version 1 stores them as
//! uint16 (vocabularies up to 65,536, as llm.c does); version 2, moegrad's own, as uint32
//! for larger ones (Llama 3, cl100k, o200k).
//!
//! A shard is memory-mapped, never read whole: a window of tokens touches only its pages.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

use crate::durable::AtomicFile;

pub const MAGIC: i32 = 20240520;
pub const HEADER_BYTES: usize = 256 * 4;

/// How a shard stores a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    /// The narrowest width that holds every id below `vocab`.
    pub fn for_vocab(vocab: usize) -> TokenWidth {
        if vocab <= 1 << 16 {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }

    fn version(self) -> i32 {
        match self {
            TokenWidth::U16 => 1,
            TokenWidth::U32 => 2,
        }
    }
}

fn header(width: TokenWidth, tokens: u64) -> Result<Vec<u8>> {
    let Ok(count) = i32::try_from(tokens) else { bail!("a shard holds at most {} tokens, not {tokens}", i32::MAX) };
    let mut ints = [0i32; 256];
    (ints[0], ints[1], ints[2]) = (MAGIC, width.version(), count);
    Ok(ints.iter().flat_map(|i| i.to_le_bytes()).collect())
}

/// A shard being written: it appears under its name only when `finish` is called, with
/// the header's count filled in, so an interrupted writer never leaves a shard that looks whole.
pub struct ShardWriter {
    file: AtomicFile,
    path: PathBuf,
    width: TokenWidth,
    tokens: u64,
}

impl ShardWriter {
    pub fn create(path: &Path, width: TokenWidth) -> Result<ShardWriter> {
        let mut file = AtomicFile::create(path)?;
        file.write_all(&header(width, 0)?).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(ShardWriter { file, path: path.to_path_buf(), width, tokens: 0 })
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    pub fn push(&mut self, ids: &[u32]) -> Result<()> {
        let bytes: Vec<u8> = match self.width {
            TokenWidth::U16 => ids.iter().flat_map(|&i| (i as u16).to_le_bytes()).collect(),
            TokenWidth::U32 => ids.iter().flat_map(|&i| i.to_le_bytes()).collect(),
        };
        if self.width == TokenWidth::U16 && ids.iter().any(|&i| i > u16::MAX as u32) {
            bail!("token id {} does not fit the uint16 shard {}", ids.iter().max().expect("not empty"), self.path.display());
        }
        self.file.write_all(&bytes).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.tokens += ids.len() as u64;
        Ok(())
    }

    /// Writes the header's token count, flushes and renames the shard into place.
    pub fn finish(mut self) -> Result<u64> {
        let head = header(self.width, self.tokens)?;
        let file = self.file.inner()?;
        file.seek(SeekFrom::Start(0)).and_then(|_| file.write_all(&head)).with_context(|| format!("cannot write {}", self.path.display()))?;
        file.seek(SeekFrom::End(0))?;
        self.file.commit()?;
        Ok(self.tokens)
    }
}

/// A shard on disk, memory-mapped.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    width: TokenWidth,
    len: u64,
}

impl Shard {
    /// Maps the shard at `path`, checking its header against its size.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open the shard {}", path.display()))?;
        // Safety: the map is only read; a shard changed under a running trainer gives it
        // wrong tokens (which the id check may catch), not undefined behaviour in Rust's
        // sense beyond what a concurrent writer of any read file would cause.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map the shard {}", path.display()))?;
        // Training reads random windows: no read-ahead, and no mapping of the neighbouring
        // pages on a fault, so a window costs its own pages of memory and no more.
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Random);
        let size = map.len();
        if size < HEADER_BYTES {
            bail!("shard {}: {size} bytes, shorter than the {HEADER_BYTES}-byte header", path.display());
        }
        let int = |i: usize| i32::from_le_bytes(map[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        if int(0) != MAGIC {
            bail!("shard {}: magic number {} is not llm.c's {MAGIC}; not a token shard", path.display(), int(0));
        }
        let width = match int(1) {
            1 => TokenWidth::U16,
            2 => TokenWidth::U32,
            v => bail!("shard {}: version {v} is unknown (1: uint16 tokens, 2: uint32)", path.display()),
        };
        let Ok(len) = u64::try_from(int(2)) else { bail!("shard {}: its header gives a negative token count, {}", path.display(), int(2)) };
        let expected = HEADER_BYTES as u64 + len * width.bytes() as u64;
        if size as u64 != expected {
            let held = (size - HEADER_BYTES) / width.bytes();
            bail!(
                "shard {}: its header counts {len} tokens but the file holds {held} ({size} bytes, {expected} expected); truncated or damaged",
                path.display()
            );
        }
        Ok(Shard { path: path.to_path_buf(), map, width, len })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens `start..start + count`.
    pub fn read(&self, start: u64, count: usize) -> Vec<u32> {
        assert!(start + count as u64 <= self.len, "read past the end of {}", self.path.display());
        let w = self.width.bytes();
        let bytes = &self.map[HEADER_BYTES + start as usize * w..HEADER_BYTES + (start as usize + count) * w];
        match self.width {
            TokenWidth::U16 => bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32).collect(),
            TokenWidth::U32 => bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("moegrad-shards-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn shards_round_trip_in_both_widths_with_llm_c_headers() {
        let d = dir("round-trip");
        for (width, ids) in [(TokenWidth::U16, vec![0, 1, 65_535, 50_256, 7]), (TokenWidth::U32, vec![0, 128_255, 200_018, 3])] {
            let path = d.join(format!("{width:?}.bin"));
            let mut w = ShardWriter::create(&path, width).unwrap();
            w.push(&ids[..2]).unwrap();
            w.push(&ids[2..]).unwrap();
            assert_eq!(w.finish().unwrap(), ids.len() as u64);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len(), HEADER_BYTES + ids.len() * width.bytes());
            assert_eq!(i32::from_le_bytes(bytes[0..4].try_into().unwrap()), 20240520);
            assert_eq!(i32::from_le_bytes(bytes[8..12].try_into().unwrap()), ids.len() as i32);
            let shard = Shard::open(&path).unwrap();
            assert_eq!(shard.len(), ids.len() as u64);
            assert_eq!(shard.read(0, ids.len()), ids);
            assert_eq!(shard.read(2, 2), ids[2..4]);
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_shards_are_refused_naming_the_file_and_the_fault() {
        let d = dir("damaged");
        let good = d.join("good.bin");
        let mut w = ShardWriter::create(&good, TokenWidth::U16).unwrap();
        w.push(&[1, 2, 3, 4]).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("magic", [&[0u8, 0, 0, 0][..], &bytes[4..]].concat(), "magic number 0"),
            ("truncated", bytes[..bytes.len() - 3].to_vec(), "counts 4 tokens but the file holds 2"),
            ("version", [&bytes[..4], &9i32.to_le_bytes()[..], &bytes[8..]].concat(), "version 9 is unknown"),
            ("short", bytes[..100].to_vec(), "shorter than the 1024-byte header"),
        ];
        for (name, content, expected) in cases {
            let path = d.join(format!("{name}.bin"));
            std::fs::write(&path, content).unwrap();
            let err = Shard::open(&path).err().unwrap().to_string();
            assert!(err.contains(expected) && err.contains(&path.display().to_string()), "{name}: {err}");
        }
        assert!(ShardWriter::create(&d.join("wide.bin"), TokenWidth::U16).unwrap().push(&[70_000]).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
