//! Activation checkpointing (`train.activation_checkpointing`): a training pass that keeps
//! only each block's inputs gives the gradients of the plain pass (every parameter, the
//! MoE losses' included), holds less memory at its peak, leaves no tape behind, and a run
//! with it trains as the plain run does.

use moegrad::models::{ModelConfig, Transformer};
use moegrad::ops::{cross_entropy, CrossEntropyOptions};
use moegrad::prelude::*;
use moegrad::train::run_folder::Start;

use crate::common::{config_from_sets, rng, scratch, train_quietly};

fn model_config(sets: &[&str]) -> ModelConfig {
    let base = ["model.d_model=24", "model.layers=3", "model.heads=2", "model.context=16", "model.vocab_size=64"];
    config_from_sets(&base, sets).model
}

/// Every parameter's gradient of one training pass (loss plus MoE losses), and the peak
/// memory the pass reached.
fn gradients(dev: &Device, config: &ModelConfig, checkpointing: bool) -> (Vec<(String, Vec<f32>)>, u64) {
    let mut model = Transformer::new(dev, config, &mut rng(40)).unwrap();
    model.activation_checkpointing = checkpointing;
    let ids: Vec<u32> = (0..4 * 16).map(|i| (i * 29 % 61) as u32).collect();
    let inputs = Tensor::from_u32(dev, &ids[..3 * 16], &[3, 16]).unwrap();
    let targets = Tensor::from_u32(dev, &ids[16..], &[3 * 16]).unwrap();
    dev.check().unwrap();
    dev.reset_peak_memory();
    let out = model.forward(&inputs, true);
    let mut loss = cross_entropy(&out.logits, &targets, CrossEntropyOptions::default());
    if let Some(aux) = out.aux_loss() {
        loss = loss.add(&aux);
    }
    loss.backward();
    assert_eq!(moegrad::tape_len(), 0, "the backward pass leaves no tape behind");
    let grads = model.named_parameters().into_iter().map(|(n, p)| (n, p.grad().unwrap_or_else(|| panic!("no gradient")).to_vec().unwrap())).collect();
    (grads, dev.stats().peak_bytes_in_use)
}

#[test]
fn checkpointed_blocks_give_the_plain_gradients_in_less_memory() {
    // A device of its own: the suite's is shared by tests running at once, so its peak
    // memory is theirs too.
    let dev = Device::new().unwrap();
    for sets in [
        &["model.ffn=\"dense\""][..],
        &["model.ffn=\"topk\"", "model.moe.experts=4", "model.moe.top_k=2", "model.moe.aux_loss_coef=0.1", "model.moe.z_loss_coef=0.01"],
        &["model.ffn=\"default\"", "model.moe.experts=4", "model.moe.top_k=1", "model.moe.aux_loss_coef=0.1"],
    ] {
        let config = model_config(sets);
        let (plain, plain_peak) = gradients(&dev, &config, false);
        let (checkpointed, peak) = gradients(&dev, &config, true);
        for ((name, a), (_, b)) in plain.iter().zip(&checkpointed) {
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs() / (x.abs() + 1e-6)).fold(0.0f32, f32::max);
            assert!(worst <= 1e-5, "{sets:?}: the gradient of {name} differs by {worst} (relative)");
            assert!(a.iter().any(|v| *v != 0.0), "{sets:?}: {name} got a gradient");
        }
        assert!(peak < plain_peak, "{sets:?}: checkpointing peaks at {peak} bytes, the plain pass at {plain_peak}");
    }
}

#[test]
fn a_run_with_activation_checkpointing_trains_as_the_plain_run() {
    let dir = scratch("checkpointing-run");
    let base = [
        "model.d_model=16",
        "model.layers=2",
        "model.heads=2",
        "model.context=16",
        "model.ffn=\"default\"",
        "model.moe.experts=2",
        "model.moe.top_k=1",
        "train.batch_size=4",
        "train.warmup=0",
        "train.steps=3",
    ];
    let plain = train_quietly(config_from_sets(&base, &[]), &dir.join("plain"), Start::Fresh, None).unwrap();
    let checkpointed = train_quietly(config_from_sets(&base, &["train.activation_checkpointing=true"]), &dir.join("checkpointed"), Start::Fresh, None).unwrap();
    assert!((plain.final_train_loss - checkpointed.final_train_loss).abs() <= 1e-5, "{} vs {}", plain.final_train_loss, checkpointed.final_train_loss);
    assert!((plain.final_eval_loss - checkpointed.final_eval_loss).abs() <= 1e-5, "{} vs {}", plain.final_eval_loss, checkpointed.final_eval_loss);
}
