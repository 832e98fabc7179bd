//! The trainer end to end on tiny models: learning, exact resume, NaN stop, checkpoint and
//! config errors, sampling, BPE.

use moegrad::data::Tokens;
use moegrad::research::accounting::account;
use moegrad::train::checkpoint::{Checkpoint, BEST_FILE, CHECKPOINT_FILE};
use moegrad::train::config::RunConfig;
use moegrad::train::data::load_text;
use moegrad::train::run_folder::Start;
use moegrad::train::sample::{generate, SampleOptions};
use moegrad::train::{train, TrainOptions};
use moegrad::Device;

use crate::common::{config_from_sets, device, scratch, train_quietly as run};

/// A model small enough for a few seconds of lavapipe.
fn tiny(extra: &[&str]) -> RunConfig {
    let base = [
        "model.d_model=32",
        "model.layers=1",
        "model.heads=2",
        "model.context=32",
        "model.ffn=\"default\"",
        "model.moe.experts=4",
        "model.moe.top_k=2",
        "model.moe.expert_hidden=32",
        "train.batch_size=8",
        "train.lr=1e-2",
        "train.min_lr=1e-3",
        "train.warmup=5",
        "train.eval_batches=2",
        "train.log_every=5",
        "train.eval_every=0",
    ];
    config_from_sets(&base, extra)
}

#[test]
fn a_tiny_run_lowers_the_eval_loss_well_below_its_start() {
    let out = scratch("learn");
    // A device of its own, so that other tests' tensors do not move its peak memory.
    let options =
        TrainOptions { config: tiny(&["train.steps=60"]), out: out.clone(), start: Start::Fresh, quiet: true, stop_after: None, interrupt: Default::default() };
    let s = train(&Device::new().unwrap(), options).unwrap();
    assert!(s.initial_eval_loss > 5.0, "an untrained byte model starts near ln 256, got {}", s.initial_eval_loss);
    assert!(s.final_eval_loss < s.initial_eval_loss - 1.5, "eval loss {} -> {}", s.initial_eval_loss, s.final_eval_loss);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    for key in ["step", "tokens", "train_loss", "eval_loss", "lr", "grad_norm", "tokens_per_s", "peak_memory_mib"] {
        assert!(!last[key].is_null(), "metrics line lacks {key}: {last}");
    }
    // At the optimizer step the weights, their gradients and AdamW's two moments are live.
    let params = account(&Checkpoint::load(&out.join(CHECKPOINT_FILE)).unwrap().meta.config.model).params as f64;
    let peak_bytes = s.peak_memory_mib * (1u64 << 20) as f64;
    assert!(peak_bytes >= 16.0 * params, "peak memory {peak_bytes} bytes for {params} parameters");
    let logged = last["peak_memory_mib"].as_f64().unwrap();
    assert!(logged > 0.0 && logged <= s.peak_memory_mib, "logged peak {logged} MiB, summary {} MiB", s.peak_memory_mib);
    let moe = &last["moe"][0];
    assert_eq!(moe["load"].as_array().unwrap().len(), 4);
    assert!(moe["router_entropy"].as_f64().unwrap() > 0.0 && !moe["aux_loss"].is_null() && !moe["z_loss"].is_null());
}

/// Mixed precision (f16 matmul operands, f32 sums and master weights, loss scaling)
/// learns as well as f32 from the same start.
#[test]
fn f16_mixed_precision_trains_as_well_as_f32() {
    let mut finals = Vec::new();
    for precision in ["f32", "f16"] {
        let out = scratch(&format!("precision-{precision}"));
        let s = run(tiny(&["train.steps=40", &format!("train.precision=\"{precision}\"")]), &out, Start::Fresh, None).unwrap();
        assert!(s.final_eval_loss < s.initial_eval_loss - 1.0, "{precision}: eval loss {} -> {}", s.initial_eval_loss, s.final_eval_loss);
        finals.push(s.final_eval_loss);
    }
    assert!((finals[1] - finals[0]).abs() < 0.03 * finals[0], "f16 ends at {}, f32 at {}", finals[1], finals[0]);
}

