//! A run folder, claimed by one trainer at a time. A folder that holds a run is never
//! started over silently: a fresh run refuses it unless asked to `--force` (which removes
//! the old run's files, and only those), and `--resume` needs its checkpoint. The claim is
//! an exclusive lock on `.lock` in the folder (the operating system's file lock, so a
//! process that dies, even by `kill -9`, releases it); the file holds the holder's PID, to
//! name it to a second writer. A lock file whose holder is gone is stale and is taken over.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::train::checkpoint::{Checkpoint, BEST_FILE, CHECKPOINT_FILE, KEPT_PREFIX};
use crate::train::config::RunConfig;
use crate::train::metrics_csv::METRICS_CSV_FILE;
use crate::train::run_record::RUN_RECORD_FILE;
use crate::train::tensorboard::EVENTS_FILE;
use crate::train::tokenizer::{LEGACY_TOKENIZER_FILE, TOKENIZER_FILE};

const LOCK_FILE: &str = ".lock";

/// The files a run writes, which make a folder hold a run.
fn is_run_file(name: &str) -> bool {
    matches!(
        name,
        CHECKPOINT_FILE
            | BEST_FILE
            | "metrics.jsonl"
            | METRICS_CSV_FILE
            | RUN_RECORD_FILE
            | EVENTS_FILE
            | "config.toml"
            | TOKENIZER_FILE
            | LEGACY_TOKENIZER_FILE
    ) || (name.starts_with(KEPT_PREFIX) && name.ends_with(".safetensors"))
}

/// How a trainer means to use its folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run: the folder must not hold one.
    Fresh,
    /// Continue the run whose checkpoint the folder holds.
    Resume,
    /// A new run that replaces whatever run the folder holds.
    Force,
}

/// A run folder this process holds the lock of, until it is dropped.
#[derive(Debug)]
pub struct RunFolder {
    pub path: PathBuf,
    /// The old run's files, which `Start::Force` removes once the new run passed its checks.
    replaced: Vec<PathBuf>,
    _lock: File,
}

/// The run files in `folder` (none when it does not exist).
pub fn run_files(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).filter(|e| is_run_file(&e.file_name().to_string_lossy())).map(|e| e.path()).collect();
    files.sort();
    files
}

impl RunFolder {
    /// Checks that `path` suits `start` and locks it (creating it when needed). Nothing in
    /// the folder is changed but the lock file.
    pub fn claim(path: &Path, start: Start) -> Result<RunFolder> {
        let existing = run_files(path);
        match start {
            Start::Fresh if !existing.is_empty() => {
                let names: Vec<String> = existing.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
                bail!(
                    "{} already holds a run ({}); continue it with --resume, or start over with --force (which deletes those files)",
                    path.display(),
                    names.join(", ")
                );
            }
            Start::Resume if !path.join(CHECKPOINT_FILE).exists() => bail!("--resume: no checkpoint at {}", path.join(CHECKPOINT_FILE).display()),
            _ => {}
        }
        std::fs::create_dir_all(path).with_context(|| format!("cannot create run folder {}", path.display()))?;
        let lock = lock(path)?;
        remove_stray_temporaries(path);
        let replaced = if start == Start::Force { existing } else { Vec::new() };
        Ok(RunFolder { path: path.to_path_buf(), replaced, _lock: lock })
    }

    /// With `Start::Force`, deletes the old run's files: called once the new run has
    /// passed every check, so a refused run loses nothing.
    pub fn clear_replaced(&mut self) -> Result<()> {
        for f in self.replaced.drain(..) {
            std::fs::remove_file(&f).with_context(|| format!("--force: cannot remove {}", f.display()))?;
        }
        Ok(())
    }
}

