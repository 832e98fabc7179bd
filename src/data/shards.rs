//! Token shards in llm.c's format, so that shards from llm.c's and nanoGPT-style prepare
//! scripts are read as they are: a header of 256 little-endian int32 (magic 20240520, a
//! version, the token count, the rest zero), then the tokens. Version 1 stores them as
//! uint16 (vocabularies up to 65,536, as llm.c does); version 2, moegrad's own, as uint32
//! for larger ones (Llama 3, cl100k, o200k).
//!
//! A shard is never read whole: a window of tokens is read at its offset (`pread`), so it
//! costs its own bytes. Not a memory map: a mapped file shrunk underneath a reader kills it
//! with SIGBUS, where a read returns an error. Every read first checks that the file is
//! still the one opened (same length and modification time), so a shard truncated or
//! rewritten in place while a run reads it is named in an error, and the trainer stops with
//! its last checkpoint kept, instead of training on other tokens.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

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

/// What identifies the contents of an open file cheaply: its length and modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    bytes: u64,
    modified: Option<SystemTime>,
}

fn stamp(file: &File) -> std::io::Result<Stamp> {
    let meta = file.metadata()?;
    Ok(Stamp { bytes: meta.len(), modified: meta.modified().ok() })
}

/// Fills `buf` from `offset`, without moving a shared cursor (reads may come from several threads).
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => (buf, offset) = (&mut buf[n..], offset + n as u64),
        }
    }
    Ok(())
}

/// A shard on disk, open for reading.
pub struct Shard {
    path: PathBuf,
    file: File,
    width: TokenWidth,
    len: u64,
    stamp: Stamp,
}

impl Shard {
    /// Opens the shard at `path`, checking its header against its size.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = File::open(path).with_context(|| format!("cannot open the shard {}", path.display()))?;
        let stamp = stamp(&file).with_context(|| format!("cannot read the shard {}", path.display()))?;
        let size = stamp.bytes;
        if size < HEADER_BYTES as u64 {
            bail!("shard {}: {size} bytes, shorter than the {HEADER_BYTES}-byte header", path.display());
        }
        let mut head = vec![0u8; HEADER_BYTES];
        read_at(&file, &mut head, 0).with_context(|| format!("cannot read the header of the shard {}", path.display()))?;
        let int = |i: usize| i32::from_le_bytes(head[4 * i..4 * i + 4].try_into().expect("4 bytes"));
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
        if size != expected {
            let held = (size - HEADER_BYTES as u64) / width.bytes() as u64;
            bail!(
                "shard {}: its header counts {len} tokens but the file holds {held} ({size} bytes, {expected} expected); truncated or damaged",
                path.display()
            );
        }
        Ok(Shard { path: path.to_path_buf(), file, width, len, stamp })
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

    /// How many bytes a token takes.
    pub fn width(&self) -> TokenWidth {
        self.width
    }

    /// The error for a shard that is no longer the file that was opened.
    fn changed(&self, now: Option<Stamp>) -> anyhow::Error {
        let now = now.map_or("it can no longer be read".to_string(), |n| match n.bytes == self.stamp.bytes {
            true => format!("it was rewritten in place ({} bytes, a new modification time)", n.bytes),
            false => format!("it now has {} bytes, {} when opened", n.bytes, self.stamp.bytes),
        });
        anyhow::anyhow!(
            "shard {} changed while this run was reading it: {now}. A shard must stay as it was while a run reads it; write a new folder with `moegrad data prepare` instead",
            self.path.display()
        )
    }

    /// Tokens `start..start + count`, or an error naming the file when it is no longer the
    /// one opened.
    pub fn read(&self, start: u64, count: usize) -> Result<Vec<u32>> {
        assert!(start + count as u64 <= self.len, "read past the end of {}", self.path.display());
        let now = stamp(&self.file).ok();
        if now != Some(self.stamp) {
            return Err(self.changed(now));
        }
        let w = self.width.bytes();
        let mut bytes = vec![0u8; count * w];
        // Shrunk between the check and the read: the read comes back short.
        read_at(&self.file, &mut bytes, HEADER_BYTES as u64 + start * w as u64).map_err(|_| self.changed(stamp(&self.file).ok()))?;
        Ok(match self.width {
            TokenWidth::U16 => bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32).collect(),
            TokenWidth::U32 => bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        })
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
            assert_eq!(shard.read(0, ids.len()).unwrap(), ids);
            assert_eq!(shard.read(2, 2).unwrap(), ids[2..4]);
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

    #[test]
    fn a_shard_shrunk_or_rewritten_while_open_is_named_instead_of_read() {
        let d = dir("changed");
        let path = d.join("s.bin");
        let mut w = ShardWriter::create(&path, TokenWidth::U16).unwrap();
        w.push(&(0..1000).collect::<Vec<u32>>()).unwrap();
        w.finish().unwrap();
        let whole = std::fs::read(&path).unwrap();
        let shard = Shard::open(&path).unwrap();
        assert_eq!(shard.read(990, 10).unwrap(), (990..1000).collect::<Vec<u32>>());
        // Shrunk, as `truncate` does to a running run's shard: no SIGBUS, an error.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(HEADER_BYTES as u64 + 100).unwrap();
        let err = shard.read(0, 10).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.contains("changed while this run was reading it")
                && err.contains("now has 1124 bytes, 3024 when opened"),
            "{err}"
        );
        // Rewritten in place to its old length: the modification time tells.
        std::fs::write(&path, &whole).unwrap();
        let shard = Shard::open(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut bytes = whole.clone();
        bytes[HEADER_BYTES] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = shard.read(0, 10).unwrap_err().to_string();
        assert!(err.contains("rewritten in place"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
