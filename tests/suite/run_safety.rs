//! Runs that never lose work: a folder holding a run is not started over unasked, two
//! trainers never share one, a refused resume changes nothing, weights broken by an update
//! never replace a good checkpoint, checkpoints prove they are intact, the last N and the
//! best are kept, and `compare` reuses a run only when its config is the same.

use std::collections::BTreeMap;
use std::path::Path;

use moegrad::ops::{AdamW, AdamWConfig};
use moegrad::research::compare::{compare, CompareOptions};
use moegrad::train::checkpoint::{self, Checkpoint, BEST_FILE, CHECKPOINT_FILE};
use moegrad::train::config::RunConfig;
use moegrad::train::run_folder::{RunFolder, Start};
use moegrad::Module;
use rand::SeedableRng;
use safetensors::SafeTensors;

use crate::common::{config_from_sets, device, scratch, train_quietly as run, TINY_DEFAULT_MOE};

fn tiny(extra: &[&str]) -> RunConfig {
    let base = [&TINY_DEFAULT_MOE[..], &["train.eval_batches=1", "train.log_every=1", "train.eval_every=0"]].concat();
    config_from_sets(&base, extra)
}

/// Every file of a folder with its bytes (the lock file aside).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != ".lock")
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

#[test]
fn a_fresh_run_into_a_folder_holding_a_run_is_refused_and_force_starts_over() {
    let out = scratch("held-run");
    run(tiny(&["train.steps=2"]), &out, Start::Fresh, None).unwrap();
    let before = snapshot(&out);
    let err = run(tiny(&["train.steps=3"]), &out, Start::Fresh, None).unwrap_err().to_string();
    assert!(err.contains("already holds a run") && err.contains("--resume") && err.contains("--force"), "{err}");
    assert_eq!(snapshot(&out), before, "a refused run changes nothing");
    run(tiny(&["train.steps=3", "train.seed=5"]), &out, Start::Force, None).unwrap();
    assert_eq!(Checkpoint::load(&out.join(CHECKPOINT_FILE)).unwrap().meta.config.train.seed, 5);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "the forced run's metrics alone (step 0 and three steps): {metrics}");
}

#[test]
fn a_second_trainer_is_refused_while_a_folder_is_held() {
    let out = scratch("locked");
    let held = RunFolder::claim(&out, Start::Fresh).unwrap();
    let err = run(tiny(&["train.steps=1"]), &out, Start::Fresh, None).unwrap_err().to_string();
    assert!(err.contains("is writing to") && err.contains(&format!("pid {}", std::process::id())), "{err}");
    assert!(!out.join("metrics.jsonl").exists());
    drop(held);
    run(tiny(&["train.steps=1"]), &out, Start::Fresh, None).unwrap();
}

#[test]
fn a_refused_resume_writes_nothing() {
    let missing = scratch("resume-nothing");
    let err = run(tiny(&["train.steps=2"]), &missing, Start::Resume, None).unwrap_err().to_string();
    assert!(err.contains("no run to continue"), "{err}");
    assert!(!missing.exists(), "a refused resume does not even create the folder");

    let out = scratch("resume-refused");
    run(tiny(&["train.steps=4"]), &out, Start::Fresh, Some(2)).unwrap();
    let before = snapshot(&out);
    let err = run(tiny(&["train.steps=4", "model.d_model=24", "model.moe.expert_hidden=24"]), &out, Start::Resume, None).unwrap_err().to_string();
    assert!(err.contains("has shape"), "{err}");
    let err = run(tiny(&["train.steps=4", "data.path=\"/no/such/corpus.txt\""]), &out, Start::Resume, None).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(snapshot(&out), before, "config.toml, metrics and checkpoint are untouched");
}

/// An update at a huge learning rate breaks the weights in the step after a good
/// checkpoint; with a checkpoint every step, that step's checkpoint must not be written.
#[test]
fn weights_broken_by_an_update_never_replace_a_good_checkpoint() {
    let out = scratch("nan-update");
    run(tiny(&["train.steps=8", "train.checkpoint_every=1"]), &out, Start::Fresh, Some(2)).unwrap();
    let exploding = tiny(&["train.steps=8", "train.checkpoint_every=1", "train.lr=3.4e38", "train.min_lr=3.4e38", "train.clip=0", "train.weight_decay=1.0"]);
    let err = run(exploding, &out, Start::Resume, None).expect_err("an exploding run must stop").to_string();
    let kept = Checkpoint::load(&out.join(CHECKPOINT_FILE)).expect("the checkpoint on disk is intact and finite");
    assert_eq!(kept.meta.step, 2, "{err}");
    // Step 3's loss, computed before its update, is finite: only the count of non-finite
    // weights can see that the update broke them.
    assert!(err.contains("became NaN or infinite in the update of step 3") && err.contains("the last good checkpoint (step 2) is kept"), "{err}");
}

