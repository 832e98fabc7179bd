//! What a run's data was, recorded in each checkpoint: a resumed run draws its batches
//! from (seed, step), so it continues exactly only on the same tokens. The fingerprint
//! names each file (a shard, or the text), its size and a CRC-32 of its content (a shard's
//! header and its first and last 64 KiB, read in a moment however large it is; a text
//! whole, since it is in memory anyway), so that `--resume` on a changed shard set is
//! refused with what changed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// How much of each end of a shard the fingerprint reads.
const SAMPLED_BYTES: u64 = 64 << 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePrint {
    pub name: String,
    pub bytes: u64,
    pub crc32: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPrint {
    pub files: Vec<FilePrint>,
}

impl DataPrint {
    /// A text corpus, `name` saying where it came from.
    pub fn of_text(name: &str, text: &str) -> DataPrint {
        DataPrint { files: vec![FilePrint { name: name.to_string(), bytes: text.len() as u64, crc32: crc32fast::hash(text.as_bytes()) }] }
    }

    /// Shard files, each named by its file name.
    pub fn of_files(paths: &[&Path]) -> Result<DataPrint> {
        let files = paths.iter().map(|p| file_print(p).with_context(|| format!("cannot read {} to fingerprint it", p.display()))).collect::<Result<_>>()?;
        Ok(DataPrint { files })
    }

    /// What differs from `earlier`, one line a file: gone, new, resized or rewritten.
    pub fn changes_since(&self, earlier: &DataPrint) -> Vec<String> {
        let find = |print: &DataPrint, name: &str| print.files.iter().find(|f| f.name == name).cloned();
        let mut changes: Vec<String> = earlier.files.iter().filter(|f| find(self, &f.name).is_none()).map(|f| format!("{} is gone", f.name)).collect();
        for now in &self.files {
            match find(earlier, &now.name) {
                None => changes.push(format!("{} is new", now.name)),
                Some(was) if was.bytes != now.bytes => changes.push(format!("{} has {} bytes, {} before", now.name, now.bytes, was.bytes)),
                Some(was) if was.crc32 != now.crc32 => changes.push(format!("{} has other content (same size)", now.name)),
                Some(_) => {}
            }
        }
        changes
    }
}

fn file_print(path: &Path) -> Result<FilePrint> {
    let mut file = File::open(path)?;
    let bytes = file.metadata()?.len();
    let mut hasher = crc32fast::Hasher::new();
    let mut head = Vec::new();
    (&mut file).take(SAMPLED_BYTES).read_to_end(&mut head)?;
    hasher.update(&head);
    if bytes > SAMPLED_BYTES {
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(bytes.saturating_sub(SAMPLED_BYTES).max(SAMPLED_BYTES)))?;
        file.read_to_end(&mut tail)?;
        hasher.update(&tail);
    }
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(FilePrint { name, bytes, crc32: hasher.finalize() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_the_files_gone_new_resized_and_rewritten() {
        let dir = std::env::temp_dir().join(format!("moegrad-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, c) = (dir.join("a.bin"), dir.join("b.bin"), dir.join("c.bin"));
        std::fs::write(&a, vec![1u8; 300_000]).unwrap();
        std::fs::write(&b, b"bee").unwrap();
        let before = DataPrint::of_files(&[&a, &b]).unwrap();
        assert!(DataPrint::of_files(&[&a, &b]).unwrap().changes_since(&before).is_empty());
        // The last byte of a large file is read; so is a middle one of a small file.
        let mut changed = vec![1u8; 300_000];
        changed[299_999] = 2;
        std::fs::write(&a, changed).unwrap();
        std::fs::write(&b, b"beee").unwrap();
        std::fs::write(&c, b"sea").unwrap();
        let after = DataPrint::of_files(&[&a, &b, &c]).unwrap();
        assert_eq!(after.changes_since(&before), ["a.bin has other content (same size)", "b.bin has 4 bytes, 3 before", "c.bin is new"]);
        assert_eq!(before.changes_since(&after)[0], "c.bin is gone");
        assert_eq!(DataPrint::of_text("t", "x").changes_since(&DataPrint::of_text("t", "y")), ["t has other content (same size)"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
