//! moegrad's ops. Each file holds one family: the kernel launch (its WGSL is in
//! `shaders/`), the backward rule recorded on the tape, and a plain f64 CPU reference.

pub mod attention;
pub mod binary;
pub mod clip;
pub mod cross_entropy;
pub mod embedding;
pub mod expert_ema;
pub mod host;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod permute;
pub mod reduce;
pub mod rope;
pub mod router;
pub mod slice;
pub mod softmax;
pub mod swiglu;
mod strided;
mod tensor_ops;
pub mod topk;
pub mod unary;
mod wgsl_library;

pub use cross_entropy::{cross_entropy, CrossEntropyOptions};
pub use binary::{binary, broadcast_shape, broadcast_to, sum_to, BinaryOp};
pub use embedding::embedding;
pub use host::HostTensor;
pub use layout::{reshape, transpose};
pub use matmul::{grouped_matmul, matmul, matmul_t};
pub use attention::attention;
pub use clip::clip_grad_norm;
pub use norm::{layer_norm, rms_norm, NormKind};
pub use optim::{AdamW, AdamWConfig, Sgd};
pub use rope::{rope, RopeTable};
pub use swiglu::swiglu;
pub use permute::{combine_slots, gather_slots, plan_routing, Routing};
pub use router::{route, RouterOutput};
pub use expert_ema::expert_output_ema;
pub use topk::{selection_mask, topk};
pub use reduce::{reduce, reduce_all, ReduceOp};
pub use slice::{concat, slice};
pub use softmax::{causal_softmax, log_softmax, softmax, softmax_with, stablemax, Mask, SoftmaxKind, SoftmaxOptions};
pub use strided::MAX_RANK;
pub use tensor_ops::TensorOps;
pub use unary::{unary, UnaryOp};
