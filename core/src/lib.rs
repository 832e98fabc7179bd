//! moegrad's core: a wgpu device with pooled buffers, cached pipelines and batched
//! submission; [`Tensor`] and the tape that runs reverse-mode autodiff; and [`ops`], the
//! kernel library (each op's WGSL, launch, backward rule and f64 CPU reference side by
//! side). The everyday ops are methods of [`Tensor`] and operators on `&Tensor`.
//!
//! ```no_run
//! use moegrad_core::{Device, Tensor};
//!
//! let dev = Device::new()?;
//! let x = Tensor::from_slice(&dev, &[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
//! let w = Tensor::from_slice(&dev, &[0.5, -1.0, 0.25, 2.0], &[2, 2])?.requires_grad();
//! let loss = (&x.matmul(&w) - &x).relu().sum_all();
//! loss.backward();
//! println!("loss {} grad {:?}", loss.item()?, w.grad().unwrap().to_vec()?);
//! # Ok::<(), moegrad_core::Error>(())
//! ```
//!
//! # Errors
//!
//! - **Programming mistakes panic**, naming the op and what was wrong: shapes that do not
//!   fit (`add: shapes [2, 3] and [4] cannot be broadcast together`), a wrong dtype,
//!   tensors of two devices, `backward` on a tensor that depends on no parameter.
//! - **Bad input or settings are `Err` at once**: no adapter, an unknown
//!   `MOEGRAD_ADAPTER`, a bad `MOEGRAD_*` value (naming the variable), data of the wrong
//!   length, and every constructor (`Tensor::zeros`, `from_slice`, ...) that lacks memory.
//! - **Resource failures inside an op never panic.** An op whose output does not fit (out
//!   of memory, over the adapter's binding limit) or that runs on a lost device records
//!   the failure on the device and returns a void tensor of the right shape; kernels that
//!   would touch a void tensor are skipped, so the rest of the step records nothing. The
//!   failure is returned, naming the op, by the next read-back (`to_vec`, `item`,
//!   `PendingRead::wait`) or [`Device::check`]; a void tensor's own read-back fails too.
//!   [`Error::is_resource`] tells these apart, which is how the trainer knows to advise a
//!   smaller batch and to keep its last checkpoint.

mod checkpoint;
mod device;
mod dtype;
mod error;
mod gpu_timer;
mod launch;
mod module;
pub mod ops;
mod pipeline;
mod policy;
mod pool;
mod read_back;
mod recorder;
pub mod shape;
mod tape;
mod tensor;
mod upload;

pub use checkpoint::checkpoint;
pub use device::{AdapterSummary, Device, DeviceStats, ADAPTER_ENV};
pub use dtype::DType;
pub use error::{Error, Result};
pub use gpu_timer::KernelTime;
pub use launch::{elementwise_grid, grid, ELEMENTWISE_THREADS, MAX_GROUPS_PER_DIM};
pub use module::{Module, Role, Visitor};
pub use pipeline::{render_template, Kernel};
pub use policy::{KernelPolicy, Tuning, COOP_TILES_ENV, SUBGROUPS_ENV, TILES_ENV, TUNING_ENV};
pub use pool::MEMORY_LIMIT_ENV;
pub use read_back::PendingRead;
pub use recorder::PARAM_SLOT_BYTES;
pub use shape::Shape;
pub use tape::{clear_tape, is_grad_enabled, no_grad, record, record_multi, tape_len, BackwardFn};
pub use tensor::{Tensor, TensorId};
pub use upload::{STAGED_UPLOAD_MIN_BYTES, UPLOAD_CHUNK_BYTES};
pub use wgpu;
