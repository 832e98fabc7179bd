//! Upcycling (`train.init_from`): an MoE model started from a dense run computes what the
//! dense model does while its router is uniform and the experts are the MLP's copies;
//! mismatched shapes are refused by the config key's name; the upcycled run trains.

use moegrad::models::Transformer;
use moegrad::prelude::*;
use moegrad::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use moegrad::train::init_from::upcycle;
use moegrad::train::run_folder::Start;

use crate::common::{assert_close, config_from_sets, device, scratch, train_quietly};

const DENSE: [&str; 10] = [
    "model.d_model=16",
    "model.layers=2",
    "model.heads=2",
    "model.context=16",
    "model.ffn=\"dense\"",
    "model.dense.hidden=24",
    "model.dense.activation=\"swiglu\"",
    "train.batch_size=4",
    "train.warmup=0",
    "train.steps=3",
];

const MOE: [&str; 5] = ["model.ffn=\"topk\"", "model.moe.experts=4", "model.moe.top_k=2", "model.moe.expert_hidden=24", "model.moe.activation=\"swiglu\""];

#[test]
fn upcycled_moe_computes_the_dense_model_while_its_router_is_uniform() {
    let dir = scratch("upcycle-forward");
    train_quietly(config_from_sets(&DENSE, &[]), &dir.join("dense"), Start::Fresh, None).unwrap();
    let source = Checkpoint::load(&dir.join("dense").join(CHECKPOINT_FILE)).unwrap();
    let dev = device();
    let dense = Transformer::new(&dev, &source.meta.config.model, &mut rng_for_init()).unwrap();
    source.restore(&dense, None).unwrap();
    // Softmax renormalised over k, and sigmoid scores (always renormalised): with a zero
    // router every chosen copy weighs 1/k.
    for score in ["\"softmax\"", "\"sigmoid\""] {
        let mut moe_config = source.meta.config.model.clone();
        moe_config.ffn = "topk".parse().unwrap();
        let sets: Vec<String> = MOE.iter().map(|s| s.to_string()).chain([format!("model.moe.score={score}"), "model.moe.renormalize=true".into()]).collect();
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        moe_config.moe = config_from_sets(&DENSE, &sets).model.moe;
        let moe = Transformer::new(&dev, &moe_config, &mut rng_for_init()).unwrap();
        upcycle(&source, "dense", &moe).unwrap();
        for (name, p) in moe.named_parameters() {
            if name.ends_with("ffn.router") {
                p.write(&vec![0.0; p.numel()]).unwrap();
            }
        }
        let ids: Vec<u32> = (0..2 * 16).map(|i| (i * 37 % 251) as u32).collect();
        let ids = Tensor::from_u32(&dev, &ids, &[2, 16]).unwrap();
        let want: Vec<f64> = dense.forward(&ids, false).logits.to_vec().unwrap().into_iter().map(f64::from).collect();
        let got = moe.forward(&ids, false).logits.to_vec().unwrap();
        assert_close(&format!("upcycled logits ({score} scores)"), &got, &want, 1e-5);
    }
}

fn rng_for_init() -> rand::rngs::StdRng {
    crate::common::rng(300)
}

#[test]
fn upcycling_refuses_mismatches_by_name_and_the_upcycled_run_trains() {
    let dir = scratch("upcycle-train");
    train_quietly(config_from_sets(&DENSE, &[]), &dir.join("dense"), Start::Fresh, None).unwrap();
    let from = format!("train.init_from={}", toml::Value::String(dir.join("dense").join(CHECKPOINT_FILE).display().to_string()));
    let run = |extra: &[&str]| {
        let sets: Vec<&str> = MOE.iter().copied().chain([from.as_str()]).chain(extra.iter().copied()).collect();
        train_quietly(config_from_sets(&DENSE, &sets), &dir.join("moe"), Start::Fresh, None)
    };
    for (extra, named) in [
        (&["model.d_model=32"][..], "model.d_model is 16 in the dense run and 32 here"),
        (&["model.moe.expert_hidden=16"][..], "model.moe.expert_hidden"),
        (&["model.moe.activation=\"gelu\""][..], "model.moe.activation"),
        (&["model.tied_embeddings=false"][..], "model.tied_embeddings"),
    ] {
        let err = format!("{:#}", run(extra).unwrap_err());
        assert!(err.contains(named), "{extra:?}: the error must name {named:?}, got: {err}");
    }
    // The refusals left the folder as it was: the matching run starts there and trains.
    let summary = run(&[]).unwrap();
    assert_eq!(summary.steps, 3);
    assert!(summary.final_eval_loss.is_finite());
    // It starts from the dense run's weights: its first evaluation is below a fresh model's.
    let fresh = train_quietly(config_from_sets(&DENSE, &MOE), &dir.join("fresh"), Start::Fresh, None).unwrap();
    assert!(summary.initial_eval_loss < fresh.initial_eval_loss, "upcycled {} vs fresh {}", summary.initial_eval_loss, fresh.initial_eval_loss);
}