/// Too high a loss scale overflows the f16 gradients: those steps are skipped and the
/// scale halves until training proceeds; a scale that never recovers stops the run.
#[test]
fn f16_overflow_skips_steps_and_halves_the_loss_scale() {
    let out = scratch("overflow");
    let s = run(tiny(&["train.steps=30", "train.precision=\"f16\"", "train.loss_scale=1.7e10"]), &out, Start::Fresh, None).unwrap();
    let meta = Checkpoint::load(&out.join(CHECKPOINT_FILE)).unwrap().meta;
    let scaler = meta.loss_scaler.expect("f16 checkpoints keep the loss scaler");
    assert!(scaler.skipped >= 3 && scaler.scale < 1.7e10 / 4.0, "{scaler:?}");
    assert!(s.final_eval_loss < s.initial_eval_loss - 0.5, "eval loss {} -> {} with {} skipped steps", s.initial_eval_loss, s.final_eval_loss, scaler.skipped);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"loss_scale\"") && metrics.contains("\"skipped_steps\""), "{metrics}");

    let stuck = scratch("overflow-stuck");
    let err = run(tiny(&["train.steps=40", "train.precision=\"f16\"", "train.loss_scale=3e38"]), &stuck, Start::Fresh, None).unwrap_err().to_string();
    assert!(err.contains("overflowed") && err.contains("train.precision"), "{err}");
}

#[test]
fn resuming_gives_the_weights_of_an_uninterrupted_run() {
    // The f16 run's loss scale doubles every 2 steps, so its scaler state must resume too.
    for (ffn, precision) in [("\"default\"", "f32"), ("\"dense\"", "f32"), ("\"default\"", "f16")] {
        let sets = [&format!("model.ffn={ffn}"), &format!("train.precision=\"{precision}\""), "train.loss_scale_growth_every=2"];
        let cfg = tiny(&[&["train.steps=6", "train.checkpoint_every=0", "train.grad_accum=2"][..], &sets[..]].concat());
        let (straight, split) = (scratch(&format!("straight-{ffn}-{precision}")), scratch(&format!("split-{ffn}-{precision}")));
        run(cfg.clone(), &straight, Start::Fresh, None).unwrap();
        run(cfg.clone(), &split, Start::Fresh, Some(3)).unwrap();
        assert_eq!(Checkpoint::load(&split.join(CHECKPOINT_FILE)).unwrap().meta.step, 3);
        run(cfg, &split, Start::Resume, None).unwrap();
        let a = Checkpoint::load(&straight.join(CHECKPOINT_FILE)).unwrap();
        let b = Checkpoint::load(&split.join(CHECKPOINT_FILE)).unwrap();
        assert_eq!(a.names(), b.names());
        assert_eq!(b.meta.step, 6);
        assert_eq!(a.meta.loss_scaler, b.meta.loss_scaler);
        for name in a.names() {
            for (x, y) in a.values(name).unwrap().iter().zip(b.values(name).unwrap()) {
                assert!((x - y).abs() <= 1e-5, "{ffn} {name}: {x} straight vs {y} resumed");
            }
        }
    }
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let out = scratch("nan");
    run(tiny(&["train.steps=8", "train.warmup=0"]), &out, Start::Fresh, Some(2)).unwrap();
    let before = std::fs::read(out.join(CHECKPOINT_FILE)).unwrap();
    // Steps of 3e38 with full weight decay overflow f32 within a step or two.
    let exploding = tiny(&["train.steps=8", "train.warmup=0", "train.lr=3e38", "train.min_lr=3e38", "train.clip=0", "train.weight_decay=1.0"]);
    let err = run(exploding, &out, Start::Resume, None).expect_err("an exploding run must stop").to_string();
    assert!(err.contains("training loss became") && err.contains("step 2"), "{err}");
    assert_eq!(std::fs::read(out.join(CHECKPOINT_FILE)).unwrap(), before, "the last good checkpoint must be untouched");
    assert_eq!(Checkpoint::load(&out.join(CHECKPOINT_FILE)).unwrap().meta.step, 2);
}

