//! The training loop, flat as in llm.c and nanoGPT: for each step, `train_step`
//! (micro-batches forward and backward, clip, AdamW, the Default-MoE vectors), then log,
//! evaluate and checkpoint on their intervals. A step reads back one scalar, the loss, to stop on NaN,
//! and checks it during the next step so that the GPU never waits for the host (f16 runs
//! also read the gradient norm, to skip a step that overflowed); everything else stays on
//! the GPU until a log line needs it.
//!
//! Nothing is lost: the run folder is locked and never started over unasked
//! (`run_folder`); nothing in it changes until every check of the config, the data and a
//! resumed checkpoint has passed; a step that evaluates or checkpoints also counts the
//! NaN and infinite values among the weights and optimizer moments (one GPU reduction,
//! read back with the loss), so an update that broke them stops the run before they
//! replace a good checkpoint; and every file is written atomically.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod init_from;
pub mod interrupt;
pub mod loss_scale;
pub mod metrics_csv;
pub mod run_folder;
pub mod run_record;
pub mod sample;
pub mod schedule;
pub mod step;
pub mod tensorboard;
pub mod tokenizer;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use moegrad_core::ops::{count_non_finite, AdamW, AdamWConfig, Precision};
use moegrad_core::{Device, PendingRead};
use moegrad_models::{Balance, Ffn, Transformer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

use crate::bench::peaks::{matmul_peak, mfu};
use crate::data::fingerprint::DataPrint;
use crate::data::folder::{configured_tokenizer, HF_TOKENIZER_FILE};
use crate::data::{is_shard_folder, ShardFolder};
use crate::dist::moe_sync::layer_stats;
use crate::dist::start::{agree_on_start, check_replicas};
use crate::dist::{rank_share, Collective, GradientBuckets, Solo};
use crate::durable::write_atomic;
use crate::research::accounting::account;
use crate::train::config::{RunConfig, TokenizerKind};
use crate::train::data::{load_text, train_batch, Corpus};
use crate::train::init_from::InitFrom;
use crate::train::interrupt::Interrupt;
use crate::train::loss_scale::{LossScaler, MAX_SKIPPED_IN_A_ROW};
use crate::train::metrics_csv::MetricsCsv;
use crate::train::run_record::record_start;
use crate::train::schedule::learning_rate;
use crate::train::step::{train_step, Exchange, StepSettings};
use crate::train::tensorboard::EventFile;
use crate::train::tokenizer::{Tokenizer, TOKENIZER_FILE};
pub use eval::{evaluate, score_all, Score};

use checkpoint::{checkpoint_tensors, encode, kept_file, Checkpoint, CheckpointMeta, BEST_FILE, CHECKPOINT_FILE, KEPT_PREFIX};
use run_folder::{run_files, RunFolder, Start};

pub struct TrainOptions {
    pub config: RunConfig,
    pub out: PathBuf,
    /// A new run, a resumed one (from `out/checkpoint.safetensors`), or a new one that
    /// replaces the run `out` holds.
    pub start: Start,
    /// No progress bar or log lines (tests, sweeps).
    pub quiet: bool,
    /// Stop (with a checkpoint) once this many steps are done, as if interrupted; the
    /// schedule still spans `train.steps`.
    pub stop_after: Option<u64>,
    /// A stop asked from outside (a signal): the run finishes its step, checkpoints and
    /// returns with `TrainSummary::interrupted` set.
    pub interrupt: Interrupt,
}

#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: u64,
    pub final_train_loss: f32,
    pub final_eval_loss: f32,
    /// The first evaluation of this run (before any step when starting fresh).
    pub initial_eval_loss: f32,
    /// The most memory the device's tensors held during the run, in MiB.
    pub peak_memory_mib: f64,
    /// The process's peak resident memory, in MiB (where the system reports it).
    pub peak_host_mib: Option<f64>,
    /// The model's parameters, embeddings included.
    pub params: u64,
    /// The run's files in its folder, at the end.
    pub files: Vec<PathBuf>,
    /// Whether `train.patience` evaluations without improvement ended the run early.
    pub stopped_early: bool,
    /// What stopped the run before `train.steps` (`SIGTERM`, ...), its checkpoint written.
    pub interrupted: Option<String>,
}

