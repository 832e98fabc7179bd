//! The `moegrad` binary as a person at a terminal meets it: bad input gets a clear error
//! naming what was wrong and a non-zero exit, never a panic; a finished run says what it
//! wrote and what to run next; a log without a terminal carries elapsed time and ETA.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::scratch;

fn moegrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moegrad")).args(args).env("NODEVICE_SELECT", "1").output().expect("the moegrad binary runs")
}

/// Runs `args`, which must fail without a panic; returns stderr.
fn refused(args: &[&str]) -> String {
    let out = moegrad(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} must fail; stdout:\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    stderr
}

const TINY: [&str; 16] = [
    "--set",
    "model.d_model=16",
    "--set",
    "model.layers=1",
    "--set",
    "model.heads=2",
    "--set",
    "model.context=16",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.warmup=0",
    "--set",
    "train.eval_batches=1",
    "--set",
    "train.log_every=2",
];

fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    [&["train", "--out", out][..], &TINY[..], extra].concat()
}

#[test]
fn bad_flags_and_values_are_refused_by_name() {
    let dir = scratch("cli-flags");
    let out = dir.join("run");
    let out = out.to_str().unwrap();
    let e = refused(&train_args(out, &["--set", "train.lr=inf"]));
    assert!(e.contains("train.lr"), "{e}");
    let e = refused(&train_args(out, &["--data", "/dev/zero"]));
    assert!(e.contains("/dev/zero") && e.contains("not a regular file"), "{e}");
    assert!(!Path::new(out).join("config.toml").exists(), "refused runs write nothing");
    for (args, flag) in [
        (&["eval", "--checkpoint", "x.safetensors", "--batches", "0"][..], "--batches"),
        (&["bench", "--iters", "0"], "--iters"),
        (&["compare", "--seeds", "0", "--out", out], "--seeds"),
        (&["sweep", "plan", "--config", "sweeps/tiny.toml", "--emit", "slurm", "--out", out, "--shards", "0"], "--shards"),
        (&["sample", "--checkpoint", "x.safetensors", "--temperature", "NaN"], "--temperature"),
        (&["sample", "--checkpoint", "x.safetensors", "--temperature", "-0.5"], "--temperature"),
        (&["train", "--out", out, "--resume", "--force"], "--force"),
    ] {
        let e = refused(args);
        assert!(e.contains(flag), "{args:?}: {e}");
    }
    let e = refused(&["bench", "--scale", "tiny", "--iters", "1", "--only", "no_such_workload"]);
    assert!(e.contains("no_such_workload") && e.contains("selects no workload"), "{e}");
}