/// Out of GPU memory in the middle of training is an error with advice, never a panic,
/// and the last good checkpoint survives it.
#[test]
fn running_out_of_gpu_memory_stops_with_advice_and_keeps_the_last_checkpoint() {
    let out = scratch("oom");
    let config = tiny(&["train.steps=4", "train.warmup=0"]);
    // A device of its own, whose peak memory is this run's alone.
    let dev = Device::new().unwrap();
    let summary = train(
        &dev,
        TrainOptions { config: config.clone(), out: out.clone(), start: Start::Fresh, quiet: true, stop_after: Some(2), interrupt: Default::default() },
    )
    .unwrap();
    let before = std::fs::read(out.join(CHECKPOINT_FILE)).unwrap();
    // Room for half of what the run needed at its peak.
    let peak = (summary.peak_memory_mib * (1u64 << 20) as f64) as u64;
    dev.set_memory_limit(Some(dev.stats().bytes_in_use + peak / 2));
    let err = train(&dev, TrainOptions { config, out: out.clone(), start: Start::Resume, quiet: true, stop_after: None, interrupt: Default::default() })
        .expect_err("half a step's memory is not enough");
    let msg = format!("{err:#}");
    assert!(msg.contains("out of GPU memory") && msg.contains("lack of GPU resources") && msg.contains("batch_size"), "{msg}");
    assert!(msg.contains("last good checkpoint is kept"), "{msg}");
    assert_eq!(std::fs::read(out.join(CHECKPOINT_FILE)).unwrap(), before, "the last good checkpoint must be untouched");
}

#[test]
fn corrupt_truncated_and_mismatched_checkpoints_are_refused_clearly() {
    let out = scratch("corrupt");
    run(tiny(&["train.steps=1", "train.warmup=0"]), &out, Start::Fresh, None).unwrap();
    let good = std::fs::read(out.join(CHECKPOINT_FILE)).unwrap();
    let bad = out.join("bad.safetensors");
    std::fs::write(&bad, b"definitely not a checkpoint").unwrap();
    let err = Checkpoint::load(&bad).err().unwrap().to_string();
    assert!(err.contains("corrupt"), "{err}");
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let err = Checkpoint::load(&bad).err().unwrap().to_string();
    assert!(err.contains("corrupt"), "{err}");
    let err = Checkpoint::load(&out.join("missing.safetensors")).err().unwrap().to_string();
    assert!(err.contains("cannot read checkpoint"), "{err}");
    // A checkpoint of another shape: resuming a wider model from it names the tensor.
    let err = run(tiny(&["train.steps=2", "train.warmup=0", "model.d_model=48"]), &out, Start::Resume, None).err().unwrap().to_string();
    assert!(err.contains("has shape"), "{err}");
}

