//! A stop asked from outside: Ctrl-C (SIGINT), SIGTERM (what Slurm and Kubernetes send at
//! a time limit or a preemption) and SIGUSR1 (Slurm's `--signal=USR1@SECONDS`). The
//! handler only sets a flag; the trainer looks at it after each step, finishes that step,
//! writes a verified checkpoint and ends with `INTERRUPTED_EXIT_CODE`, so a requeue script
//! knows the run can go on with `--resume`. A second Ctrl-C, for someone who will not
//! wait for the checkpoint, ends the process at once with 130 (128 + SIGINT), as shells
//! expect.
//!
//! The library installs no handler by itself (an embedding program owns its signals):
//! `Interrupt::on_signals` is called by the `moegrad` binary; `Interrupt::default()`
//! never fires, and `Interrupt::request` stops a run from another thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::dist::Collective;

/// The exit status of a run stopped by a signal after writing its checkpoint: 75,
/// `EX_TEMPFAIL` of sysexits.h ("try again later").
pub const INTERRUPTED_EXIT_CODE: i32 = 75;

/// Shared by the signal handlers and the trainer: 0 until a stop is asked, then the
/// number of the signal that asked (or `REQUESTED` for `request`).
#[derive(Clone, Default)]
pub struct Interrupt {
    signal: Arc<AtomicUsize>,
}

/// What `request` stores: no signal has this number.
const REQUESTED: usize = usize::MAX;

impl Interrupt {
    /// Catches SIGINT, SIGTERM and SIGUSR1 (where the platform has them) for the rest of
    /// the process's life.
    pub fn on_signals() -> Result<Interrupt> {
        use signal_hook::consts::signal::{SIGINT, SIGTERM};
        let interrupt = Interrupt::default();
        let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(SIGINT, 128 + SIGINT, Arc::clone(&asked)).context("cannot catch SIGINT")?;
        #[cfg(unix)]
        let signals = [SIGINT, SIGTERM, signal_hook::consts::signal::SIGUSR1];
        #[cfg(not(unix))]
        let signals = [SIGINT, SIGTERM];
        for signal in signals {
            signal_hook::flag::register_usize(signal, Arc::clone(&interrupt.signal), signal as usize)
                .with_context(|| format!("cannot catch signal {signal}"))?;
            signal_hook::flag::register(signal, Arc::clone(&asked)).with_context(|| format!("cannot catch signal {signal}"))?;
        }
        Ok(interrupt)
    }

    /// Asks the run to stop after its current step, as a signal would.
    pub fn request(&self) {
        self.signal.store(REQUESTED, Ordering::SeqCst);
    }

    /// What asked this process to stop, if anything did: `SIGTERM`, `SIGINT`, `SIGUSR1`
    /// or `a request`.
    pub fn asked(&self) -> Option<String> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            REQUESTED => Some("a request".to_string()),
            n => Some(signal_name(n as i32)),
        }
    }

    /// Whether any rank of `comm` was asked to stop, the same answer on every rank (a
    /// launcher may signal one rank before another), with what asked. One process alone
    /// asks nobody.
    pub fn agreed(&self, comm: &dyn Collective) -> Option<String> {
        let here = self.asked();
        if comm.size() == 1 {
            return here;
        }
        let mut asked = [here.is_some() as u8 as f64];
        comm.sum_f64(&mut asked);
        (asked[0] > 0.0).then(|| here.unwrap_or_else(|| "a signal to another rank".to_string()))
    }
}

/// The error of a command that trains several runs (`compare`, `sweep`) when a signal
/// stopped one of them: its checkpoint is written, and the same command goes on from it.
/// The binary exits with `INTERRUPTED_EXIT_CODE` on it.
#[derive(Debug)]
pub struct Stopped {
    /// What asked: `SIGTERM`, ...
    pub signal: String,
    /// The run folder whose checkpoint was written.
    pub run: std::path::PathBuf,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: stopped with the checkpoint of {} written; run the same command again to go on from it", self.signal, self.run.display())
    }
}

impl std::error::Error for Stopped {}

fn signal_name(signal: i32) -> String {
    signal_hook::low_level::signal_name(signal).map_or_else(|| format!("signal {signal}"), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Solo;

    #[test]
    fn a_request_is_seen_by_every_clone_and_named() {
        let interrupt = Interrupt::default();
        let seen_by_trainer = interrupt.clone();
        assert_eq!(seen_by_trainer.agreed(&Solo), None);
        interrupt.request();
        assert_eq!(seen_by_trainer.agreed(&Solo).as_deref(), Some("a request"));
        assert_eq!(signal_name(15), "SIGTERM");
    }
}