#[test]
fn a_checkpoint_with_a_non_finite_value_is_never_written() {
    let out = scratch("encode-nan");
    std::fs::create_dir_all(&out).unwrap();
    let cfg = tiny(&["model.vocab_size=256"]);
    let model = moegrad::models::Transformer::new(&device(), &cfg.model, &mut rand::rngs::StdRng::seed_from_u64(0)).unwrap();
    let opt = AdamW::new(&model, AdamWConfig::default()).unwrap();
    let (name, p) = model.named_parameters().into_iter().nth(3).unwrap();
    let mut values = p.to_vec().unwrap();
    let middle = values.len() / 2;
    values[middle] = f32::NAN;
    p.write(&values).unwrap();
    let meta = checkpoint::CheckpointMeta { step: 7, ..checkpoint::CheckpointMeta::new(cfg, moegrad::train::tokenizer::Tokenizer::Bytes) };
    let err = checkpoint::save(&out.join(CHECKPOINT_FILE), &meta, &model, &opt).unwrap_err().to_string();
    assert!(err.contains(&format!("param.{name}")) && err.contains("NaN"), "{err}");
    assert!(!out.join(CHECKPOINT_FILE).exists());
}

/// A checkpoint file rebuilt with `edit` applied to its tensors, run state and checksums.
fn rewritten(bytes: &[u8], edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>, &mut serde_json::Value, &mut Option<BTreeMap<String, u32>>)) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    let metadata = header.metadata().clone().unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&metadata["moegrad"]).unwrap();
    let mut sums: Option<BTreeMap<String, u32>> = metadata.get(checkpoint::CHECKSUMS_KEY).map(|s| serde_json::from_str(s).unwrap());
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut tensors, &mut meta, &mut sums);
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        tensors.iter().map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())).collect();
    let mut out_meta = std::collections::HashMap::from([("moegrad".to_string(), meta.to_string())]);
    if let Some(s) = sums {
        out_meta.insert(checkpoint::CHECKSUMS_KEY.to_string(), serde_json::to_string(&s).unwrap());
    }
    safetensors::serialize(views, Some(out_meta)).unwrap()
}

fn load_err(bytes: &[u8]) -> String {
    Checkpoint::from_bytes(bytes).err().expect("must be refused").to_string()
}

