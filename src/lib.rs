//! # moegrad
//!
//! A tensor and tape-based autodiff engine whose kernels are WGSL compute shaders run
//! through wgpu, for training Mixture-of-Experts transformers on any GPU wgpu reaches.
//!
//! ```no_run
//! use moegrad::prelude::*;
//!
//! let dev = Device::new()?;
//! let x = Tensor::from_slice(&dev, &[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
//! let w = Tensor::from_slice(&dev, &[0.5, -1.0, 0.25, 2.0], &[2, 2])?.requires_grad();
//! let loss = x.matmul(&w).relu().sum_all();
//! loss.backward();
//! println!("loss {} grad {:?}", loss.item()?, w.grad().unwrap().to_vec()?);
//! # Ok::<(), moegrad::Error>(())
//! ```
//!
//! The crates behind the facade: `moegrad-core` (device, tensors, tape and [`ops`], the
//! kernels with their backward rules and CPU references; re-exported here) and [`models`].
// `!(x > 0.0)` rejects NaN as well as non-positive values: the negation is deliberate.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod bench;
pub mod data;
pub mod demo;
pub mod dist;
pub mod durable;
pub mod folder_lock;
pub mod hf;
pub mod research;
pub mod train;

pub use moegrad_core::*;
pub use moegrad_models as models;

/// What most programs need: `use moegrad::prelude::*;`.
pub mod prelude {
    pub use moegrad_core::ops::{concat, Sgd};
    pub use moegrad_core::{no_grad, DType, Device, Module, Tensor};
    pub use moegrad_models::{Activation, Linear, Mlp};
}

/// The README's examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