fn peak_memory_mib(device: &Device) -> f64 {
    device.stats().peak_bytes_in_use as f64 / (1u64 << 20) as f64
}

/// The most memory the process has held (its resident set's high-water mark), in MiB,
/// where the operating system says (Linux).
pub fn peak_host_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Builds the tokenizer a fresh text run asks for (a BPE is trained on the training text).
fn make_tokenizer(config: &RunConfig, train_text: &str) -> Result<Tokenizer> {
    match config.data.tokenizer {
        TokenizerKind::Bpe => Ok(Tokenizer::train_bpe(train_text, config.bpe_vocab())),
        ref kind => configured_tokenizer(kind),
    }
}

/// Fills in `model.vocab_size`: the checkpoint's when resuming, else the tokenizer's padded
/// up (`Tokenizer::model_vocab`); one set smaller than the tokenizer needs is refused.
fn resolve_vocab(config: &mut RunConfig, tokenizer: &Tokenizer, resumed: Option<&Checkpoint>) -> Result<()> {
    if config.model.vocab_size == 0 {
        config.model.vocab_size = resumed.map_or(tokenizer.model_vocab(), |c| c.meta.config.model.vocab_size);
    }
    if config.model.vocab_size < tokenizer.vocab_size() {
        bail!("config: model.vocab_size = {} is smaller than the {} tokens of {}", config.model.vocab_size, tokenizer.vocab_size(), tokenizer.describe());
    }
    Ok(())
}

/// The run's tokenizer and tokens: a shard folder's, read window by window, or a text's,
/// tokenized; with the data's fingerprint.
fn load_corpus(config: &mut RunConfig, resumed: Option<&Checkpoint>) -> Result<(Tokenizer, Corpus, DataPrint)> {
    let path = Path::new(&config.data.path);
    if !config.data.path.is_empty() && is_shard_folder(path) {
        let folder = ShardFolder::open(path, config.data.tokenizer_given.then_some(&config.data.tokenizer))?;
        if let Some(c) = resumed.filter(|c| c.meta.tokenizer != folder.tokenizer) {
            bail!(
                "the checkpoint's tokenizer ({}) is not the one the shards in {} were made with ({})",
                c.meta.tokenizer.describe(),
                path.display(),
                folder.tokenizer.describe()
            );
        }
        // The config then says what the run uses.
        config.data.tokenizer = match &folder.tokenizer {
            Tokenizer::Tiktoken { encoding } => TokenizerKind::Standard(*encoding),
            Tokenizer::HuggingFace(_) => TokenizerKind::HuggingFace(path.join(HF_TOKENIZER_FILE).display().to_string()),
            _ => config.data.tokenizer.clone(),
        };
        resolve_vocab(config, &folder.tokenizer, resumed)?;
        config.validate()?;
        let corpus = Corpus::from_shards(&folder, config.model.context)?;
        let files = [corpus.eval.files(), corpus.train.files()].concat();
        let print = DataPrint::of_files(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
        return Ok((folder.tokenizer, corpus, print));
    }
    let text = load_text(&config.data.path)?;
    let (train_text, eval_text) = crate::train::data::split_text(&text, config.data.eval_fraction);
    let tokenizer = match resumed {
        Some(c) => c.meta.tokenizer.clone(),
        None => make_tokenizer(config, train_text)?,
    };
    resolve_vocab(config, &tokenizer, resumed)?;
    config.validate()?;
    let corpus = Corpus::new(train_text, eval_text, &tokenizer, config.model.context)?;
    let name = if config.data.path.is_empty() { "the bundled corpus" } else { &config.data.path };
    Ok((tokenizer, corpus, DataPrint::of_text(name, &text)))
}

/// Refuses to resume on other data than the checkpoint's (unless `data.allow_changed`),
/// naming what changed.
fn check_same_data(config: &RunConfig, resumed: Option<&Checkpoint>, now: &DataPrint) -> Result<()> {
    let Some(was) = resumed.and_then(|c| c.meta.data.as_ref()) else { return Ok(()) };
    let changes = now.changes_since(was);
    if changes.is_empty() {
        return Ok(());
    }
    if config.data.allow_changed {
        eprintln!("warning: resuming on changed data ({}); the run no longer continues exactly", changes.join("; "));
        return Ok(());
    }
    bail!(
        "the data changed since the checkpoint ({}), so the resumed run would not continue as it would have; restore the data, or pass --set data.allow_changed=true to go on knowingly",
        changes.join("; ")
    )
}

/// Where a run's log goes: `metrics.jsonl`, `metrics.csv` and TensorBoard's event file.
struct Logs {
    jsonl: std::fs::File,
    csv: MetricsCsv,
    events: EventFile,
}

/// Logs a line to `metrics.jsonl` (with its time), its row to `metrics.csv` and its
/// scalars to the event file.
fn write_json_line(logs: &mut Logs, mut value: serde_json::Value) -> Result<()> {
    value["time"] = json!(tensorboard::now());
    writeln!(logs.jsonl, "{value}")?;
    logs.csv.append(&value)?;
    logs.events.append(&value)
}

/// Keeps the metrics lines up to `step` (a resumed run rewrites what came after).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> =
        text.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step)).collect();
    write_atomic(path, kept.iter().map(|l| format!("{l}\n")).collect::<String>().as_bytes())
}

