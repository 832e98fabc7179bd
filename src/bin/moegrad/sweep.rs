//! `moegrad sweep plan|run|report`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use moegrad::dist::Collective;
use moegrad::durable::write_atomic;
use moegrad::research::fit::{degeneracies, fit, read_rows, Law, StartGrid};
use moegrad::research::sweep::{finished, parse_shard, plan_table, run_sweep, slurm_script, write_results, PlannedRun, Sweep, SweepRunOptions};
use moegrad::research::sweep_report::write_plots;
use moegrad::Device;

#[derive(Clone, Copy, ValueEnum)]
pub enum SweepAction {
    /// The table of runs (and, with --emit, a job-array script).
    Plan,
    /// Train the runs (finished ones skipped, an unfinished one resumed).
    Run,
    /// results.jsonl, the fit and the plots from whatever runs exist.
    Report,
}

/// Scheduler scripts `plan --emit` writes.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// A job array, one task (and GPU) per shard.
    Slurm,
    /// One MPI job of --shards ranks whose ranks share the runs, then report.
    SlurmMpi,
}

/// Width x depth sweeps: `plan`, `run` (the default) or `report`.
#[derive(Args)]
pub struct SweepArgs {
    /// What to do with the sweep.
    #[arg(value_enum, default_value = "run")]
    action: SweepAction,
    /// A sweep file (see sweeps/).
    #[arg(long)]
    config: PathBuf,
    /// Folder for the runs, results.jsonl, fit.json and plots/.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run the i-th of n disjoint subsets, e.g. 0/4.
    #[arg(long)]
    shard: Option<String>,
    /// With `plan`: write a job-array script for this scheduler into --out.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
    /// With `plan --emit`: how many array tasks (shards).
    #[arg(long, default_value_t = 4, value_parser = crate::at_least_one)]
    shards: usize,
    /// Law fitted by `report` (and after a complete `run`).
    #[arg(long, value_enum, default_value = "params-tokens")]
    law: Law,
    /// Interrupt the first run started after this many steps (to test resumption).
    #[arg(long)]
    stop_after: Option<u64>,
    /// No progress bars or log lines.
    #[arg(long)]
    quiet: bool,
    /// With `run`: start every run over, even finished ones or ones of another config.
    #[arg(long)]
    force: bool,
}

impl SweepArgs {
    pub fn run(self, comm: &dyn Collective) -> Result<()> {
        let SweepArgs { action, config, out, shard, emit, shards, law, stop_after, quiet, force } = self;
        let sweep = Sweep::load(&config)?;
        let runs = sweep.plan()?;
        let out_dir = || out.clone().ok_or_else(|| anyhow::anyhow!("--out is required"));
        match action {
            SweepAction::Plan => {
                print!("{}", plan_table(&runs));
                let total: f64 = runs.iter().map(|r| r.total_flops()).sum();
                println!("{} runs, {total:.3e} FLOPs in all", runs.len());
                match emit {
                    None => {}
                    Some(emit) => {
                        let out = out_dir()?;
                        std::fs::create_dir_all(&out)?;
                        let mpi = emit == Emit::SlurmMpi;
                        let script = out.join(if mpi { "sweep-mpi.slurm" } else { "sweep.slurm" });
                        write_atomic(&script, slurm_script(&config, &out, shards, mpi).as_bytes())?;
                        let what = if mpi { "ranks" } else { "array tasks" };
                        println!("wrote {} ({shards} {what}): sbatch {}", script.display(), script.display());
                    }
                }
                Ok(())
            }
            SweepAction::Run => {
                let out = out_dir()?;
                let shard = match (shard.as_deref().map(parse_shard).transpose()?, comm.size()) {
                    (Some(_), n) if n > 1 => bail!("--shard and an MPI launch of {n} ranks would both split the grid: give one of them"),
                    (Some(shard), _) => shard,
                    // Under mpirun each rank trains its own runs, as `--shard r/N` would.
                    (None, n) => (comm.rank(), n),
                };
                let device = if comm.size() > 1 { Device::for_local_rank(comm.local_rank())? } else { Device::new()? };
                let interrupt = moegrad::train::interrupt::Interrupt::on_signals()?;
                run_sweep(&device, &runs, &out, &SweepRunOptions { shard, quiet, stop_after, force, interrupt })?;
                // Every rank's runs are done (or their failure has ended the job) before
                // rank 0 reports.
                comm.gather_u64(0);
                if !comm.is_leader() {
                    return Ok(());
                }
                if runs.iter().all(|r| finished(&out, r)) {
                    sweep_report(&runs, &out, law)
                } else {
                    println!("shard {}/{} done; other shards' runs are unfinished (report with `moegrad sweep report`)", shard.0, shard.1);
                    Ok(())
                }
            }
            SweepAction::Report => sweep_report(&runs, &out_dir()?, law),
        }
    }
}

fn sweep_report(runs: &[PlannedRun], out: &std::path::Path, law: Law) -> Result<()> {
    let count = write_results(runs, out)?;
    println!("{count} evaluated checkpoints in {}", out.join("results.jsonl").display());
    let rows = read_rows(&out.join("results.jsonl"))?;
    // A grid that cannot determine the law (too few distinct rows, one width) is
    // reported, not fitted; the results and plots stand without it.
    let fitted = match fit(&rows, law, 1e-4, &StartGrid::for_law(law), false) {
        Ok(f) => {
            write_atomic(&out.join("fit.json"), serde_json::to_string(&f)?.as_bytes())?;
            println!("fit: exponents {:?} coefficients {:?} e {:.4} objective {:.3e}", f.exponents, f.coefficients, f.irreducible_error, f.objective);
            for w in degeneracies(&f, &rows) {
                eprintln!("warning: degenerate fit: {w}");
            }
            Some(f)
        }
        Err(e) => {
            println!("no {law:?} fit: {e:#}");
            None
        }
    };
    write_plots(&out.join("plots"), &rows, fitted.as_ref().map(|f| (f, law)))?;
    println!("plots in {}", out.join("plots").display());
    Ok(())
}
