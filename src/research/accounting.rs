//! Exact parameter counts and FLOPs per token, computed from a model config by formula.
//! A test checks the counts against the sizes of the model's actual tensors.
//!
//! FLOPs per token follow Kaplan et al.: `6 * N_active_non_embedding + 6 * layers *
//! context * d_attn` (d_attn = heads * head_dim): forward and backward of every weight
//! multiply-add, plus the attention scores and their weighted sum. `flops_per_token_6n`
//! is the plain `6 * N_active` (embeddings included) for those who prefer 6ND.

use moegrad_models::{FfnActivation, FfnKind, ModelConfig};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Accounting {
    /// Every parameter, embeddings included.
    pub params: u64,
    /// The token embedding, plus the output projection when untied.
    pub embedding_params: u64,
    pub non_embedding_params: u64,
    /// Parameters one token uses: the router and k of E experts in MoE layers.
    pub active_params: u64,
    pub active_non_embedding_params: u64,
    pub flops_per_token: f64,
    pub flops_per_token_6n: f64,
}

fn input_width(hidden: u64, activation: FfnActivation) -> u64 {
    match activation {
        FfnActivation::Gelu => hidden,
        FfnActivation::Swiglu => 2 * hidden,
    }
}

/// Counts for `config` (its `vocab_size` must be set).
pub fn account(config: &ModelConfig) -> Accounting {
    let (d, v) = (config.d_model as u64, config.vocab_size as u64);
    let attn_width = (config.heads * config.head_dim()) as u64;
    let embedding = v * d + if config.tied_embeddings { 0 } else { d * v };
    let attention = 3 * d * attn_width + attn_width * d + 2 * d; // qkv, output, two norms
    let (mut total, mut active) = (embedding + d, embedding + d); // + final norm
    for kind in config.layer_kinds() {
        let (ffn_total, ffn_active) = match kind {
            FfnKind::Dense => {
                let h = config.dense_hidden() as u64;
                let p = d * input_width(h, config.dense.activation) + h * d;
                (p, p)
            }
            FfnKind::Topk | FfnKind::Default | FfnKind::Densemixer => {
                let f = config.expert_hidden() as u64;
                let (e, k) = (config.moe.experts as u64, config.moe.top_k as u64);
                let expert = d * input_width(f, config.moe.activation) + f * d;
                let shared_width = (config.moe.shared_experts * config.shared_hidden()) as u64;
                let shared = d * input_width(shared_width, config.moe.activation) + shared_width * d;
                // DenseMixer runs every expert on every token.
                let runs = if kind == FfnKind::Densemixer { e } else { k };
                (d * e + e * expert + shared, d * e + runs * expert + shared)
            }
        };
        total += attention + ffn_total;
        active += attention + ffn_active;
    }
    let active_non_embedding = active - embedding;
    let attention_term = 6.0 * config.layers as f64 * config.context as f64 * attn_width as f64;
    Accounting {
        params: total,
        embedding_params: embedding,
        non_embedding_params: total - embedding,
        active_params: active,
        active_non_embedding_params: active_non_embedding,
        flops_per_token: 6.0 * active_non_embedding as f64 + attention_term,
        flops_per_token_6n: 6.0 * active as f64,
    }
}
