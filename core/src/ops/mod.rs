//! The ops. Each family is one module holding the kernel launch (its WGSL beside it in
//! the module's folder), the backward rule recorded on the tape, and a plain f64 CPU
//! reference. The everyday ones are also methods of [`Tensor`](crate::Tensor) and
//! operators on `&Tensor`; WGSL that several kernels share lives in `common/`.

pub mod attention;
pub mod binary;
pub mod capacity;
pub mod clip;
pub(crate) mod common;
pub mod cross_entropy;
pub mod embedding;
pub mod expert_ema;
pub mod finite;
pub mod heads;
pub mod host;
pub mod layout;
pub mod load_balance;
pub mod matmul;
mod methods;
pub mod norm;
pub mod optim;
pub mod permute;
pub mod reduce;
pub mod rope;
pub mod router;
pub mod slice;
pub mod softmax;
pub(crate) mod strided;
pub mod swiglu;
pub mod topk;
pub mod unary;

pub use attention::attention;
pub use binary::{binary, broadcast_shape, broadcast_to, sum_to, BinaryOp};
pub use capacity::{capacity_keep, expert_capacity};
pub use clip::{clip_grad_norm, clip_grad_norm_scaled, grad_norm};
pub use common::rows;
pub use cross_entropy::{cross_entropy, CrossEntropyOptions};
pub use embedding::embedding;
pub use expert_ema::{expert_output_ema, expert_output_sums, expert_output_sums_weighted};
pub use finite::count_non_finite;
pub use heads::{merge_heads, split_heads};
pub use host::HostTensor;
pub use layout::{reshape, transpose};
pub use load_balance::{bias_balance_update, load_balancing_loss, LoadBalance};
pub use matmul::kernel::{f16_matmul_kernel, CoopTiles, Precision, Tiles};
pub use matmul::{grouped_matmul, matmul, matmul_t};
pub use norm::{add_layer_norm, add_rms_norm, layer_norm, rms_norm, NormKind};
pub use optim::{AdamW, AdamWConfig, AdamWSlot, Sgd};
pub use permute::{combine_slots, gather_slots, plan_every_expert, plan_routing, Routing};
pub use reduce::{reduce, reduce_all, ReduceOp};
pub use rope::{rope, RopeTable};
pub use router::{route, route_scored, route_with_stats, router_exchange, RouterOptions, RouterOutput, RouterStats, Score};
pub use rows::{row_layout, row_threads_allowed, workgroup_reduction, RowLayout, ROW_THREADS};
pub use slice::{concat, slice};
pub use softmax::{causal_softmax, log_softmax, softmax, softmax_with, stablemax, Mask, SoftmaxKind, SoftmaxOptions};
pub use strided::MAX_RANK;
pub use swiglu::swiglu;
pub use topk::{scatter_choices, selection_mask, topk};
pub use unary::{unary, UnaryOp};