/// Every config shipped in configs/ (the README's, CI's and the GPU session's) loads and
/// passes the checks a run makes before it starts.
#[test]
fn every_shipped_config_loads_and_validates() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("configs").unwrap() {
        let path = entry.unwrap().path();
        let config = RunConfig::load(Some(&path), &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        config.validate().unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert!(names.iter().any(|n| n == "compare-gpu.toml") && names.len() >= 5, "{names:?}");
}

#[test]
fn config_errors_name_the_key() {
    let err = |sets: &[&str]| {
        let r = RunConfig::load(None, &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).and_then(|c| c.validate().map(|_| c));
        r.expect_err("must be refused").to_string()
    };
    let e = err(&["model.dmodel=64"]);
    assert!(e.contains("model") && e.contains("dmodel"), "{e}");
    let e = err(&["model.d_model=\"wide\""]);
    assert!(e.contains("model.d_model"), "{e}");
    let e = err(&["model.ffn=\"topk\"", "model.moe.experts=4", "model.moe.top_k=5"]);
    assert!(e.contains("model.moe.top_k"), "{e}");
    let e = err(&["model.d_model=64", "model.heads=5"]);
    assert!(e.contains("model.heads") && e.contains("model.d_model"), "{e}");
    let e = err(&["train.warmup=500", "train.steps=100"]);
    assert!(e.contains("train.warmup"), "{e}");
    let e = err(&["model.ffn=\"sparse\""]);
    assert!(e.contains("model.ffn"), "{e}");
    let e = err(&["train.precision=\"bf16\""]);
    assert!(e.contains("train.precision") && e.contains("f16"), "{e}");
    let e = err(&["train.loss_scale=0"]);
    assert!(e.contains("train.loss_scale"), "{e}");
    // The MoE routing options.
    let moe = |extra: &[&str]| err(&[&["model.ffn=\"topk\"", "model.moe.experts=4", "model.moe.top_k=2"][..], extra].concat());
    for (set, key) in [
        ("model.moe.capacity_factor=0", "model.moe.capacity_factor"),
        ("model.moe.capacity_factor=-1.5", "model.moe.capacity_factor"),
        ("model.moe.bias_rate=-0.1", "model.moe.bias_rate"),
        ("model.moe.score=\"softmin\"", "model.moe.score"),
        ("model.moe.balance=\"loss\"", "model.moe.balance"),
        ("model.moe.default_estimator=\"median\"", "model.moe.default_estimator"),
        ("model.moe.shared_experts=65", "model.moe.shared_experts"),
    ] {
        let e = moe(&[set]);
        assert!(e.contains(key), "{set}: {e}");
    }
    let e = moe(&["model.ffn=\"default\"", "model.moe.score=\"sigmoid\""]);
    assert!(e.contains("model.moe.score") && e.contains("default"), "{e}");
    let e = moe(&["model.moe.experts=257"]);
    assert!(e.contains("model.moe.experts"), "{e}");
}

#[test]
fn missing_or_empty_data_is_refused() {
    assert!(load_text("/no/such/file.txt").err().unwrap().to_string().contains("does not exist"));
    let dir = scratch("empty-data");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(load_text(dir.to_str().unwrap()).err().unwrap().to_string().contains("no .txt files"));
    std::fs::write(dir.join("a.txt"), "   \n").unwrap();
    assert!(load_text(dir.to_str().unwrap()).err().unwrap().to_string().contains("no text"));
}

#[test]
fn bpe_runs_on_a_folder_and_sampling_continues_a_prompt() {
    let data = scratch("bpe-data");
    std::fs::create_dir_all(&data).unwrap();
    let text = moegrad::train::data::BUNDLED_CORPUS;
    std::fs::write(data.join("b.txt"), &text[..60_000]).unwrap();
    std::fs::write(data.join("a.txt"), &text[200_000..260_000]).unwrap();
    let out = scratch("bpe");
    let path = format!("data.path=\"{}\"", data.display());
    run(tiny(&["train.steps=3", "train.warmup=0", "data.tokenizer=\"bpe\"", "data.bpe_vocab=300", "model.ffn=\"topk\"", &path]), &out, Start::Fresh, None)
        .unwrap();
    let ckpt = Checkpoint::load(&out.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(ckpt.meta.tokenizer.vocab_size(), 300);
    assert!(out.join(moegrad::train::tokenizer::TOKENIZER_FILE).exists());
    let model =
        moegrad::models::Transformer::new(&device(), &ckpt.meta.config.model, &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1)).unwrap();
    ckpt.restore(&model, None).unwrap();
    let opts = SampleOptions { max_tokens: 12, temperature: 0.8, top_k: 20, seed: 3 };
    let sample = generate(&device(), &model, &ckpt.meta.tokenizer, "ROMEO.", &opts).unwrap();
    assert!(sample.starts_with("ROMEO.") && sample.len() > "ROMEO.".len(), "{sample:?}");
    assert_eq!(generate(&device(), &model, &ckpt.meta.tokenizer, "ROMEO.", &opts).unwrap(), sample, "seeded sampling repeats");
}

#[test]
fn compare_trains_each_kind_per_seed_and_writes_table_and_plots() {
    let out = scratch("compare");
    let opts = moegrad::research::compare::CompareOptions {
        config: tiny(&["train.steps=2", "train.warmup=0"]),
        variants: vec!["topk".parse().unwrap(), "default".parse().unwrap()],
        seeds: 2,
        out: out.clone(),
        quiet: true,
        force: false,
        interrupt: Default::default(),
    };
    let rows = moegrad::research::compare::compare(&device(), &opts).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.final_eval.len() == 2 && r.mean().is_finite()));
    for f in ["compare.png", "compare.svg", "compare.json", "topk-seed0/metrics.jsonl", "default-seed1/checkpoint.safetensors"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(moegrad::research::compare::table(&rows).contains("default"));
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    for part in ["lines: mean of 2 seeds; shaded: lowest to highest seed", "The second half of training", "tokens seen", "eval loss (nats/token)"] {
        assert!(svg.contains(part), "the comparison plot shows {part:?}");
    }
}

