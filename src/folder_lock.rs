//! One writer at a time in a folder: an exclusive lock on `.lock` in it (the operating
//! system's file lock, so a process that dies, even by `kill -9`, releases it). The file
//! holds the holder's PID, to name it to a second writer; a lock file whose holder is gone
//! is stale and is taken over. Run folders (`train::run_folder`) and shard folders (`data
//! prepare`) are claimed so.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const LOCK_FILE: &str = ".lock";

/// Takes the folder's lock, or names the process that holds it.
pub fn lock_folder(folder: &Path) -> Result<File> {
    let path = folder.join(LOCK_FILE);
    // Never truncated on open: until the lock is ours, the holder's PID must stay readable.
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { "another process".to_string() } else { format!("another moegrad (pid {holder})") };
            bail!("{who} is writing to {}; wait for it to finish or choose another --out", folder.display());
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
    // The lock is ours: a PID left in the file was a stale holder's.
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(file)
}