#[test]
fn checkpoints_prove_they_are_intact() {
    let out = scratch("intact");
    run(tiny(&["train.steps=1"]), &out, Start::Fresh, None).unwrap();
    let good = std::fs::read(out.join(CHECKPOINT_FILE)).unwrap();
    assert!(Checkpoint::from_bytes(&good).unwrap().verified);

    // One flipped bit in the last tensor's data (the data follows the header).
    let mut flipped = good.clone();
    let at = flipped.len() - 3;
    flipped[at] ^= 0x10;
    let err = load_err(&flipped);
    assert!(err.contains("fails its checksum") && err.contains("tensor "), "{err}");

    // Two tensors of one shape with their names swapped: their data no longer matches the
    // checksums stored under their names.
    let swapped = rewritten(&good, |t, _, _| {
        let (i, j) = (0..t.len()).flat_map(|i| (i + 1..t.len()).map(move |j| (i, j))).find(|&(i, j)| t[i].1 == t[j].1 && t[i].2 != t[j].2).unwrap();
        let name_i = t[i].0.clone();
        t[i].0 = t[j].0.clone();
        t[j].0 = name_i;
    });
    assert!(load_err(&swapped).contains("fails its checksum"));

    // A parameter and its Adam moment of the same shape swapped by name, their checksums
    // swapped too: each checksum covers its tensor's name, so both fail.
    let swapped_with_sums = rewritten(&good, |t, _, sums| {
        let i = t.iter().position(|(n, _, _)| n.starts_with("param.")).unwrap();
        let moment = format!("adam_v.{}", &t[i].0["param.".len()..]);
        let j = t.iter().position(|(n, _, _)| *n == moment).unwrap();
        let name_i = t[i].0.clone();
        t[i].0 = t[j].0.clone();
        t[j].0 = name_i.clone();
        let sums = sums.as_mut().unwrap();
        let (a, b) = (sums[&name_i], sums[&moment]);
        sums.insert(name_i, b);
        sums.insert(moment, a);
    });
    let err = load_err(&swapped_with_sums);
    assert!(err.contains("fails its checksum") && err.contains("renamed"), "{err}");

    // A negative second moment, its checksum made to match: Adam's v is never negative.
    let negative = rewritten(&good, |t, _, sums| {
        let (name, shape, data) = t.iter_mut().find(|(n, _, _)| n.starts_with("adam_v.")).unwrap();
        data[..4].copy_from_slice(&(-1.0f32).to_le_bytes());
        sums.as_mut().unwrap().insert(name.clone(), checkpoint::bound_checksum(name, safetensors::Dtype::F32, shape, data));
    });
    let err = load_err(&negative);
    assert!(err.contains("adam_v.") && err.contains("never negative"), "{err}");

    // A NaN, with its checksum made to match: refused by value, naming the tensor.
    let nan = rewritten(&good, |t, _, sums| {
        let (name, shape, data) = &mut t[0];
        data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        sums.as_mut().unwrap().insert(name.clone(), checkpoint::bound_checksum(name, safetensors::Dtype::F32, shape, data));
    });
    let err = load_err(&nan);
    assert!(err.contains("holds NaN") && err.contains("tensor "), "{err}");

    // A tensor dropped with its checksum kept, and one dropped entirely (the model misses it).
    let lost = rewritten(&good, |t, _, _| drop(t.remove(0)));
    assert!(load_err(&lost).contains("is missing"));
    let dropped = rewritten(&good, |t, _, sums| {
        let i = t.iter().position(|(n, _, _)| n.starts_with("state.")).unwrap();
        sums.as_mut().unwrap().remove(&t.remove(i).0);
    });
    let ckpt = Checkpoint::from_bytes(&dropped).unwrap();
    let model = moegrad::models::Transformer::new(&device(), &ckpt.meta.config.model, &mut rand::rngs::StdRng::seed_from_u64(0)).unwrap();
    assert!(ckpt.restore(&model, None).unwrap_err().to_string().contains("lacks tensor"));

    // A tensor the model has no place for.
    let foreign = rewritten(&good, |t, _, sums| {
        let data = 1.0f32.to_le_bytes().to_vec();
        sums.as_mut().unwrap().insert("state.stranger".into(), checkpoint::bound_checksum("state.stranger", safetensors::Dtype::F32, &[1], &data));
        t.push(("state.stranger".into(), vec![1], data));
    });
    let ckpt = Checkpoint::from_bytes(&foreign).unwrap();
    assert!(ckpt.restore(&model, None).unwrap_err().to_string().contains("state.stranger"));

    // Run state that would make work explode, or that disagrees with the tensors.
    let huge = rewritten(&good, |_, meta, _| meta["config"]["model"]["context"] = 1_000_000_000u64.into());
    assert!(load_err(&huge).contains("model.context"), "{}", load_err(&huge));
    let deeper = rewritten(&good, |_, meta, _| meta["config"]["model"]["layers"] = 3.into());
    let err = load_err(&deeper);
    assert!(err.contains("parameters") && err.contains("param.blocks.1.* is missing"), "{err}");
    let wider = rewritten(&good, |_, meta, _| meta["config"]["model"]["d_model"] = 24.into());
    let err = load_err(&wider);
    assert!(err.contains("tensor param.embed has shape [256, 16], the config's model [256, 24]"), "{err}");
    // A config of a smaller model loads (it allocates less than the file holds), and the
    // tensor that does not fit it is named with both shapes.
    let narrower = rewritten(&good, |_, meta, _| meta["config"]["model"]["moe"]["expert_hidden"] = 8.into());
    let ckpt = Checkpoint::from_bytes(&narrower).unwrap();
    let small = moegrad::models::Transformer::new(&device(), &ckpt.meta.config.model, &mut rand::rngs::StdRng::seed_from_u64(0)).unwrap();
    let err = ckpt.restore(&small, None).unwrap_err().to_string();
    assert!(err.contains("checkpoint tensor param.") && err.contains("has shape") && err.contains("the model expects"), "{err}");
    let bad_merges = rewritten(&good, |_, meta, _| {
        meta["tokenizer"] = serde_json::json!({"kind": "bpe", "merges": [[65, 66], [900, 3]]});
        meta["config"]["model"]["vocab_size"] = 258.into();
    });
    assert!(load_err(&bad_merges).contains("tokenizer is invalid"), "{}", load_err(&bad_merges));

    // A checkpoint from before the checksums were bound to names (a CRC-32 of each tensor's
    // bytes alone) is still verified, and a flipped bit in it found.
    let bytes_only = |bytes: &[u8]| {
        let st = SafeTensors::deserialize(bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
        let sums: BTreeMap<String, u32> = st.tensors().into_iter().map(|(n, v)| (n, crc32fast::hash(v.data()))).collect();
        let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let meta = header.metadata().clone().unwrap()["moegrad"].clone();
        let metadata = std::collections::HashMap::from([
            ("moegrad".to_string(), meta),
            (checkpoint::BYTES_CHECKSUMS_KEY.to_string(), serde_json::to_string(&sums).unwrap()),
        ]);
        safetensors::serialize(tensors, Some(metadata)).unwrap()
    };
    let legacy = bytes_only(&good);
    assert!(Checkpoint::from_bytes(&legacy).unwrap().verified);
    let mut legacy_flipped = legacy.clone();
    let at = legacy_flipped.len() - 3;
    legacy_flipped[at] ^= 0x10;
    assert!(load_err(&legacy_flipped).contains("fails its checksum"));

    // A checkpoint from before checksums loads, marked unverified, with a warning.
    let old = rewritten(&good, |_, _, sums| *sums = None);
    let ckpt = Checkpoint::from_bytes(&old).unwrap();
    assert!(!ckpt.verified && ckpt.warning().unwrap().contains("without checksums"));
}

#[test]
fn the_last_n_checkpoints_and_the_best_are_kept() {
    let out = scratch("keep");
    run(tiny(&["train.steps=7", "train.checkpoint_every=1", "train.keep_checkpoints=3", "train.eval_every=2", "train.lr=1e-2"]), &out, Start::Fresh, None)
        .unwrap();
    let mut kept: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("checkpoint-")).collect();
    kept.sort();
    assert_eq!(kept, ["checkpoint-000000005.safetensors", "checkpoint-000000006.safetensors", "checkpoint-000000007.safetensors"]);
    assert_eq!(std::fs::read(out.join(&kept[2])).unwrap(), std::fs::read(out.join(CHECKPOINT_FILE)).unwrap());
    for k in &kept {
        let step: u64 = k["checkpoint-".len()..k.len() - ".safetensors".len()].parse().unwrap();
        assert_eq!(Checkpoint::load(&out.join(k)).unwrap().meta.step, step);
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let evals: Vec<(u64, f64)> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["step"].as_u64().unwrap() > 0)
        .filter_map(|v| Some((v["step"].as_u64()?, v["eval_loss"].as_f64()?)))
        .collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 4, 6, 7]);
    let best = evals.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    let meta = Checkpoint::load(&out.join(BEST_FILE)).unwrap().meta;
    assert_eq!((meta.step, meta.eval_loss.unwrap() as f64), *best, "best.safetensors holds the lowest eval loss");
    assert_eq!(Checkpoint::load(&out.join(CHECKPOINT_FILE)).unwrap().meta.best_eval_loss.unwrap() as f64, best.1);
}