/// How `compare` and `sweep` go on with the run they would train in `folder` with
/// `config`: `None` when it is finished, else how to start it. A run is reused only when it
/// was trained with the same config (by `RunConfig::identity_hash`); a folder holding
/// another config's run is an error naming the keys that differ, unless `force` starts
/// every run over. A run that stopped before its first checkpoint has nothing to keep and
/// starts over.
pub fn reuse_or_start(folder: &Path, config: &RunConfig, force: bool) -> Result<Option<Start>> {
    if force {
        return Ok(Some(Start::Force));
    }
    let checkpoint = folder.join(CHECKPOINT_FILE);
    let meta = checkpoint.exists().then(|| Checkpoint::load(&checkpoint)).transpose()?.map(|c| c.meta);
    let stored = match &meta {
        Some(m) => m.config.clone(),
        None if folder.join("config.toml").exists() => RunConfig::load(Some(&folder.join("config.toml")), &[])?,
        None => return Ok(Some(Start::Fresh)),
    };
    let differences = config.differences(&stored);
    // Checkpoints from before the hash was stored are judged by their config alone.
    let same = match meta.as_ref().and_then(|m| m.config_hash.as_deref()) {
        Some(hash) => hash == config.identity_hash(),
        None => differences.is_empty(),
    };
    if !same {
        let keys = if differences.is_empty() { "its config hash differs".to_string() } else { format!("{}: asked vs stored", differences.join(", ")) };
        bail!("{} holds a run of another config ({keys}); choose another --out, or pass --force to start the runs over", folder.display());
    }
    Ok(match meta {
        Some(m) => (m.step < config.train.steps).then_some(Start::Resume),
        // Stopped before its first checkpoint: nothing to keep.
        None => Some(Start::Force),
    })
}

/// Removes the temporary files of a writer killed mid-write (`durable::write_atomic`
/// names them `.<file>.<pid>.<n>.tmp`); only the lock's holder writes here, so none is live.
fn remove_stray_temporaries(folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else { return };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") && is_run_file(name[1..].split('.').take(2).collect::<Vec<_>>().join(".").as_str()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Takes the folder's lock, or names the process that holds it.
fn lock(folder: &Path) -> Result<File> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moegrad-run-folder-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_claim_is_refused_naming_the_holder_and_the_lock_is_released_on_drop() {
        let dir = scratch("lock");
        let first = RunFolder::claim(&dir, Start::Fresh).unwrap();
        let err = RunFolder::claim(&dir, Start::Fresh).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())) && err.contains("is writing to"), "{err}");
        drop(first);
        RunFolder::claim(&dir, Start::Fresh).expect("a released lock can be taken again");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_lock_file_is_taken_over_and_its_holders_temporaries_removed() {
        let dir = scratch("stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LOCK_FILE), "4000000").unwrap();
        std::fs::write(dir.join(".checkpoint.safetensors.4000000.0.tmp"), "half a checkpoint").unwrap();
        std::fs::write(dir.join(".notes.txt.tmp"), "not ours").unwrap();
        let _held = RunFolder::claim(&dir, Start::Fresh).unwrap();
        assert!(!dir.join(".checkpoint.safetensors.4000000.0.tmp").exists(), "a killed writer's temporary file is removed");
        assert!(dir.join(".notes.txt.tmp").exists());
        assert_eq!(std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap(), std::process::id().to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_holding_a_run_is_refused_unless_resumed_or_forced() {
        let dir = scratch("held");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), "{}\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let err = RunFolder::claim(&dir, Start::Fresh).unwrap_err().to_string();
        assert!(err.contains("already holds a run") && err.contains("metrics.jsonl") && err.contains("--resume") && err.contains("--force"), "{err}");
        let err = RunFolder::claim(&dir, Start::Resume).unwrap_err().to_string();
        assert!(err.contains("no checkpoint"), "{err}");
        let mut forced = RunFolder::claim(&dir, Start::Force).unwrap();
        assert!(dir.join("metrics.jsonl").exists(), "nothing is removed before the new run's checks pass");
        forced.clear_replaced().unwrap();
        assert!(!dir.join("metrics.jsonl").exists() && dir.join("notes.txt").exists(), "--force removes the run's files and only those");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
