//! A run folder, claimed by one trainer at a time. A folder that holds a run is never
//! started over silently: a fresh run refuses it unless asked to `--force` (which removes
//! the old run's files, and only those), and `--resume` needs its checkpoint. The claim is
//! an exclusive lock on `.lock` in the folder (the operating system's file lock, so a
//! process that dies, even by `kill -9`, releases it); the file holds the holder's PID, to
//! name it to a second writer. A lock file whose holder is gone is stale and is taken over.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::folder_lock::lock_folder;
use crate::train::checkpoint::{Checkpoint, BEST_FILE, CHECKPOINT_FILE, KEPT_PREFIX};
use crate::train::config::RunConfig;
use crate::train::metrics_csv::METRICS_CSV_FILE;
use crate::train::run_record::RUN_RECORD_FILE;
use crate::train::tensorboard::EVENTS_FILE;
use crate::train::tokenizer::{LEGACY_TOKENIZER_FILE, TOKENIZER_FILE};

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
                let way_on = match path.join(CHECKPOINT_FILE).exists() {
                    true => "continue it with --resume, or start over with --force (which deletes those files)",
                    false => "it stopped before its first checkpoint, so there is nothing to resume: start it over with --force (which deletes those files)",
                };
                bail!("{} already holds a run ({}); {way_on}", path.display(), names.join(", "));
            }
            Start::Resume => check_resumable(path)?,
            _ => {}
        }
        std::fs::create_dir_all(path).with_context(|| format!("cannot create run folder {}", path.display()))?;
        let lock = lock_folder(path)?;
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

/// Whether `--resume` can continue the run in `folder`: it needs the folder's checkpoint.
/// The error says how to go on: a run stopped before its first checkpoint has nothing to
/// keep and starts over with `--force`.
pub fn check_resumable(folder: &Path) -> Result<()> {
    let checkpoint = folder.join(CHECKPOINT_FILE);
    if checkpoint.exists() {
        return Ok(());
    }
    match run_files(folder).is_empty() {
        true => bail!("--resume: no run to continue in {} (no {CHECKPOINT_FILE}); start one without --resume", folder.display()),
        false => bail!(
            "--resume: the run in {} stopped before its first checkpoint, so there is nothing to resume; start it over with --force (which deletes its files)",
            folder.display()
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder_lock::LOCK_FILE;

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
        assert!(err.contains("already holds a run") && err.contains("metrics.jsonl") && err.contains("--force"), "{err}");
        assert!(err.contains("stopped before its first checkpoint") && err.contains("--force"), "{err}");
        let err = RunFolder::claim(&dir, Start::Resume).unwrap_err().to_string();
        assert!(err.contains("stopped before its first checkpoint") && err.contains("--force"), "{err}");
        let empty = scratch("empty");
        let err = RunFolder::claim(&empty, Start::Resume).unwrap_err().to_string();
        assert!(err.contains("no run to continue") && err.contains("without --resume"), "{err}");
        let mut forced = RunFolder::claim(&dir, Start::Force).unwrap();
        assert!(dir.join("metrics.jsonl").exists(), "nothing is removed before the new run's checks pass");
        forced.clear_replaced().unwrap();
        assert!(!dir.join("metrics.jsonl").exists() && dir.join("notes.txt").exists(), "--force removes the run's files and only those");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
