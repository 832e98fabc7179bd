//! A signal loses no work: a child `moegrad train` with no periodic checkpoint gets SIGTERM
//! or SIGINT (and once SIGUSR1, Slurm's warning) at a random moment after a step of its
//! own, 10 times; each child finishes its step, writes a checkpoint that verifies at the
//! step it reached, says so and exits with `INTERRUPTED_EXIT_CODE`; the next child resumes
//! from it, and the run ends bit for bit as an uninterrupted one. A second Ctrl-C ends a
//! child at once with 130.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use moegrad::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use moegrad::train::interrupt::INTERRUPTED_EXIT_CODE;
use rand::Rng;

use crate::common::{assert_same_bits, child_trainer, rng, scratch, TINY_DEFAULT_MOE};

const STEPS: u64 = 120;
/// No checkpoint but the last and the signal's: every step since the start would be lost.
const CONFIG: [&str; 4] = ["train.eval_every=50", "train.checkpoint_every=0", "train.log_every=1", "train.steps=120"];

fn trainer(out: &Path, resume: bool) -> Command {
    child_trainer(out, resume, &CONFIG)
}

/// The last step `metrics.jsonl` logs (0 before the first).
fn logged_step(out: &Path) -> u64 {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["step"].as_u64()).max().unwrap_or(0)
}

/// Waits until the child has logged a step past `after`, so that the signal lands in a run
/// that is training, however slow the machine is to start one.
fn wait_for_a_step(child: &mut Child, out: &Path, after: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while logged_step(out) <= after && child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn send(signal: &str, child: &Child) {
    let sent = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(sent.success(), "kill -{signal} failed");
}

fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    stderr
}

#[test]
fn a_run_stopped_by_ten_signals_ends_bit_for_bit_as_an_uninterrupted_one() {
    let (straight, stopped) = (scratch("signals-straight"), scratch("signals-stopped"));
    let done = trainer(&straight, false).output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));

    let mut r = rng(46);
    let (mut signals, mut at) = (0, 0u64);
    while signals < 10 {
        let mut child = trainer(&stopped, at > 0).spawn().unwrap();
        wait_for_a_step(&mut child, &stopped, at);
        std::thread::sleep(Duration::from_millis(r.random_range(0..60)));
        let signal = match signals {
            4 => "USR1",
            n if n % 2 == 0 => "TERM",
            _ => "INT",
        };
        send(signal, &child);
        let status = child.wait().unwrap();
        let stderr = stderr_of(&mut child);
        if status.success() {
            break; // finished before the signal landed: too few steps were left
        }
        assert_eq!(status.code(), Some(INTERRUPTED_EXIT_CODE), "SIG{signal} ends the run with the documented code ({status}):\n{stderr}");
        let ckpt = Checkpoint::load(&stopped.join(CHECKPOINT_FILE)).unwrap_or_else(|e| panic!("the checkpoint a SIG{signal} left does not verify: {e:#}"));
        let step = ckpt.meta.step;
        assert!(step > at, "SIG{signal}: the checkpoint is at step {step}, the child started at {at}: a step of its own is kept");
        assert!(stderr.contains(&format!("SIG{signal}: stopped after step {step}")) && stderr.contains("--resume"), "the child says what it kept:\n{stderr}");
        (signals, at) = (signals + 1, step);
    }
    assert!(signals >= 5, "only {signals} signals landed mid-run");
    let finish = trainer(&stopped, true).output().unwrap();
    assert!(finish.status.success(), "{}", String::from_utf8_lossy(&finish.stderr));

    assert_same_bits(&straight, &stopped, STEPS, &format!("{signals} signals"));
}

#[test]
fn a_second_ctrl_c_ends_the_run_at_once() {
    let out = scratch("signals-twice");
    let mut child = trainer(&out, false).spawn().unwrap();
    wait_for_a_step(&mut child, &out, 0);
    // Both land before the step in flight ends (a step takes milliseconds, `kill` less).
    send("INT", &child);
    send("INT", &child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "a second Ctrl-C exits at once with 128 + SIGINT:\n{}", stderr_of(&mut child));
}

/// `compare` (and `sweep`, through the same `Stopped` error) stops at the run in training,
/// that run checkpointed; the same comparison run again goes on from it.
#[test]
fn a_stop_ends_a_comparison_at_the_run_in_training_and_a_rerun_goes_on() {
    use moegrad::research::compare::{compare, CompareOptions};
    use moegrad::train::interrupt::{Interrupt, Stopped};
    let out = scratch("signals-compare");
    let interrupt = Interrupt::default();
    interrupt.request();
    let config = crate::common::config_from_sets(&TINY_DEFAULT_MOE, &["train.steps=3", "train.eval_batches=1"]);
    let variants = vec!["topk".parse().unwrap(), "default".parse().unwrap()];
    let opts = CompareOptions { config, variants, seeds: 1, out: out.clone(), quiet: true, force: false, interrupt };
    let err = compare(&crate::common::device(), &opts).err().expect("the stop ends the comparison");
    let stopped = err.downcast_ref::<Stopped>().expect("a Stopped error, which the binary ends with status 75");
    assert!(stopped.run.ends_with("topk-seed0") && stopped.signal == "a request", "{stopped}");
    assert_eq!(Checkpoint::load(&out.join("topk-seed0").join(CHECKPOINT_FILE)).unwrap().meta.step, 0);
    assert!(!out.join("default-seed0").exists(), "no run starts after the stop");
    let rows = compare(&crate::common::device(), &CompareOptions { interrupt: Interrupt::default(), ..opts }).unwrap();
    assert!(rows.iter().all(|r| r.final_eval.len() == 1 && r.failures.is_empty()));
    assert_eq!(Checkpoint::load(&out.join("topk-seed0").join(CHECKPOINT_FILE)).unwrap().meta.step, 3);

    // A sweep stops the same way, at its first run.
    use moegrad::research::sweep::{run_sweep, Sweep, SweepRunOptions};
    let runs = Sweep::load(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sweeps/tiny.toml")).unwrap().plan().unwrap();
    let out = scratch("signals-sweep");
    let interrupt = Interrupt::default();
    interrupt.request();
    let err =
        run_sweep(&crate::common::device(), &runs, &out, &SweepRunOptions { shard: (0, 1), quiet: true, interrupt, ..SweepRunOptions::default() }).unwrap_err();
    let stopped = err.downcast_ref::<Stopped>().expect("a Stopped error");
    assert!(stopped.run.ends_with(&runs[0].name), "{stopped}");
    assert_eq!(Checkpoint::load(&stopped.run.join(CHECKPOINT_FILE)).unwrap().meta.step, 0);
}