#[test]
fn compare_reuses_a_run_only_when_its_config_is_the_same() {
    let out = scratch("compare-reuse");
    let options = |config: RunConfig, force: bool| CompareOptions {
        config,
        variants: vec!["topk".parse().unwrap()],
        seeds: 1,
        out: out.clone(),
        quiet: true,
        force,
        interrupt: Default::default(),
    };
    compare(&device(), &options(tiny(&["train.steps=2"]), false)).unwrap();
    let ckpt = out.join("topk-seed0").join(CHECKPOINT_FILE);
    let first = std::fs::read(&ckpt).unwrap();
    compare(&device(), &options(tiny(&["train.steps=2"]), false)).unwrap();
    assert_eq!(std::fs::read(&ckpt).unwrap(), first, "a finished run of the same config is reused, not trained again");
    let err = compare(&device(), &options(tiny(&["train.steps=2", "train.lr=1e-3", "train.min_lr=1e-4"]), false))
        .err()
        .expect("another config's run is refused")
        .to_string();
    assert!(err.contains("another config") && err.contains("train.lr: 0.001 vs 0.003") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), first);
    compare(&device(), &options(tiny(&["train.steps=2", "train.lr=1e-3", "train.min_lr=1e-4"]), true)).unwrap();
    assert_eq!(Checkpoint::load(&ckpt).unwrap().meta.config.train.lr, 1e-3);
}
