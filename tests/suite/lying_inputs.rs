//! Inputs that lie or change underneath: a `meta.json` whose fields disagree with its
//! shards or tokenizer, a config naming another tokenizer than the shards', shards changed
//! between a checkpoint and its resume or while a run reads them, a `compare` variant that
//! is invalid or diverges, symlinks and a second writer in `data prepare`, and the
//! settings that used to do nothing silently. Each is refused (or warned about) by name,
//! and nothing is lost.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moegrad::data::folder::META_FILE;
use moegrad::data::{prepare, PrepareOptions, PrepareStart, ShardFolder};
use moegrad::folder_lock::lock_folder;
use moegrad::research::compare::{compare, CompareOptions};
use moegrad::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use moegrad::train::config::{RunConfig, TokenizerKind};
use moegrad::train::data::BUNDLED_CORPUS;
use moegrad::train::run_folder::Start;

use crate::common::{config_from_sets, device, scratch, train_quietly as run, TINY_DEFAULT_MOE};

/// A GPT-2 shard folder of 100 kB of the corpus: a val shard and a few train shards.
fn gpt2_folder(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let text = dir.join("t.txt");
    std::fs::write(&text, &BUNDLED_CORPUS[..100_000]).unwrap();
    let out = dir.join("gpt2");
    let opts = PrepareOptions {
        tokenizer: TokenizerKind::try_from("gpt2".to_string()).unwrap(),
        out: out.clone(),
        name: Some("t".into()),
        shard_tokens: 10_000,
        val_tokens: Some(2_000),
        inputs: vec![text],
        start: PrepareStart::Fresh,
        stop_after_shards: None,
    };
    prepare(&opts, |_, _| {}).unwrap();
    out
}

/// llm.c shards of byte tokens (a val shard and two train shards) in `dir`.
fn byte_shards(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let bytes: Vec<u16> = BUNDLED_CORPUS.bytes().take(200_000).map(u16::from).collect();
    for (name, part) in [("x_val_000000.bin", &bytes[..20_000]), ("x_train_000001.bin", &bytes[20_000..110_000]), ("x_train_000002.bin", &bytes[110_000..])] {
        let mut header = [0i32; 256];
        (header[0], header[1], header[2]) = (20240520, 1, part.len() as i32);
        let data: Vec<u8> = header.iter().flat_map(|i| i.to_le_bytes()).chain(part.iter().flat_map(|t| t.to_le_bytes())).collect();
        std::fs::write(dir.join(name), data).unwrap();
    }
    dir.to_path_buf()
}

fn tiny(data: &Path, extra: &[&str]) -> RunConfig {
    let data = format!("data.path={}", toml::Value::String(data.display().to_string()));
    let base =
        ["model.d_model=16", "model.layers=1", "model.heads=2", "model.context=16", "train.batch_size=2", "train.warmup=0", "train.eval_batches=1", &data];
    config_from_sets(&base, extra)
}

/// A change to a `meta.json`.
type Edit = dyn Fn(&mut serde_json::Value);

#[test]
fn a_meta_json_that_lies_is_refused_by_field() {
    let dir = scratch("lies-meta");
    let folder = gpt2_folder(&dir);
    let good = std::fs::read_to_string(folder.join(META_FILE)).unwrap();
    ShardFolder::open(&folder, None).unwrap().train_tokens().unwrap();
    let lie = |edit: &Edit| {
        let mut meta: serde_json::Value = serde_json::from_str(&good).unwrap();
        edit(&mut meta);
        std::fs::write(folder.join(META_FILE), meta.to_string()).unwrap();
        let opened = ShardFolder::open(&folder, None).and_then(|f| f.train_tokens().and(f.val_tokens()));
        opened.err().expect("a lying meta.json is refused").to_string()
    };
    let cases: [(&str, &Edit, &str); 10] = [
        ("tokenizer", &|m| m["tokenizer"] = "llama3".into(), "vocab_size = 50257 but its tokenizer llama3"),
        ("format", &|m| m["format"] = 9.into(), "format 9 is not the 1"),
        ("small vocabulary", &|m| m["vocab_size"] = 100.into(), "vocab_size = 100 but its tokenizer gpt2"),
        ("huge vocabulary", &|m| m["vocab_size"] = 1_000_000_000_000u64.into(), "vocab_size = 1000000000000"),
        ("token width", &|m| m["token_bytes"] = 4.into(), "token_bytes = 4"),
        ("separator", &|m| m["separator"] = 1_000_000_000.into(), "separator = 1000000000 is not a token"),
        ("another separator", &|m| m["separator"] = 13.into(), "separator = 13 but gpt2 separates documents with token 50256"),
        ("no bytes", &|m| m["shards"][0]["bytes"] = 0.into(), "0 bytes of text"),
        ("a path out", &|m| m["shards"][1]["file"] = "../../cfg/tiny.toml".into(), "\"../../cfg/tiny.toml\" is not a plain file name"),
        ("a token count", &|m| m["shards"][1]["tokens"] = 7.into(), "meta.json counts 7 tokens"),
    ];
    for (what, edit, expected) in cases {
        let err = lie(edit);
        assert!(err.contains(expected) && err.contains("meta.json"), "{what}: {err}");
    }
    std::fs::write(folder.join(META_FILE), &good).unwrap();

    // The config's tokenizer is the folder's or none: a named other one is refused, naming
    // both; left out, the folder's is the run's.
    let err = run(tiny(&folder, &["train.steps=1", "data.tokenizer=\"byte\""]), &dir.join("run"), Start::Fresh, None).unwrap_err().to_string();
    assert!(err.contains("data.tokenizer = \"byte\" but the shards") && err.contains("made with gpt2"), "{err}");
    assert!(!dir.join("run").join(CHECKPOINT_FILE).exists());
}

