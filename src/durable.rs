//! Files that are either wholly old or wholly new: written to a temporary file of a name
//! no other writer uses, flushed to the disk, renamed over the target, and the folder
//! flushed so the rename itself survives a power cut. A crash at any moment leaves the
//! previous version in place (and at worst a stray temporary file, which nothing reads).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// A temporary name beside `path`, unique to this process and call, so that two writers
/// of the same file (two threads, or two processes on a shared folder) never share one.
fn temporary_beside(path: &Path) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map_or("file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.{}.tmp", std::process::id(), CALLS.fetch_add(1, Ordering::Relaxed)))
}

/// Whether `name` is one of the temporary names `write_atomic` and `AtomicFile` use, which
/// a crash may leave behind and nothing reads.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", file.tmp.display()))?;
    file.commit()
}

/// A file written in pieces (a shard of millions of tokens) that appears at its path only
/// when `commit` is called: until then it lives under a temporary name, and dropping it
/// uncommitted removes it.
pub struct AtomicFile {
    file: Option<std::io::BufWriter<std::fs::File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<AtomicFile> {
        let tmp = temporary_beside(path);
        let file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        Ok(AtomicFile { file: Some(std::io::BufWriter::with_capacity(1 << 20, file)), tmp, path: path.to_path_buf() })
    }

    /// The file so far, to seek in and rewrite (a header filled in at the end).
    pub fn inner(&mut self) -> Result<&mut std::fs::File> {
        let writer = self.file.as_mut().expect("an AtomicFile is open until committed");
        writer.flush().with_context(|| format!("cannot write {}", self.tmp.display()))?;
        Ok(writer.get_mut())
    }

    /// Flushes the file to disk, renames it into place and flushes the folder.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.file.take().expect("an AtomicFile is committed once");
        let written = (|| {
            let file = writer.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {}", self.tmp.display()))?;
            file.sync_all().with_context(|| format!("cannot flush {} to disk", self.tmp.display()))?;
            std::fs::rename(&self.tmp, &self.path).with_context(|| format!("cannot move {} into place", self.path.display()))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        written?;
        sync_folder(self.path.parent().unwrap_or(Path::new(".")));
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.as_mut().expect("an AtomicFile is open until committed").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("an AtomicFile is open until committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Flushes a folder's entries (the rename) to disk. Only Unix can open a folder for this;
/// elsewhere the rename's own guarantees are all there is.
fn sync_folder(folder: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = std::fs::File::open(if folder.as_os_str().is_empty() { Path::new(".") } else { folder }) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = folder;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("moegrad-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.json");
        write_atomic(&file, b"old").unwrap();
        write_atomic(&file, b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("a.json")]);
        assert!(write_atomic(&dir.join("no-such-folder").join("b"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_names_differ_between_calls() {
        let p = Path::new("/x/checkpoint.safetensors");
        assert_ne!(temporary_beside(p), temporary_beside(p));
        assert_eq!(temporary_beside(p).parent(), p.parent());
        assert!(is_temporary(&temporary_beside(p).file_name().unwrap().to_string_lossy()));
        assert!(!is_temporary("checkpoint.safetensors"));
    }

    #[test]
    fn a_file_written_in_pieces_appears_only_when_committed() {
        let dir = std::env::temp_dir().join(format!("moegrad-durable-pieces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("shard.bin");
        let mut f = AtomicFile::create(&file).unwrap();
        f.write_all(b"abc").unwrap();
        assert!(!file.exists(), "an uncommitted file is not in place");
        drop(f);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "dropping it uncommitted removes the temporary");
        let mut f = AtomicFile::create(&file).unwrap();
        f.write_all(b"abcd").unwrap();
        std::io::Seek::seek(f.inner().unwrap(), std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(b"X").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"Xbcd");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
