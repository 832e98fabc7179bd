//! moegrad's engine: a wgpu device with pooled buffers, cached pipelines and batched
//! submission; tensors; and the tape that runs reverse-mode autodiff.
//!
//! Ops (kernels with their backward rules) live in `moegrad-ops`, which builds on this.

mod device;
mod dtype;
mod error;
mod gpu_timer;
mod launch;
mod pipeline;
mod pool;
mod read_back;
mod recorder;
pub mod shape;
mod tape;
mod tensor;
mod zip;

pub use device::{subgroups_off_by, tuned_for_cpu_by, without_subgroups, AdapterSummary, Device, DeviceStats, ADAPTER_ENV, SUBGROUPS_ENV, TUNING_ENV};
pub use pool::MEMORY_LIMIT_ENV;
pub use dtype::DType;
pub use error::{Error, Result};
pub use gpu_timer::KernelTime;
pub use launch::{grid, MAX_GROUPS_PER_DIM};
pub use pipeline::{render_template, Kernel};
pub use read_back::PendingRead;
pub use recorder::PARAM_SLOT_BYTES;
pub use shape::Shape;
pub use tape::{clear_tape, is_grad_enabled, no_grad, record, record_multi, tape_len, BackwardFn};
pub use tensor::{Tensor, TensorId};
pub use zip::{floats_per_load, repeats_within, zip};
pub use wgpu;
