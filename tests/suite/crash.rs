//! Killed at any moment, a run loses nothing: a child `moegrad train` with a checkpoint
//! every step is killed (SIGKILL where there are signals) at random moments, 20 times;
//! after each kill every checkpoint left verifies, the next child resumes from it (taking
//! over the dead one's lock), and the run finished that way ends with the weights,
//! moments and Default-MoE vectors of an uninterrupted run, bit for bit.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use moegrad::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use rand::Rng;

use crate::common::{assert_same_bits, child_trainer, rng, scratch};

const CONFIG: [&str; 4] = ["train.eval_every=40", "train.checkpoint_every=1", "train.keep_checkpoints=2", "train.steps=150"];

fn trainer(out: &Path, resume: bool) -> Command {
    child_trainer(out, resume, &CONFIG)
}

/// Every checkpoint file in `out` loads, which verifies its checksums and values.
fn checkpoints_verify(out: &Path) -> usize {
    let files: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    for f in &files {
        Checkpoint::load(f).unwrap_or_else(|e| panic!("{} survived a kill but does not verify: {e:#}", f.display()));
    }
    files.len()
}

#[test]
fn a_run_killed_twenty_times_ends_bit_for_bit_as_an_uninterrupted_one() {
    let (straight, killed) = (scratch("crash-straight"), scratch("crash-killed"));
    let done = trainer(&straight, false).output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));

    let mut r = rng(300);
    let (mut kills, mut resumes) = (0, 0);
    while kills < 20 {
        let resume = killed.join(CHECKPOINT_FILE).exists();
        resumes += resume as usize;
        let spawned = SystemTime::now();
        let mut child = trainer(&killed, resume).spawn().unwrap();
        // Wait for the child's first checkpoint of its own, so that every kill lands in a
        // run that is making progress, however slow the machine is to start one; then
        // kill at a random moment of the steps (and checkpoint writes) after it.
        let deadline = Instant::now() + Duration::from_secs(300);
        let wrote = || std::fs::metadata(killed.join(CHECKPOINT_FILE)).and_then(|m| m.modified()).is_ok_and(|m| m > spawned);
        while !wrote() && child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(r.random_range(0..400)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!stderr.contains("panicked") && !stderr.contains("error:"), "a child failed by itself ({status}):\n{stderr}");
        checkpoints_verify(&killed);
        if status.success() {
            break; // finished between two kills: the remaining steps are too few to kill
        }
    }
    let finish = trainer(&killed, true).output().unwrap();
    assert!(finish.status.success(), "{}", String::from_utf8_lossy(&finish.stderr));
    assert!(checkpoints_verify(&killed) >= 2, "checkpoint.safetensors and the kept ones");

    assert!(kills >= 10 && resumes >= 5, "only {kills} kills landed mid-run, {resumes} children resumed");
    assert_same_bits(&straight, &killed, 150, &format!("{kills} kills"));
    let metrics = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]) && steps.last() == Some(&150), "metrics in order, each step once: {steps:?}");
}
