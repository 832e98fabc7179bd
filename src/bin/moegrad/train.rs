//! `moegrad train`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use moegrad::dist::Collective;
use moegrad::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use moegrad::train::config::RunConfig;
use moegrad::train::interrupt::{Interrupt, INTERRUPTED_EXIT_CODE};
use moegrad::train::run_folder::{check_resumable, Start};
use moegrad::train::{train_with, TrainOptions};
use moegrad::Device;

/// Train a transformer language model (dense, TopK MoE, Default MoE or DenseMixer).
#[derive(Args)]
pub struct TrainArgs {
    /// A TOML run config (see configs/); with --resume, the checkpoint's own by default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. --set model.ffn=topk --set train.steps=100.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Training data: a text file, a folder of .txt files, or a shard folder from `moegrad
    /// data prepare` or llm.c (default: bundled Shakespeare).
    #[arg(long)]
    data: Option<String>,
    /// Start from hf:DIR, a Hugging Face Llama or Mixtral folder of the same model, or from
    /// a dense run's checkpoint: its weights, each MoE layer's experts copies of its MLP,
    /// the routers fresh (upcycling). Sets train.init_from.
    #[arg(long, value_name = "hf:DIR|DENSE_CHECKPOINT")]
    init_from: Option<PathBuf>,
    /// Folder for checkpoint.safetensors, metrics.jsonl, config.toml, moegrad-tokenizer.json.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Start over in an --out that holds a run, deleting its checkpoints and metrics.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Stop after this many steps (with a checkpoint), as if interrupted; 0 writes the
    /// untrained checkpoint of a new run without training a step.
    #[arg(long)]
    stop_after: Option<u64>,
    /// No progress bar or log lines: only the summary.
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    /// Trains; the exit status is 0, or `INTERRUPTED_EXIT_CODE` when a signal stopped the
    /// run with its checkpoint written.
    pub fn run(self, comm: &dyn Collective) -> Result<i32> {
        let TrainArgs { config, mut overrides, data, init_from, out, resume, force, stop_after, quiet } = self;
        if let Some(d) = data {
            overrides.push(format!("data.path={}", toml::Value::String(d)));
        }
        if resume && init_from.is_some() {
            anyhow::bail!(
                "--init-from starts a new run from other weights and --resume continues the run in {} from its checkpoint: give one of them",
                out.display()
            );
        }
        if let Some(path) = init_from {
            overrides.push(format!("train.init_from={}", toml::Value::String(path.display().to_string())));
        }
        if resume {
            check_resumable(&out)?;
        }
        let config = match (&config, resume) {
            (None, true) => Checkpoint::load(&out.join(CHECKPOINT_FILE))?.meta.config.with_overrides(&overrides)?,
            _ => RunConfig::load(config.as_deref(), &overrides)?,
        };
        config.validate()?;
        for unused in config.model.unused_settings().into_iter().filter(|_| comm.is_leader()) {
            eprintln!("warning: {unused}; it has no effect");
        }
        let device = if comm.size() > 1 { Device::for_local_rank(comm.local_rank())? } else { Device::new()? };
        let quiet = quiet || !comm.is_leader();
        if comm.size() > 1 && !quiet {
            println!("{} data-parallel ranks, {} windows each per micro-batch", comm.size(), config.train.batch_size / comm.size().max(1));
        }
        if !quiet {
            println!(
                "device: {}  model: {} layers x d={} ({})  out: {}",
                device.name(),
                config.model.layers,
                config.model.d_model,
                config.model.ffn.name(),
                out.display()
            );
            if config.train.precision == moegrad::ops::Precision::F16 {
                println!("precision: f16 matmuls on {}, loss scale {}", moegrad::ops::f16_matmul_kernel(&device), config.train.loss_scale);
            }
        }
        let start = match (resume, force) {
            (true, _) => Start::Resume,
            (false, true) => Start::Force,
            (false, false) => Start::Fresh,
        };
        let config_patience = config.train.patience;
        // Caught from here on: before, a signal ends the process with nothing to lose.
        let interrupt = Interrupt::on_signals()?;
        let s = train_with(&device, TrainOptions { config, out: out.clone(), start, quiet, stop_after, interrupt }, comm)?;
        if let Some(signal) = &s.interrupted {
            if comm.is_leader() {
                eprintln!(
                    "{signal}: stopped after step {} with its checkpoint written to {}; continue with `moegrad train --out {} --resume` (exit status {INTERRUPTED_EXIT_CODE})",
                    s.steps,
                    out.join(CHECKPOINT_FILE).display(),
                    out.display()
                );
            }
            return Ok(INTERRUPTED_EXIT_CODE);
        }
        if !comm.is_leader() {
            return Ok(0);
        }
        if s.stopped_early {
            println!("stopped early: train.patience = {} evaluations without a better eval loss", config_patience);
        }
        // A resumed run that was complete already trained no step, so has no train loss.
        let train_loss = if s.final_train_loss.is_finite() { format!(", train loss {:.4}", s.final_train_loss) } else { String::new() };
        println!(
            "done: {} steps of a {:.2}M-parameter model{train_loss}, eval loss {:.4} (from {:.4}), peak memory {:.0} MiB on the device{}",
            s.steps,
            s.params as f64 / 1e6,
            s.final_eval_loss,
            s.initial_eval_loss,
            s.peak_memory_mib,
            s.peak_host_mib.map_or(String::new(), |m| format!(", {m:.0} MiB on the host"))
        );
        let files: Vec<String> = s.files.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
        println!("wrote in {}: {}", out.display(), files.join(", "));
        let checkpoint = out.join(CHECKPOINT_FILE);
        println!("next:  moegrad sample --checkpoint {} --prompt \"...\"", checkpoint.display());
        println!("       moegrad eval --checkpoint {}", checkpoint.display());
        println!("       moegrad train --out {} --resume --set train.steps=N   (to train further)", out.display());
        Ok(0)
    }
}