#[test]
fn a_run_is_never_started_over_unasked_and_its_end_says_what_to_do_next() {
    let dir = scratch("cli-run");
    let out = dir.join("run");
    let out = out.to_str().unwrap();
    let first = moegrad(&train_args(out, &["--set", "train.steps=4"]));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&first.stderr));
    // Piped, so no progress bar: the log lines carry the time so far and to go.
    let logged = stdout.lines().find(|l| l.starts_with("step")).unwrap_or_default();
    assert!(logged.contains("elapsed 0:") && logged.contains("eta 0:"), "{stdout}");
    for said in ["M-parameter model", "checkpoint.safetensors", "metrics.jsonl", "config.toml", "moegrad sample --checkpoint", "moegrad eval --checkpoint"] {
        assert!(stdout.contains(said), "the end of the run lacks {said:?}:\n{stdout}");
    }
    let checkpoint = Path::new(out).join("checkpoint.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();
    let e = refused(&train_args(out, &["--set", "train.steps=4"]));
    assert!(e.contains("already holds a run") && e.contains("--resume") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before);

    // eval scores every token of the text it is given, and says so.
    let text = dir.join("held-out.txt");
    std::fs::write(&text, &moegrad::train::data::BUNDLED_CORPUS[..3000]).unwrap();
    let eval = moegrad(&["eval", "--checkpoint", checkpoint.to_str().unwrap(), "--data", text.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&eval.stdout);
    assert!(eval.status.success() && said.contains("scored all 2999 tokens"), "{said}\n{}", String::from_utf8_lossy(&eval.stderr));
    let eval = moegrad(&["eval", "--checkpoint", checkpoint.to_str().unwrap(), "--data", text.to_str().unwrap(), "--batches", "2"]);
    let said = String::from_utf8_lossy(&eval.stdout);
    assert!(said.contains("scored the first 128 of 2999 tokens"), "{said}");

    // Sampling past the context goes on to the tokens asked for.
    let sample = moegrad(&["sample", "--checkpoint", checkpoint.to_str().unwrap(), "--tokens", "40", "--temperature", "0"]);
    assert!(sample.status.success(), "{}", String::from_utf8_lossy(&sample.stderr));
}

#[test]
fn a_checkpoint_with_a_broken_tokenizer_is_refused_by_sample() {
    let dir = scratch("cli-tokenizer");
    let out = dir.join("run");
    let done = moegrad(&train_args(out.to_str().unwrap(), &["--set", "train.steps=1", "--quiet"]));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    // The run state is JSON inside the header: point the byte tokenizer at merges that
    // reach past the vocabulary (the checksums cover tensors, not the run state).
    let path = out.join("checkpoint.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    let from = "{\\\"kind\\\":\\\"bytes\\\"}";
    assert!(header.contains(from), "{header}");
    let to = "{\\\"kind\\\":\\\"bpe\\\",\\\"merges\\\":[[9,999]]}";
    let mut edited = header.trim_end().replacen(from, to, 1).replacen("\\\"vocab_size\\\":256", "\\\"vocab_size\\\":257", 1);
    while !edited.len().is_multiple_of(8) {
        edited.push(' ');
    }
    let rebuilt = [&(edited.len() as u64).to_le_bytes()[..], edited.as_bytes(), &bytes[8 + header_len..]].concat();
    std::fs::write(&path, &rebuilt).unwrap();
    let e = refused(&["sample", "--checkpoint", path.to_str().unwrap()]);
    assert!(e.contains("tokenizer is invalid") && e.contains("merge 0 joins (9, 999)"), "{e}");
}

#[test]
fn data_prepare_and_inspect_at_the_terminal() {
    let dir = scratch("cli-data");
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("plays.txt");
    std::fs::write(&text, &moegrad::train::data::BUNDLED_CORPUS[..60_000]).unwrap();
    let out = dir.join("shards");
    let (text, out) = (text.to_str().unwrap(), out.to_str().unwrap());
    assert!(refused(&["data", "prepare", "--tokenizer", "gpt3", "--out", out, text]).contains("expected byte, bpe, gpt2"));
    assert!(refused(&["data", "prepare", "--out", out, "no-such.txt"]).contains("no-such.txt does not exist"));
    let prepared = moegrad(&["data", "prepare", "--tokenizer", "gpt2", "--out", out, "--val-tokens", "2000", text]);
    let stdout = String::from_utf8_lossy(&prepared.stdout);
    assert!(prepared.status.success() && stdout.contains("2000 val tokens") && stdout.contains("complete"), "{stdout}");
    assert!(refused(&["data", "prepare", "--out", out, text]).contains("--resume to finish an unfinished prepare, or --force"));
    let inspected = moegrad(&["data", "inspect", out, "--tokens", "8"]);
    let stdout = String::from_utf8_lossy(&inspected.stdout);
    assert!(inspected.status.success() && stdout.contains("tokenizer gpt2") && stdout.contains("<|endoftext|>HAMLET"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plot_draws_expert_load_and_compare_and_init_from_refuse_bad_input_by_name() {
    let dir = scratch("cli-moe");
    let (moe, dense) = (dir.join("moe"), dir.join("dense"));
    let (moe, dense) = (moe.to_str().unwrap(), dense.to_str().unwrap());
    for (out, ffn) in [(moe, "model.ffn=\"topk\""), (dense, "model.ffn=\"dense\"")] {
        let run = moegrad(&train_args(out, &["--set", ffn, "--set", "train.steps=4", "--quiet"]));
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    }
    let plotted = moegrad(&["plot", moe]);
    assert!(plotted.status.success(), "{}", String::from_utf8_lossy(&plotted.stderr));
    for ext in ["png", "svg"] {
        assert!(dir.join("moe").join(format!("expert-load.{ext}")).exists(), "plot wrote no expert-load.{ext}");
        assert!(dir.join("moe").join(format!("curves.{ext}")).exists(), "plot wrote no curves.{ext}");
    }
    // A dense run has curves and no expert loads; two runs share the curves' panels.
    let both = dir.join("both").display().to_string();
    let plotted = moegrad(&["plot", dense, moe, "--out", &both]);
    assert!(plotted.status.success(), "{}", String::from_utf8_lossy(&plotted.stderr));
    assert!(dir.join("both").join("curves.png").exists() && dir.join("both").join("expert-load.png").exists());
    let plotted = moegrad(&["plot", dense]);
    assert!(plotted.status.success() && dir.join("dense").join("curves.svg").exists() && !dir.join("dense").join("expert-load.png").exists());
    let svg = std::fs::read_to_string(dir.join("both").join("curves.svg")).unwrap();
    for text in ["tokens seen", "loss (nats/token)", "tokens/s", "dense (train)", "moe (eval)"] {
        assert!(svg.contains(text), "the curves name {text:?}");
    }
    assert!(refused(&["plot", dir.join("nowhere").to_str().unwrap()]).contains("metrics.jsonl"));
    let err = refused(&["compare", "--variant", "bogus", "--out", dir.join("c").to_str().unwrap()]);
    assert!(err.contains("\"bogus\"") && err.contains("feed-forward kind"), "{err}");
    let err = refused(&["compare", "--variant", "topk:model.moe.score", "--out", dir.join("c").to_str().unwrap()]);
    assert!(err.contains("\"model.moe.score\" is not KEY=VALUE"), "{err}");
    let err = refused(&["compare", "--variant", "topk:model.moe.scores=\"sigmoid\"", "--out", dir.join("c").to_str().unwrap()]);
    assert!(err.contains("scores"), "an unknown key is named: {err}");
    let missing = dir.join("no-such.safetensors");
    let err = refused(&train_args(dir.join("up").to_str().unwrap(), &["--set", "model.ffn=\"topk\"", "--init-from", missing.to_str().unwrap()]));
    assert!(err.contains("no-such.safetensors"), "{err}");
}

#[test]
fn logs_show_model_flops_utilisation_against_the_adapter_s_peak() {
    let dir = scratch("cli-mfu");
    let run = |name: &str, peak: Option<&str>| {
        let out = dir.join(name).display().to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_moegrad"));
        command.args(train_args(&out, &["--set", "train.steps=4"])).env("NODEVICE_SELECT", "1").env_remove("MOEGRAD_PEAK_TFLOPS");
        if let Some(p) = peak {
            command.env("MOEGRAD_PEAK_TFLOPS", p);
        }
        (command.output().unwrap(), dir.join(name))
    };
    let (output, folder) = run("peak", Some("0.002"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("MFU against 0.002 TFLOP/s a GPU (MOEGRAD_PEAK_TFLOPS)") && stdout.contains("% "), "{stdout}");
    let config = moegrad::train::checkpoint::Checkpoint::load(&folder.join("checkpoint.safetensors")).unwrap().meta.config.model;
    let flops_per_token = moegrad::research::accounting::account(&config).flops_per_token;
    let logged: Vec<serde_json::Value> =
        std::fs::read_to_string(folder.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps: Vec<&serde_json::Value> = logged.iter().filter(|l| l["tokens_per_s"].is_number()).collect();
    assert!(!steps.is_empty());
    for line in steps {
        let want = flops_per_token * line["tokens_per_s"].as_f64().unwrap() / 0.002e12;
        let got = line["mfu"].as_f64().unwrap_or_else(|| panic!("no mfu in {line}"));
        assert!((got - want).abs() <= 1e-12 * want.max(1.0), "mfu {got}, FLOPs a token x tokens/s / peak = {want}");
        assert!(stdout.contains(&format!("mfu {:.1}%", 100.0 * got)), "the log line shows it: {stdout}");
    }
    // An adapter whose peak is unknown (lavapipe) logs no MFU; a bad peak is refused.
    let (output, folder) = run("unknown", None);
    assert!(output.status.success());
    let text = std::fs::read_to_string(folder.join("metrics.jsonl")).unwrap();
    let device = crate::common::device();
    if moegrad::bench::peaks::known_peaks(&device).is_none() {
        assert!(!text.contains("\"mfu\""), "{text}");
    }
    let (output, folder) = run("bad", Some("fast"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success() && stderr.contains("MOEGRAD_PEAK_TFLOPS=\"fast\" is not a number"), "{stderr}");
    assert!(!folder.exists(), "refused before the run folder is made");
}