/// Past the model's context, sampling crops the window and goes on to the tokens asked
/// for; a temperature that is no number is refused.
#[test]
fn sampling_goes_past_the_context_to_the_tokens_asked_for() {
    let cfg = tiny(&["model.vocab_size=256", "model.context=16"]);
    let model = moegrad::models::Transformer::new(&device(), &cfg.model, &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(2)).unwrap();
    let tokenizer = moegrad::train::tokenizer::Tokenizer::Bytes;
    let opts = SampleOptions { max_tokens: 45, temperature: 0.8, top_k: 0, seed: 1 };
    let ids = moegrad::train::sample::generate_ids(&device(), &model, &tokenizer, "To be", &opts).unwrap();
    assert_eq!(ids.len(), 5 + 45, "the prompt and every token asked for");
    assert_eq!(&ids[..5], b"To be".map(u32::from));
    let long_prompt = "x".repeat(40);
    let ids = moegrad::train::sample::generate_ids(&device(), &model, &tokenizer, &long_prompt, &SampleOptions { max_tokens: 3, ..opts }).unwrap();
    assert_eq!(ids.len(), 43, "a prompt longer than the context is cropped, not refused");
    let err = generate(&device(), &model, &tokenizer, "To be", &SampleOptions { temperature: f32::NAN, ..opts }).unwrap_err().to_string();
    assert!(err.contains("temperature"), "{err}");
}

