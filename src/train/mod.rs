//! The training loop, flat as in llm.c and nanoGPT: for each step, `train_step`
//! (micro-batches forward and backward, clip, AdamW, the Default-MoE vectors), then log,
//! evaluate and checkpoint on their intervals. A step reads back one scalar, the loss, to stop on NaN,
//! and checks it during the next step so that the GPU never waits for the host (f16 runs
//! also read the gradient norm, to skip a step that overflowed); everything else stays on
//! the GPU until a log line needs it.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod loss_scale;
pub mod sample;
pub mod schedule;
pub mod step;
pub mod tokenizer;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use moegrad_core::ops::{cross_entropy, AdamW, AdamWConfig, CrossEntropyOptions, Precision};
use moegrad_core::{no_grad, Device, PendingRead};
use moegrad_models::Transformer;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

use crate::train::config::{RunConfig, TokenizerKind};
use crate::train::data::{eval_batch, load_text, train_batch, Corpus};
use crate::train::loss_scale::{LossScaler, MAX_SKIPPED_IN_A_ROW};
use crate::train::schedule::learning_rate;
use crate::train::step::{train_step, StepSettings};
use crate::train::tokenizer::Tokenizer;
use checkpoint::{Checkpoint, CheckpointMeta, CHECKPOINT_FILE};

pub struct TrainOptions {
    pub config: RunConfig,
    pub out: PathBuf,
    /// Continue from `out/checkpoint.safetensors`.
    pub resume: bool,
    /// No progress bar or log lines (tests, sweeps).
    pub quiet: bool,
    /// Stop (with a checkpoint) once this many steps are done, as if interrupted; the
    /// schedule still spans `train.steps`.
    pub stop_after: Option<u64>,
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
}

fn peak_memory_mib(device: &Device) -> f64 {
    device.stats().peak_bytes_in_use as f64 / (1u64 << 20) as f64
}

/// Mean cross-entropy over `batches` held-out batches, in evaluation mode.
pub fn evaluate(device: &Device, model: &Transformer, tokens: &[u32], batch: usize, batches: usize) -> Result<f32> {
    let context = model.config.context;
    no_grad(|| {
        let mut total = 0.0;
        for i in 0..batches {
            let b = eval_batch(device, tokens, batch, context, i, batches)?;
            let logits = model.forward(&b.inputs, false).logits;
            total += cross_entropy(&logits, &b.targets.reshape(&[batch * context]), CrossEntropyOptions::default()).item()?;
        }
        Ok(total / batches as f32)
    })
}

/// Builds the tokenizer a fresh run asks for (a BPE is trained on the training text).
fn make_tokenizer(config: &RunConfig, train_text: &str) -> Tokenizer {
    match config.data.tokenizer {
        TokenizerKind::Byte => Tokenizer::Bytes,
        TokenizerKind::Bpe => Tokenizer::train_bpe(train_text, config.bpe_vocab()),
    }
}

fn write_json_line(file: &mut std::fs::File, value: serde_json::Value) -> Result<()> {
    writeln!(file, "{value}")?;
    Ok(())
}

/// Keeps the metrics lines up to `step` (a resumed run rewrites what came after).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> =
        text.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step)).collect();
    std::fs::write(path, kept.iter().map(|l| format!("{l}\n")).collect::<String>())?;
    Ok(())
}

/// Stops the run on a NaN or infinite loss, saying which checkpoint survives. Checkpoints
/// are written only after their step's loss has been checked, so the last one is good.
fn check_finite(loss: f32, step: u64, last_checkpoint: Option<u64>, ckpt_path: &Path, bar: &ProgressBar) -> Result<()> {
    if loss.is_finite() {
        return Ok(());
    }
    bar.abandon();
    let kept = match last_checkpoint {
        Some(s) => format!("the last good checkpoint (step {s}) is kept at {}", ckpt_path.display()),
        None => "no checkpoint had been written yet".to_string(),
    };
    bail!("training loss became {loss} at step {step}; stopping ({kept}). Try a lower train.lr or train.clip.");
}

