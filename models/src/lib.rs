//! moegrad's models, built only from `moegrad-ops`: linear layers and MLPs, and the
//! decoder-only transformer whose feed-forward blocks are dense, TopK MoE or Default MoE.

pub mod attention;
pub mod config;
pub mod ffn;
mod init;
pub mod linear;
pub mod mlp;
pub mod moe;
pub mod transformer;

pub use config::{DenseConfig, FfnActivation, FfnKind, ModelConfig, MoeConfig};
pub use linear::Linear;
pub use mlp::{Activation, Mlp};
pub use moe::{MoeFfn, MoeStats};
pub use transformer::{KvCache, Output, Transformer};
