//! moegrad's test suite: one binary, so wgpu is linked once and the device is shared.

mod accounting;
mod autodiff;
mod bench;
mod cli;
mod common;
mod crash;
mod device;
mod elementwise;
mod embedding;
mod empty;
mod finite;
mod fit;
mod layout;
mod matmul;
mod moe_layer;
mod moe_model;
mod reduce;
mod routing;
mod run_safety;
mod softmax;
mod subgroup_width;
mod sweep;
mod train;
mod training;
mod transformer;
mod tuning;