pub fn train(device: &Device, opts: TrainOptions) -> Result<TrainSummary> {
    let precision = opts.config.train.precision;
    let checkpoint = opts.out.join(CHECKPOINT_FILE);
    device.with_policy(|p| p.precision = precision, || run(device, opts)).map_err(|e| advise(e, &checkpoint))
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

fn run(device: &Device, opts: TrainOptions) -> Result<TrainSummary> {
    let TrainOptions { mut config, out, resume, quiet, stop_after } = opts;
    config.validate()?;
    device.reset_peak_memory();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create output folder {}", out.display()))?;
    let ckpt_path = out.join(CHECKPOINT_FILE);
    let resumed = if resume {
        if !ckpt_path.exists() {
            bail!("--resume: no checkpoint at {}", ckpt_path.display());
        }
        Some(Checkpoint::load(&ckpt_path)?)
    } else {
        None
    };

    let text = load_text(&config.data.path)?;
    let (train_text, eval_text) = crate::train::data::split_text(&text, config.data.eval_fraction);
    let tokenizer = match &resumed {
        Some(c) => c.meta.tokenizer.clone(),
        None => make_tokenizer(&config, train_text),
    };
    config.model.vocab_size = tokenizer.vocab_size();
    config.validate()?;
    std::fs::write(out.join("tokenizer.json"), serde_json::to_string(&tokenizer)?)?;
    std::fs::write(out.join("config.toml"), toml::to_string(&config)?)?;
    let corpus = Corpus::new(train_text, eval_text, &tokenizer, config.model.context)?;

    let t = config.train.clone();
    let mut rng = StdRng::seed_from_u64(t.seed);
    let mut model = Transformer::new(device, &config.model, &mut rng)?;
    let adam = AdamWConfig { lr: t.lr, beta1: t.beta1, beta2: t.beta2, eps: t.eps, weight_decay: t.weight_decay };
    let mut opt = AdamW::new(&model, adam)?;
    let (mut step, mut tokens_seen, mut wall_before) = (0, 0, 0.0);
    let mixed = t.precision == Precision::F16;
    let mut scaler = mixed.then(|| LossScaler::new(t.loss_scale, t.loss_scale_growth_every));
    let metrics_path = out.join("metrics.jsonl");
    if let Some(c) = &resumed {
        c.restore(&model, Some(&mut opt))?;
        (step, tokens_seen, wall_before) = (c.meta.step, c.meta.tokens_seen, c.meta.wall_seconds);
        if mixed {
            scaler = c.meta.loss_scaler.clone().or(scaler);
        }
        truncate_metrics(&metrics_path, step)?;
    } else {
        let _ = std::fs::remove_file(&metrics_path);
    }
    let mut metrics = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)?;

    let context = config.model.context;
    let tokens_per_step = (t.batch_size * t.grad_accum * context) as u64;
    let initial_eval_loss = evaluate(device, &model, &corpus.eval, t.batch_size, t.eval_batches)?;
    if resumed.is_none() {
        write_json_line(&mut metrics, json!({"step": 0, "tokens": 0, "eval_loss": initial_eval_loss}))?;
    }
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(t.steps) };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]").expect("valid template"));
    bar.set_position(step);
    let (mut final_train_loss, mut final_eval_loss) = (f32::NAN, initial_eval_loss);
    let mut window = (Instant::now(), 0u64);
    let started = Instant::now();
    let mut last_checkpoint = resumed.as_ref().map(|c| c.meta.step);
    let mut pending_loss: Option<(u64, PendingRead)> = None;

    while step < t.steps {
        step += 1;
        let lr = learning_rate(&t, step);
        let settings = StepSettings { lr, clip: t.clip, grad_accum: t.grad_accum };
        let loss_scale = scaler.as_ref().map_or(1.0, |s| s.scale);
        let out = train_step(&mut model, &mut opt, scaler.as_mut(), settings, |micro| {
            train_batch(device, &corpus.train, t.batch_size, context, t.seed, step, micro)
        })?;
        if !out.applied && scaler.as_ref().is_some_and(LossScaler::stuck) {
            bar.abandon();
            bail!("f16 gradients overflowed {MAX_SKIPPED_IN_A_ROW} steps in a row (loss scale now {}); stopping at step {step}. Try train.precision = \"f32\" or a lower train.lr.", loss_scale / 2.0);
        }
        let (grad_norm, output_stats) = (out.grad_norm, out.moe);
        tokens_seen += tokens_per_step;
        window.1 += tokens_per_step;

        // The loss is read back in the background: the previous step's is checked now,
        // while the GPU runs this one; a step that logs or checkpoints waits for its own.
        let loss_read = out.loss_sum.read_later();
        if let Some((at, previous)) = pending_loss.take() {
            check_finite(previous.wait()?[0] / t.grad_accum as f32, at, last_checkpoint, &ckpt_path, &bar)?;
        }
        let log_now = step % t.log_every == 0 || step == t.steps;
        let eval_now = (t.eval_every > 0 && step % t.eval_every == 0) || step == t.steps;
        let stopping = stop_after.is_some_and(|s| step >= s);
        let checkpoint_now = (t.checkpoint_every > 0 && step % t.checkpoint_every == 0) || step == t.steps || stopping;
        let mut train_loss = f32::NAN;
        if log_now || eval_now || checkpoint_now {
            train_loss = loss_read.wait()?[0] / t.grad_accum as f32;
            check_finite(train_loss, step, last_checkpoint, &ckpt_path, &bar)?;
            final_train_loss = train_loss;
        } else {
            pending_loss = Some((step, loss_read));
        }

        if log_now || eval_now {
            let tokens_per_s = window.1 as f64 / window.0.elapsed().as_secs_f64();
            window = (Instant::now(), 0);
            let wall_s = wall_before + started.elapsed().as_secs_f64();
            let mut line = json!({"step": step, "tokens": tokens_seen, "train_loss": train_loss, "lr": lr, "tokens_per_s": tokens_per_s, "wall_s": wall_s, "peak_memory_mib": peak_memory_mib(device)});
            if let Some(g) = &grad_norm {
                line["grad_norm"] = json!(g.to_vec()?[0]);
            }
            if let Some(s) = &scaler {
                line["loss_scale"] = json!(s.scale);
                line["skipped_steps"] = json!(s.skipped);
            }
            let layers = output_stats.iter().enumerate().map(|(i, s)| {
                Ok(json!({
                    "layer": i,
                    "load": s.load.to_vec()?,
                    "router_entropy": s.entropy.item()?,
                    "aux_loss": s.aux_loss.as_ref().map(|a| a.item()).transpose()?,
                    "z_loss": s.z_loss.as_ref().map(|z| z.item()).transpose()?,
                }))
            });
            let layers = layers.collect::<Result<Vec<_>>>()?;
            if !layers.is_empty() {
                line["moe"] = json!(layers);
            }
            if eval_now {
                final_eval_loss = evaluate(device, &model, &corpus.eval, t.batch_size, t.eval_batches)?;
                line["eval_loss"] = json!(final_eval_loss);
            }
            write_json_line(&mut metrics, line)?;
            let eval = if eval_now { format!(" eval {final_eval_loss:.4}") } else { String::new() };
            bar.set_message(format!("loss {train_loss:.4}{eval} lr {lr:.2e} {:.0} tok/s", tokens_per_s));
            if !quiet && !bar.is_hidden() {
                bar.println(format!("step {step:>6}  loss {train_loss:.4}{eval}  lr {lr:.2e}  {tokens_per_s:.0} tok/s"));
            } else if !quiet {
                println!("step {step:>6}/{}  loss {train_loss:.4}{eval}  lr {lr:.2e}  {tokens_per_s:.0} tok/s", t.steps);
            }
        }
        if checkpoint_now {
            let meta = CheckpointMeta {
                format: 1,
                config: config.clone(),
                tokenizer: tokenizer.clone(),
                step,
                tokens_seen,
                eval_loss: eval_now.then_some(final_eval_loss),
                wall_seconds: wall_before + started.elapsed().as_secs_f64(),
                loss_scaler: scaler.clone(),
            };
            checkpoint::save(&ckpt_path, &meta, &model, &opt)?;
            last_checkpoint = Some(step);
        }
        bar.set_position(step);
        if stopping {
            break;
        }
    }
    bar.finish();
    Ok(TrainSummary { steps: step, final_train_loss, final_eval_loss, initial_eval_loss, peak_memory_mib: peak_memory_mib(device) })
}