/// `sample` writes tokens as they are made: the pieces, joined, are `generate`'s text,
/// whether tokens end mid-character (random bytes) or depend on the token before (GPT-2).
#[test]
fn streamed_samples_are_the_generated_text_piece_by_piece() {
    struct Pieces(Vec<Vec<u8>>);
    impl std::io::Write for Pieces {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    use moegrad::train::tokenizer::{Standard, Tokenizer};
    for (tokenizer, vocab) in [(Tokenizer::Bytes, 256), (Tokenizer::Tiktoken { encoding: Standard::Gpt2 }, 50_304)] {
        let cfg = tiny(&[&format!("model.vocab_size={vocab}"), "model.context=16"]);
        let model = moegrad::models::Transformer::new(&device(), &cfg.model, &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(4)).unwrap();
        let opts = SampleOptions { max_tokens: 80, temperature: 1.0, top_k: 0, seed: 5 };
        let mut pieces = Pieces(Vec::new());
        moegrad::train::sample::generate_to(&device(), &model, &tokenizer, "To be", &opts, &mut pieces).unwrap();
        let whole = generate(&device(), &model, &tokenizer, "To be", &opts).unwrap() + "\n";
        assert_eq!(String::from_utf8(pieces.0.concat()).unwrap(), whole, "{}", tokenizer.describe());
        assert!(pieces.0.len() > 20, "{}: {} pieces for 80 tokens", tokenizer.describe(), pieces.0.len());
    }
    let cfg = tiny(&["model.vocab_size=256"]);
    let model = moegrad::models::Transformer::new(&device(), &cfg.model, &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(4)).unwrap();
    let too_many = SampleOptions { max_tokens: moegrad::train::sample::MAX_SAMPLE_TOKENS + 1, temperature: 1.0, top_k: 0, seed: 5 };
    let err = generate(&device(), &model, &Tokenizer::Bytes, "", &too_many).unwrap_err().to_string();
    assert!(err.contains("100001 tokens is more than the 100000"), "{err}");
}

/// `score_all` predicts every token once whatever the batch, and agrees with the
/// trainer's estimate where both read the same windows.
#[test]
fn scoring_all_tokens_is_independent_of_the_batch() {
    let cfg = tiny(&["model.vocab_size=256", "model.context=16"]);
    let model = moegrad::models::Transformer::new(&device(), &cfg.model, &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(4)).unwrap();
    let ids: Vec<u32> = moegrad::train::data::BUNDLED_CORPUS.bytes().take(16 * 9 + 6).map(u32::from).collect();
    let tokens = Tokens::in_memory("test", ids.clone(), 256);
    let scores: Vec<moegrad::train::Score> =
        [1, 3, 4].iter().map(|&b| moegrad::train::score_all(&device(), &model, &tokens, b, None, |_, _| {}).unwrap()).collect();
    for s in &scores {
        assert_eq!((s.tokens, s.windows), (ids.len() - 1, 10), "{s:?}");
        assert!((s.loss - scores[0].loss).abs() < 1e-5, "{s:?} vs {:?}", scores[0]);
    }
    let limited = moegrad::train::score_all(&device(), &model, &tokens, 3, Some(6), |_, _| {}).unwrap();
    assert_eq!((limited.tokens, limited.windows), (6 * 16, 6));
    // The first window alone, scored by both.
    let first = moegrad::train::score_all(&device(), &model, &Tokens::in_memory("test", ids[..17].to_vec(), 256), 1, None, |_, _| {}).unwrap();
    let estimate = moegrad::train::evaluate(&device(), &model, &Tokens::in_memory("test", ids[..18].to_vec(), 256), 1, 1).unwrap();
    assert!((first.loss - estimate as f64).abs() < 1e-5, "{first:?} vs {estimate}");
}

#[test]
fn stop_after_zero_writes_the_untrained_checkpoint_and_a_resume_from_it_trains_the_same_run() {
    let (stopped, straight) = (scratch("stop-after-0"), scratch("stop-after-0-straight"));
    let s = run(tiny(&["train.steps=6"]), &stopped, Start::Fresh, Some(0)).unwrap();
    assert_eq!(s.steps, 0, "no step trained");
    let ckpt = Checkpoint::load(&stopped.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!((ckpt.meta.step, ckpt.meta.tokens_seen), (0, 0));
    assert_eq!(ckpt.meta.eval_loss, Some(s.initial_eval_loss), "the checkpoint carries the untrained eval loss");
    let metrics = std::fs::read_to_string(stopped.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "only the step-0 evaluation: {metrics}");
    run(tiny(&["train.steps=6"]), &stopped, Start::Resume, None).unwrap();
    run(tiny(&["train.steps=6"]), &straight, Start::Fresh, None).unwrap();
    let (a, b) = (Checkpoint::load(&stopped.join(CHECKPOINT_FILE)).unwrap(), Checkpoint::load(&straight.join(CHECKPOINT_FILE)).unwrap());
    for name in a.names() {
        assert_eq!(a.values(name), b.values(name), "{name}: resumed from the untrained checkpoint vs straight");
    }
}

#[test]
fn patience_ends_a_run_that_stopped_improving_and_its_count_survives_a_resume() {
    let out = scratch("patience");
    // A learning rate too small to move any weight: every evaluation after the first ties it.
    let config = || tiny(&["train.steps=20", "train.warmup=0", "train.lr=1e-30", "train.min_lr=0", "train.eval_every=2", "train.patience=2"]);
    let s = run(config(), &out, Start::Fresh, None).unwrap();
    assert!(s.stopped_early, "out of patience");
    assert_eq!(s.steps, 6, "best at step 2, no better at 4 and 6");
    assert_eq!(Checkpoint::load(&out.join(CHECKPOINT_FILE)).unwrap().meta.step, 6, "a checkpoint where it stopped");
    let best = Checkpoint::load(&out.join(BEST_FILE)).unwrap();
    assert_eq!((best.meta.step, best.meta.best_eval_loss), (2, best.meta.eval_loss));
    // Resumed, it has no patience left: the next evaluation ends it again.
    let s = run(config(), &out, Start::Resume, None).unwrap();
    assert!(s.stopped_early && s.steps == 8, "resumed run went to step {}", s.steps);
    // Without patience the same run goes to the end.
    let s =
        run(tiny(&["train.steps=8", "train.warmup=0", "train.lr=1e-30", "train.min_lr=0", "train.eval_every=2"]), &scratch("no-patience"), Start::Fresh, None)
            .unwrap();
    assert!(!s.stopped_early && s.steps == 8);
}

#[test]
fn a_run_writes_metrics_csv_beside_the_jsonl_and_records_each_start_in_run_json() {
    let out = scratch("csv-and-record");
    let config = || tiny(&["train.steps=6", "train.log_every=1"]);
    run(config(), &out, Start::Fresh, Some(3)).unwrap();
    run(config(), &out, Start::Resume, None).unwrap();
    let jsonl = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    assert_eq!(&header[..4], ["step", "tokens", "train_loss", "eval_loss"]);
    assert!(header.contains(&"moe0_load_cv") && header.contains(&"moe0_router_entropy"), "{header:?}");
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    // One row per logged line, the resumed run's after the first run's cut at step 3.
    assert_eq!(rows.len(), jsonl.lines().count());
    assert_eq!(rows.iter().map(|r| r[0].parse::<u64>().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5, 6]);
    for (row, line) in rows.iter().zip(jsonl.lines()) {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(row.len(), header.len());
        let at = |c: &str| row[header.iter().position(|h| *h == c).unwrap()];
        match line["train_loss"].as_f64() {
            Some(loss) => assert_eq!(at("train_loss").parse::<f64>().unwrap(), loss),
            None => assert_eq!(at("train_loss"), "", "an empty cell where the line has no value"),
        }
    }
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let starts = record["starts"].as_array().unwrap();
    assert_eq!(starts.len(), 2, "the start and the resume");
    assert_eq!((starts[0]["resumed_at_step"].as_u64(), starts[1]["resumed_at_step"].as_u64()), (None, Some(3)));
    for s in starts {
        assert_eq!(s["adapter"]["name"].as_str().unwrap(), device().name());
        for key in ["moegrad_version", "git_commit", "started", "host", "kernel_policy"] {
            assert!(s[key].as_str().is_some_and(|v| !v.is_empty()), "run.json lacks {key}: {s}");
        }
        assert!(s["command_line"].as_array().is_some_and(|a| !a.is_empty()));
    }
}

/// The (step, value) pairs of TensorBoard tag `tag` in `events`.
fn tag_values(events: &[moegrad::train::tensorboard::Event], tag: &str) -> Vec<(i64, f32)> {
    use moegrad::train::tensorboard::What;
    events
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::Summary(s)) => s.value.iter().find(|v| v.tag == tag).map(|v| (e.step, v.simple_value)),
            _ => None,
        })
        .collect()
}