/// What survives a run stopped now, for its error message.
fn kept_message(last_checkpoint: Option<u64>, ckpt_path: &Path) -> String {
    match last_checkpoint {
        Some(s) => format!("the last good checkpoint (step {s}) is kept at {}", ckpt_path.display()),
        None => "no checkpoint had been written yet".to_string(),
    }
}

/// Stops the run on a NaN or infinite loss, saying which checkpoint survives. Checkpoints
/// are written only after their step's loss has been checked, so the last one is good.
fn check_finite(what: &str, loss: f32, step: u64, last_checkpoint: Option<u64>, ckpt_path: &Path, bar: &ProgressBar) -> Result<()> {
    if loss.is_finite() {
        return Ok(());
    }
    bar.abandon();
    let kept = kept_message(last_checkpoint, ckpt_path);
    bail!("{what} became {loss} at step {step}; stopping ({kept}). Try a lower train.lr or train.clip.");
}

/// `h:mm:ss`, for log lines.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Removes kept checkpoints beyond the newest `keep`.
fn prune_kept(out: &Path, keep: usize) -> Result<()> {
    let mut kept: Vec<PathBuf> = run_files(out).into_iter().filter(|f| f.file_name().is_some_and(|n| n.to_string_lossy().starts_with(KEPT_PREFIX))).collect();
    kept.sort();
    for old in &kept[..kept.len().saturating_sub(keep)] {
        std::fs::remove_file(old).with_context(|| format!("cannot remove the old checkpoint {}", old.display()))?;
    }
    Ok(())
}

/// Each MoE layer's selection bias (`balance = "bias"`), in layer order; None elsewhere.
fn selection_biases(model: &Transformer) -> Result<Vec<Option<Vec<f32>>>> {
    let layers = model.blocks.iter().filter_map(|b| match &b.ffn {
        Ffn::Moe(m) => Some(m),
        Ffn::Dense(_) => None,
    });
    Ok(layers.map(|m| (m.config.balance == Balance::Bias).then(|| m.selection_bias.to_vec()).transpose()).collect::<std::result::Result<_, _>>()?)
}

pub fn train(device: &Device, opts: TrainOptions) -> Result<TrainSummary> {
    train_with(device, opts, &Solo)
}

/// `train` as one rank of `comm` (data-parallel): each rank trains on its share of every
/// batch, rank 0 alone writes the run folder, and every rank ends with the same weights.
pub fn train_with(device: &Device, opts: TrainOptions, comm: &dyn Collective) -> Result<TrainSummary> {
    let precision = opts.config.train.precision;
    let checkpoint = opts.out.join(CHECKPOINT_FILE);
    device.with_policy(|p| p.precision = precision, || run(device, opts, comm)).map_err(|e| advise(e, &checkpoint))
}

/// A lack of GPU resources (memory, the binding limit, a lost device) gets advice and the
/// state of the checkpoint. The loop writes a checkpoint only after its step's loss was
/// read back, which is where such a failure surfaces, so the one on disk is good.
fn advise(e: anyhow::Error, checkpoint: &Path) -> anyhow::Error {
    if !e.downcast_ref::<moegrad_core::Error>().is_some_and(moegrad_core::Error::is_resource) {
        return e;
    }
    let kept = match checkpoint.exists() {
        true => format!("the last good checkpoint is kept at {} (continue with --resume)", checkpoint.display()),
        false => "no checkpoint had been written yet".to_string(),
    };
    e.context(format!(
        "training stopped for lack of GPU resources; {kept}. Try a smaller train.batch_size (train.grad_accum keeps the tokens per step), model.context or model, or train.precision = \"f16\""
    ))
}

