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
pub use wgpu;
