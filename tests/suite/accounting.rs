//! Parameter accounting by formula equals the sizes of the model's tensors.

use moegrad::models::{FfnActivation, FfnKind, ModelConfig, MoeConfig, Transformer};
use moegrad::research::accounting::account;
use moegrad::Module;
use rand::SeedableRng;

use crate::common::device;

#[test]
fn parameter_counts_equal_the_models_tensors_over_a_grid_of_shapes() {
    let mut checked = 0;
    for (width, depth) in [(16, 1), (32, 2), (48, 3), (64, 1)] {
        for ffn in [FfnKind::Dense, FfnKind::Topk, FfnKind::Default] {
            for (tied, activation) in [(true, FfnActivation::Gelu), (false, FfnActivation::Swiglu)] {
                let mut config = ModelConfig {
                    vocab_size: 97,
                    d_model: width,
                    layers: depth,
                    heads: width / 16,
                    context: 16,
                    tied_embeddings: tied,
                    ffn,
                    ..ModelConfig::default()
                };
                config.dense.activation = activation;
                config.moe = MoeConfig { experts: 3 + depth, top_k: 2, expert_hidden: 24, activation, ..MoeConfig::default() };
                config.validate().unwrap();
                let model = Transformer::new(&device(), &config, &mut rand::rngs::StdRng::seed_from_u64(0)).unwrap();
                let numel = |name: &str| -> u64 { model.named_parameters().iter().filter(|(n, _)| n.contains(name)).map(|(_, t)| t.numel() as u64).sum() };
                let a = account(&config);
                let total: u64 = model.parameters().iter().map(|t| t.numel() as u64).sum();
                assert_eq!(a.params, total, "{width}x{depth} {ffn:?} tied={tied}");
                assert_eq!(a.embedding_params, numel("embed") + numel("lm_head"));
                let expert_weights = numel("ffn.w_in") + numel("ffn.w_out");
                if ffn.is_moe() {
                    // Active: all but (E - k) / E of the expert weights.
                    let e = config.moe.experts as u64;
                    assert_eq!(a.params - a.active_params, expert_weights * (e - 2) / e);
                } else {
                    assert_eq!(a.active_params, a.params);
                }
                let attn = (config.heads * config.head_dim() * depth) as f64;
                assert!((a.flops_per_token - 6.0 * a.active_non_embedding_params as f64 - 6.0 * 16.0 * attn).abs() < 1e-6);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 24);
}
