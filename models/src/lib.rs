//! moegrad's models, built only from `moegrad-core`: linear layers and MLPs, and the
//! decoder-only transformer whose feed-forward blocks are dense, TopK MoE or Default MoE.
// `!(x > 0.0)` rejects NaN as well as non-positive values: the negation is deliberate.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod attention;
pub mod config;
pub mod ffn;
mod init;
pub mod linear;
pub mod mlp;
pub mod moe;
pub mod transformer;

pub use config::{
    Balance, DefaultEstimator, DenseConfig, FfnActivation, FfnKind, ModelConfig, MoeConfig, RouterScore, DEFAULT_BIAS_RATE, MAX_CONTEXT, MAX_VOCAB,
};
pub use linear::Linear;
pub use mlp::{Activation, Mlp};
pub use moe::{MoeFfn, MoeStats, MoeWidths};
pub use transformer::{Block, Ffn, KvCache, Output, Transformer};
