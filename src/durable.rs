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

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_beside(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("cannot flush {} to disk", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_folder(path.parent().unwrap_or(Path::new(".")));
    Ok(())
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
    }
}
