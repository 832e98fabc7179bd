//! moegrad's models, built only from `moegrad-ops`. Today: linear layers and MLPs; the
//! MoE transformer (dense, TopK and Default MoE feed-forward layers) comes next.

pub mod linear;
pub mod mlp;

pub use linear::Linear;
pub use mlp::{Activation, Mlp};
