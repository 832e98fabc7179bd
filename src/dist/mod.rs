//! Data-parallel training across processes (`mpirun -np N moegrad train ...`).
//!
//! Every rank holds the whole model and takes an equal share of each step's windows
//! (`share`); everything that crosses tokens is then made global through a
//! [`Collective`]: the gradients (in buckets, `buckets`), the MoE layers' expert loads
//! before the backward pass and their output sums before the Default-MoE update
//! (`moe_sync`), the losses that are logged or checked. So N ranks train exactly the
//! model one process would with the same global batch, and every rank holds the same
//! weights, which `check` verifies every `dist.check_every` steps. Without the `mpi`
//! feature only [`Solo`], the one-process collective, exists; the training loop is the
//! same code either way.

pub mod buckets;
pub mod collective;
pub mod moe_sync;
#[cfg(feature = "mpi")]
pub mod mpi_world;
pub mod share;
pub mod start;

pub use buckets::{BucketStats, GradientBuckets};
pub use collective::{Collective, Solo};
pub use share::rank_share;