fn run(device: &Device, opts: TrainOptions, comm: &dyn Collective) -> Result<TrainSummary> {
    let TrainOptions { mut config, out, start, quiet, stop_after, interrupt } = opts;
    config.validate()?;
    let share = rank_share(config.train.batch_size, comm.rank(), comm.size())?;
    if config.train.activation_checkpointing && comm.size() > 1 {
        // Its recomputed blocks would see this rank's expert loads, not the global ones,
        // and their gradients reach no bucket early.
        bail!("train.activation_checkpointing is not yet supported with several data-parallel ranks (this job has {})", comm.size());
    }
    let config_hash = config.identity_hash();
    let peak = matmul_peak(device, config.train.precision)?;
    device.reset_peak_memory();
    // Rank 0 alone owns the folder; the others only read a checkpoint to resume from.
    let leader = comm.is_leader();
    let quiet = quiet || !leader;
    // Every check comes before the first change to the folder (the lock aside).
    let mut folder = leader.then(|| RunFolder::claim(&out, start)).transpose()?;
    let ckpt_path = out.join(CHECKPOINT_FILE);
    let resumed = match start {
        Start::Resume => Some(Checkpoint::load(&ckpt_path)?),
        Start::Fresh | Start::Force => None,
    };
    if let Some(w) = resumed.as_ref().and_then(Checkpoint::warning) {
        eprintln!("{w}: {}", ckpt_path.display());
    }
    // A resumed run is its own checkpoint; a new one may start from a dense run's.
    let init_from = config.train.init_from.clone().filter(|_| resumed.is_none());
    let source = init_from.as_deref().map(InitFrom::open).transpose()?;
    let (tokenizer, corpus, data_print) = load_corpus(&mut config, resumed.as_ref().or(source.as_ref().and_then(InitFrom::checkpoint)))?;
    check_same_data(&config, resumed.as_ref(), &data_print)?;
    agree_on_start(comm, &config)?;

    let t = config.train.clone();
    let mut rng = StdRng::seed_from_u64(t.seed);
    let mut model = Transformer::new(device, &config.model, &mut rng)?;
    model.activation_checkpointing = t.activation_checkpointing;
    if let (Some(source), Some(path)) = (&source, &init_from) {
        source.apply(path, &model)?;
    }
    let adam = AdamWConfig { lr: t.lr, beta1: t.beta1, beta2: t.beta2, eps: t.eps, weight_decay: t.weight_decay };
    let mut opt = AdamW::new(&model, adam)?;
    let (mut step, mut tokens_seen, mut wall_before) = (0, 0, 0.0);
    let mixed = t.precision == Precision::F16;
    let mut scaler = mixed.then(|| LossScaler::new(t.loss_scale, t.loss_scale_growth_every));
    let (mut best_eval_loss, mut evals_without_improvement) = (None, 0);
    if let Some(c) = &resumed {
        if config.train.steps < c.meta.step {
            bail!(
                "train.steps = {} is below the checkpoint's step {}: nothing is left to train (set train.steps above {} to train further)",
                config.train.steps,
                c.meta.step,
                c.meta.step
            );
        }
        c.restore(&model, Some(&mut opt))?;
        (step, tokens_seen, wall_before, best_eval_loss) = (c.meta.step, c.meta.tokens_seen, c.meta.wall_seconds, c.meta.best_eval_loss);
        evals_without_improvement = c.meta.evals_without_improvement;
        if mixed {
            scaler = c.meta.loss_scaler.clone().or(scaler);
        }
    }

    // Every check passed: from here on the folder changes.
    let metrics_path = out.join("metrics.jsonl");
    let moe_layers = config.model.layer_kinds().iter().filter(|k| k.is_moe()).count();
    let mut metrics = match folder.as_mut() {
        Some(folder) => {
            folder.clear_replaced()?;
            write_atomic(&out.join(TOKENIZER_FILE), serde_json::to_string(&tokenizer)?.as_bytes())?;
            write_atomic(&out.join("config.toml"), toml::to_string(&config)?.as_bytes())?;
            record_start(&out, device, resumed.as_ref().map(|c| c.meta.step))?;
            if resumed.is_some() {
                truncate_metrics(&metrics_path, step)?;
            }
            let jsonl = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)?;
            Some(Logs { jsonl, csv: MetricsCsv::rebuild(&out, &metrics_path, moe_layers)?, events: EventFile::rebuild(&out, &metrics_path)? })
        }
        None => None,
    };
    let mut buckets = (comm.size() > 1).then(|| GradientBuckets::new(opt.parameters(), (config.dist.bucket_mb * 1e6) as u64, true));

    let context = config.model.context;
    let tokens_per_step = (t.batch_size * t.grad_accum * context) as u64;
    // Model FLOPs utilisation, where the adapter's peak is known.
    let flops_per_token = account(&config.model).flops_per_token;
    if let (Some((flops, source)), false) = (&peak, quiet) {
        println!("MFU against {} TFLOP/s a GPU ({source}), {:.3e} FLOPs a token", flops / 1e12, flops_per_token);
    }
    let initial_eval_loss = evaluate(device, &model, &corpus.eval, t.batch_size, t.eval_batches)?;
    if let Some(m) = metrics.as_mut().filter(|_| resumed.is_none()) {
        write_json_line(m, json!({"step": 0, "tokens": 0, "eval_loss": initial_eval_loss}))?;
    }
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(t.steps) };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]").expect("valid template"));
    bar.set_position(step);
    let (mut final_train_loss, mut final_eval_loss) = (f32::NAN, initial_eval_loss);
    let mut window = (Instant::now(), 0u64);
    let (started, first_step) = (Instant::now(), step);
    let mut last_checkpoint = resumed.as_ref().map(|c| c.meta.step);
    let mut pending_loss: Option<(u64, PendingRead)> = None;
    let mut stopped_early = false;

    let meta_at = |step, tokens_seen, eval_loss, best_eval_loss, loss_scaler, evals_without_improvement| CheckpointMeta {
        format: 1,
        config: config.clone(),
        tokenizer: tokenizer.clone(),
        step,
        tokens_seen,
        eval_loss,
        wall_seconds: wall_before + started.elapsed().as_secs_f64(),
        loss_scaler,
        best_eval_loss,
        config_hash: Some(config_hash.clone()),
        world_size: comm.size(),
        evals_without_improvement,
        data: Some(data_print.clone()),
    };
    // Asked to stop where the run already is (`--stop-after 0` on a fresh run, a signal
    // during the set-up): its checkpoint as it stands, the untrained weights, without a step.
    let mut interrupted = interrupt.agreed(comm);
    if (stop_after.is_some_and(|s| s <= step) || interrupted.is_some()) && leader && last_checkpoint != Some(step) {
        let meta = meta_at(step, tokens_seen, Some(initial_eval_loss), best_eval_loss, scaler.clone(), evals_without_improvement);
        write_atomic(&ckpt_path, &encode(&meta, &model, &opt)?)?;
    }
    while interrupted.is_none() && step < t.steps && stop_after.is_none_or(|s| s > step) {
        step += 1;
        let lr = learning_rate(&t, step);
        let settings = StepSettings { lr, clip: t.clip, grad_accum: t.grad_accum };
        let loss_scale = scaler.as_ref().map_or(1.0, |s| s.scale);
        let exchange = buckets.as_mut().map(|buckets| Exchange { comm, buckets });
        let stepped = train_step(&mut model, &mut opt, scaler.as_mut(), settings, exchange, |micro| {
            train_batch(device, &corpus.train, t.batch_size, share.clone(), context, (t.seed, step, micro))
        })?;
        if !stepped.applied && scaler.as_ref().is_some_and(LossScaler::stuck) {
            bar.abandon();
            bail!("f16 gradients overflowed {MAX_SKIPPED_IN_A_ROW} steps in a row (loss scale now {}); stopping at step {step}. Try train.precision = \"f32\" or a lower train.lr.", loss_scale / 2.0);
        }
        let (grad_norm, output_stats, exchanged) = (stepped.grad_norm, stepped.moe, stepped.exchange);
        tokens_seen += tokens_per_step;
        window.1 += tokens_per_step;

        let log_now = step % t.log_every == 0 || step == t.steps;
        let eval_now = (t.eval_every > 0 && step % t.eval_every == 0) || step == t.steps;
        // A signal that came during this step stops the run once the step is done.
        interrupted = interrupt.agreed(comm);
        let stopping = stop_after.is_some_and(|s| step >= s) || interrupted.is_some();
        let checkpoint_now = (t.checkpoint_every > 0 && step % t.checkpoint_every == 0) || step == t.steps || stopping;
        // The loss is read back in the background: the previous step's is checked now,
        // while the GPU runs this one; a step that logs or checkpoints waits for its own,
        // and one that may write a checkpoint also for the count of non-finite weights.
        let loss_read = stepped.loss_sum.read_later();
        let non_finite_read = (eval_now || checkpoint_now)
            .then(|| count_non_finite(&checkpoint_tensors(&model, &opt).into_iter().map(|(_, t)| t).collect::<Vec<_>>()))
            .flatten()
            .map(|count| count.read_later());
        if let Some((at, previous)) = pending_loss.take() {
            let loss = comm.mean(previous.wait()?[0] as f64) as f32;
            check_finite("training loss", loss / t.grad_accum as f32, at, last_checkpoint, &ckpt_path, &bar)?;
        }
        let mut train_loss = f32::NAN;
        if log_now || eval_now || checkpoint_now {
            train_loss = comm.mean(loss_read.wait()?[0] as f64) as f32 / t.grad_accum as f32;
            check_finite("training loss", train_loss, step, last_checkpoint, &ckpt_path, &bar)?;
            final_train_loss = train_loss;
        } else {
            pending_loss = Some((step, loss_read));
        }
        if let Some(read) = non_finite_read {
            let count = u32::from_le_bytes(read.wait_bytes()?[..4].try_into().expect("a u32 count"));
            // Summed over ranks, so that every rank stops or none.
            let mut counts = [count as f64];
            comm.sum_f64(&mut counts);
            let count = counts[0] as u64;
            if count > 0 {
                bar.abandon();
                let kept = kept_message(last_checkpoint, &ckpt_path);
                bail!("{count} weights or optimizer moments became NaN or infinite in the update of step {step}; stopping ({kept}). Try a lower train.lr or train.clip.");
            }
        }

        if log_now || eval_now {
            let tokens_per_s = window.1 as f64 / window.0.elapsed().as_secs_f64();
            window = (Instant::now(), 0);
            let wall_s = wall_before + started.elapsed().as_secs_f64();
            let mut line = json!({"step": step, "tokens": tokens_seen, "train_loss": train_loss, "lr": lr, "tokens_per_s": tokens_per_s, "wall_s": wall_s, "peak_memory_mib": peak_memory_mib(device)});
            let utilisation = peak.as_ref().map(|(flops, _)| mfu(flops_per_token, tokens_per_s, *flops, comm.size()));
            if let Some(u) = utilisation {
                line["mfu"] = json!(u);
            }
            let mfu_text = utilisation.map_or(String::new(), |u| format!("  mfu {:.1}%", 100.0 * u));
            if let Some(g) = &grad_norm {
                line["grad_norm"] = json!(g.to_vec()?[0]);
            }
            if let Some(s) = &scaler {
                line["loss_scale"] = json!(s.scale);
                line["skipped_steps"] = json!(s.skipped);
            }
            let layers = layer_stats(comm, &output_stats, config.model.moe.aux_loss_coef)?;
            let biases = selection_biases(&model)?;
            let layers: Vec<_> = layers
                .into_iter()
                .zip(biases)
                .enumerate()
                .map(|(i, (s, bias))| {
                    let mut layer = json!({"layer": i, "load": s.load, "load_cv": s.load_cv(), "max_violation": s.max_violation(), "router_entropy": s.router_entropy, "aux_loss": s.aux_loss, "z_loss": s.z_loss});
                    if let Some(d) = s.dropped {
                        layer["dropped"] = json!(d);
                    }
                    if let Some(b) = bias {
                        layer["bias"] = json!(b);
                    }
                    layer
                })
                .collect();
            if !layers.is_empty() {
                line["moe"] = json!(layers);
            }
            if eval_now {
                final_eval_loss = evaluate(device, &model, &corpus.eval, t.batch_size, t.eval_batches)?;
                check_finite("eval loss", final_eval_loss, step, last_checkpoint, &ckpt_path, &bar)?;
                line["eval_loss"] = json!(final_eval_loss);
            }
            if let Some(exchanged) = &exchanged {
                line["dist"] = json!({"ranks": comm.size(), "bytes": exchanged.bytes, "buckets": exchanged.buckets, "read_back_s": exchanged.read_back_s, "reduce_s": exchanged.reduce_s, "upload_s": exchanged.upload_s});
            }
            if let Some(m) = metrics.as_mut() {
                write_json_line(m, line)?;
            }
            let eval = if eval_now { format!(" eval {final_eval_loss:.4}") } else { String::new() };
            bar.set_message(format!("loss {train_loss:.4}{eval} lr {lr:.2e} {tokens_per_s:.0} tok/s{mfu_text}"));
            if !quiet && !bar.is_hidden() {
                bar.println(format!("step {step:>6}  loss {train_loss:.4}{eval}  lr {lr:.2e}  {tokens_per_s:.0} tok/s{mfu_text}"));
            } else if !quiet {
                // No terminal (a log file, a pipe): each line says how long the run has
                // taken and how long it has left, as the bar would.
                let elapsed = started.elapsed().as_secs_f64();
                let eta = elapsed / (step - first_step) as f64 * (t.steps - step) as f64;
                println!(
                    "step {step:>6}/{}  loss {train_loss:.4}{eval}  lr {lr:.2e}  {tokens_per_s:.0} tok/s{mfu_text}  elapsed {}  eta {}",
                    t.steps,
                    clock(elapsed),
                    clock(eta)
                );
            }
        }
        let improved = eval_now && best_eval_loss.is_none_or(|b| final_eval_loss < b);
        if improved {
            best_eval_loss = Some(final_eval_loss);
            evals_without_improvement = 0;
        } else if eval_now {
            evals_without_improvement += 1;
        }
        // Early stopping: out of patience, the run ends here with a checkpoint.
        let out_of_patience = eval_now && t.patience > 0 && evals_without_improvement >= t.patience && step < t.steps;
        if out_of_patience {
            stopped_early = true;
            let message = format!(
                "stopping early at step {step}: {evals_without_improvement} evaluations without improving on eval loss {:.4} (kept in {BEST_FILE})",
                best_eval_loss.unwrap_or(f32::NAN)
            );
            match (quiet, bar.is_hidden()) {
                (false, false) => bar.println(message),
                (false, true) => println!("{message}"),
                (true, _) => {}
            }
        }
        let (checkpoint_now, stopping) = (checkpoint_now || out_of_patience, stopping || out_of_patience);
        let check_now = t.steps == step || stopping || (config.dist.check_every > 0 && step % config.dist.check_every == 0);
        if comm.size() > 1 && check_now {
            check_replicas(comm, &checkpoint_tensors(&model, &opt), step)?;
        }
        if leader && (checkpoint_now || improved) {
            let meta = meta_at(step, tokens_seen, eval_now.then_some(final_eval_loss), best_eval_loss, scaler.clone(), evals_without_improvement);
            let bytes = encode(&meta, &model, &opt)?;
            if improved {
                write_atomic(&out.join(BEST_FILE), &bytes)?;
            }
            if checkpoint_now {
                write_atomic(&ckpt_path, &bytes)?;
                if t.keep_checkpoints > 1 {
                    write_atomic(&out.join(kept_file(step)), &bytes)?;
                    prune_kept(&out, t.keep_checkpoints)?;
                }
                last_checkpoint = Some(step);
            }
        }
        bar.set_position(step);
        if stopping {
            break;
        }
    }
    // A signal at the last step stopped nothing: the run is done.
    let interrupted = interrupted.filter(|_| step < t.steps);
    match interrupted {
        Some(_) => bar.abandon(),
        None => bar.finish(),
    }
    let (params, files) = (account(&config.model).params, run_files(&out));
    Ok(TrainSummary {
        steps: step,
        final_train_loss,
        final_eval_loss,
        initial_eval_loss,
        peak_memory_mib: peak_memory_mib(device),
        peak_host_mib: peak_host_memory_mib(),
        params,
        files,
        stopped_early,
        interrupted,
    })
}