#[test]
fn tensorboard_event_files_hold_the_logged_scalars_once_across_a_resume() {
    use moegrad::train::tensorboard::{read_events, What, EVENTS_FILE};
    let out = scratch("tensorboard");
    let config = || tiny(&["train.steps=8", "train.log_every=2", "train.eval_every=4"]);
    run(config(), &out, Start::Fresh, Some(5)).unwrap();
    run(config(), &out, Start::Resume, None).unwrap();
    let events = read_events(&std::fs::read(out.join(EVENTS_FILE)).unwrap()).unwrap();
    assert_eq!(events[0].what, Some(What::FileVersion("brain.Event:2".into())), "a file starts with its version");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (key, tag) in
        [("train_loss", "loss/train"), ("eval_loss", "loss/eval"), ("lr", "optim/lr"), ("grad_norm", "optim/grad_norm"), ("tokens_per_s", "speed/tokens_per_s")]
    {
        let want: Vec<(i64, f32)> = lines.iter().filter_map(|l| l[key].as_f64().map(|v| (l["step"].as_i64().unwrap(), v as f32))).collect();
        assert!(!want.is_empty(), "{key} is logged");
        assert_eq!(tag_values(&events, tag), want, "{tag}: each logged step once, the first run's cut at its checkpoint");
    }
    let load_cv: Vec<i64> = tag_values(&events, "moe0/load_cv").into_iter().map(|(s, _)| s).collect();
    assert_eq!(load_cv, [2, 4, 6, 8]);
    assert!(lines.iter().all(|l| l["time"].as_f64().is_some_and(|t| t > 1.7e9)), "every line has its time");

    // TensorBoard's own reader, where Python has it.
    let python = std::env::var("MOEGRAD_PYTHON").unwrap_or_else(|_| "python3".into());
    let code = "import json, sys\nfrom tensorboard.backend.event_processing.event_accumulator import EventAccumulator\na = EventAccumulator(sys.argv[1]); a.Reload()\nprint(json.dumps({t: [[e.step, e.value] for e in a.Scalars(t)] for t in a.Tags()['scalars']}))";
    let Ok(result) = std::process::Command::new(&python).args(["-c", code, &out.display().to_string()]).output() else {
        eprintln!("skipped TensorBoard's reader: no {python}");
        return;
    };
    if String::from_utf8_lossy(&result.stderr).contains("No module named 'tensorboard'") {
        eprintln!("skipped TensorBoard's reader: {python} has no tensorboard package (set MOEGRAD_PYTHON to one)");
        return;
    }
    assert!(result.status.success(), "TensorBoard's reader failed: {}", String::from_utf8_lossy(&result.stderr));
    let read: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let train_loss: Vec<(i64, f32)> = read["loss/train"].as_array().unwrap().iter().map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap() as f32)).collect();
    assert_eq!(train_loss, tag_values(&events, "loss/train"), "TensorBoard reads what was written");
    assert_eq!(read["moe0/router_entropy"].as_array().unwrap().len(), 4);
}