#[test]
fn a_resume_on_changed_shards_is_refused_naming_what_changed() {
    let dir = scratch("lies-resume");
    let shards = byte_shards(&dir.join("shards"));
    let out = dir.join("run");
    let config = tiny(&shards, &["train.steps=4"]);
    run(config.clone(), &out, Start::Fresh, Some(2)).unwrap();
    // The second train shard's last token changed in place, the size kept.
    let shard = shards.join("x_train_000002.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    let before = std::fs::read(out.join(CHECKPOINT_FILE)).unwrap();
    let err = run(config.clone(), &out, Start::Resume, None).unwrap_err().to_string();
    assert!(err.contains("x_train_000002.bin has other content") && err.contains("data.allow_changed=true"), "{err}");
    assert_eq!(std::fs::read(out.join(CHECKPOINT_FILE)).unwrap(), before, "a refused resume changes nothing");
    std::fs::write(shards.join("x_train_000003.bin"), &bytes).unwrap();
    let err = run(config.clone(), &out, Start::Resume, None).unwrap_err().to_string();
    assert!(err.contains("x_train_000003.bin is new"), "{err}");
    // Knowingly: the run goes on, and its checkpoint records the new data.
    let allowed = config.with_overrides(&["data.allow_changed=true".into()]).unwrap();
    run(allowed, &out, Start::Resume, None).unwrap();
    let ckpt = Checkpoint::load(&out.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(ckpt.meta.step, 4);
    assert!(!ckpt.meta.config.data.allow_changed, "the permission holds for one start only");
    assert_eq!(ckpt.meta.data.unwrap().files.len(), 4, "the val shard and three train shards");
}

#[test]
fn a_shard_truncated_under_a_running_trainer_is_named_and_the_checkpoint_kept() {
    let dir = scratch("lies-truncate");
    let shards = byte_shards(&dir.join("shards"));
    let out = dir.join("run");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moegrad"));
    cmd.args(["train", "--quiet", "--out", out.to_str().unwrap(), "--data", shards.to_str().unwrap()]).env("NODEVICE_SELECT", "1");
    for set in ["model.d_model=16", "model.layers=1", "model.heads=2", "model.context=16", "train.batch_size=2", "train.warmup=0"] {
        cmd.args(["--set", set]);
    }
    cmd.args(["--set", "train.steps=100000", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=0"]);
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !out.join(CHECKPOINT_FILE).exists() && child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // As `truncate -s 2000` does: a mapped shard would kill the trainer with SIGBUS.
    let shard = shards.join("x_train_000002.bin");
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(2_000).unwrap();
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "an error, not a signal ({}):\n{stderr}", done.status);
    assert!(stderr.contains("x_train_000002.bin changed while this run was reading it"), "{stderr}");
    Checkpoint::load(&out.join(CHECKPOINT_FILE)).expect("the last checkpoint survives and verifies");
}

#[test]
fn compare_checks_every_variant_first_and_goes_on_past_one_that_fails() {
    let out = scratch("lies-compare");
    let config = config_from_sets(&TINY_DEFAULT_MOE, &["train.steps=3", "train.eval_batches=1"]);
    let options = |variants: &[&str]| CompareOptions {
        config: config.clone(),
        variants: variants.iter().map(|v| v.parse().unwrap()).collect(),
        seeds: 1,
        out: out.clone(),
        quiet: true,
        force: false,
        interrupt: Default::default(),
    };
    let err = compare(&device(), &options(&["topk", "wide:model.moe.top_k=99"])).err().expect("an invalid variant is refused").to_string();
    assert!(err.contains("nothing was trained") && err.contains("variant \"wide\"") && err.contains("top_k"), "{err}");
    assert!(!out.join("topk-seed0").exists(), "no variant trains before every one is checked");

    // One diverges (steps of 3e38 overflow f32); the others still train and are compared.
    let exploding = "exploding:train.lr=3e38,train.min_lr=3e38,train.clip=0,train.weight_decay=1.0";
    let rows = compare(&device(), &options(&["topk", exploding, "default"])).unwrap();
    assert_eq!(rows.iter().map(|r| r.final_eval.len()).collect::<Vec<_>>(), [1, 0, 1]);
    assert!(rows[1].failures[0].contains("seed 0") && rows[1].failures[0].contains("became"), "{:?}", rows[1].failures);
    let table = moegrad::research::compare::table(&rows);
    assert!(table.lines().any(|l| l.starts_with("exploding") && l.contains("failed")), "{table}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert!(json[1]["failures"][0].as_str().unwrap().contains("became") && json[2]["final_eval_loss"][0].as_f64().unwrap().is_finite());
}

#[test]
fn prepare_follows_no_link_inside_a_folder_and_takes_the_folders_lock() {
    let dir = scratch("lies-prepare");
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("a.txt"), &BUNDLED_CORPUS[..60_000]).unwrap();
    let options = |out: &Path| PrepareOptions {
        tokenizer: TokenizerKind::try_from("gpt2".to_string()).unwrap(),
        out: out.to_path_buf(),
        name: Some("t".into()),
        shard_tokens: 10_000,
        val_tokens: Some(2_000),
        inputs: vec![docs.clone()],
        start: PrepareStart::Fresh,
        stop_after_shards: None,
    };
    #[cfg(unix)]
    {
        // A link back to the folder itself: followed, it would repeat the text forever.
        std::os::unix::fs::symlink(&docs, docs.join("loop")).unwrap();
        let err = prepare(&options(&dir.join("looped")), |_, _| {}).unwrap_err().to_string();
        assert!(err.contains("loop is a symbolic link") && err.contains("follows no links"), "{err}");
        std::fs::remove_file(docs.join("loop")).unwrap();
    }
    let out = dir.join("held");
    std::fs::create_dir_all(&out).unwrap();
    let held = lock_folder(&out).unwrap();
    let err = prepare(&options(&out), |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("is writing to"), "{err}");
    drop(held);
    prepare(&options(&out), |_, _| {}).unwrap();
}

#[test]
fn settings_that_did_nothing_are_refused_or_named() {
    let dir = scratch("lies-silent");
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.toml");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let err = RunConfig::load(Some(&empty), &[]).unwrap_err().to_string();
    assert!(err.contains("sets no key") && err.contains("empty.toml"), "{err}");

    let out = dir.join("run");
    let config = config_from_sets(&TINY_DEFAULT_MOE, &["train.steps=3", "train.eval_batches=1"]);
    run(config.clone(), &out, Start::Fresh, None).unwrap();
    let fewer = config.with_overrides(&["train.steps=2".into()]).unwrap();
    let err = run(fewer, &out, Start::Resume, None).unwrap_err().to_string();
    assert!(err.contains("train.steps = 2 is below the checkpoint's step 3"), "{err}");

    let moegrad = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_moegrad")).args(args).env("NODEVICE_SELECT", "1").output().unwrap();
    // A run stopped before its first checkpoint: the way on is named, not "cannot read".
    let unfinished = dir.join("unfinished");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::write(unfinished.join("metrics.jsonl"), "{\"step\": 0, \"eval_loss\": 5.5}\n").unwrap();
    let resumed = moegrad(&["train", "--out", unfinished.to_str().unwrap(), "--resume"]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(!resumed.status.success() && stderr.contains("stopped before its first checkpoint") && stderr.contains("--force"), "{stderr}");
    let both = moegrad(&["train", "--out", out.to_str().unwrap(), "--resume", "--init-from", "elsewhere.safetensors"]);
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(!both.status.success() && stderr.contains("--init-from") && stderr.contains("--resume"), "{stderr}");
    let score = moegrad(&["train", "--out", dir.join("score").to_str().unwrap(), "--set", "model.moe.score=1"]);
    let stderr = String::from_utf8_lossy(&score.stderr);
    assert!(!score.status.success() && stderr.contains("model.moe.score") && stderr.contains("softmax"), "{stderr}");
    let ignored = moegrad(&[
        "train",
        "--quiet",
        "--out",
        dir.join("ignored").to_str().unwrap(),
        "--set",
        "model.ffn=\"topk\"",
        "--set",
        "model.moe.bias_rate=0.01",
        "--stop-after",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&ignored.stderr);
    assert!(ignored.status.success() && stderr.contains("warning: model.moe.bias_rate = 0.01 is read only with model.moe.balance = \"bias\""), "{stderr}");
    let sample = moegrad(&["sample", "--checkpoint", out.join(CHECKPOINT_FILE).to_str().unwrap(), "--tokens", "1000000000"]);
    let stderr = String::from_utf8_lossy(&sample.stderr);
    assert!(!sample.status.success() && stderr.contains("1000000000") && stderr.contains("100000"), "{stderr}");
}
