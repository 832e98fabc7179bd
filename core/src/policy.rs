//! The kernel policy: every choice of which kernel runs that the shapes leave open (matmul
//! precision, tile shapes, depth splits, tensor-core tiles, threads a row, subgroups, GPU
//! or CPU tuning), in one value owned by the device. The device reads it from the
//! environment once, when it opens, and refuses a bad value naming the variable;
//! `Device::with_policy` changes it for the work recorded inside, on this thread, and
//! restores it however that work ends (a panic included), as `no_grad` does.

use std::cell::Cell;

use crate::error::{Error, Result};
use crate::ops::matmul::kernel::{CoopTiles, Precision, Tiles};
use crate::ops::rows::ROW_THREADS;
use crate::Device;

/// Environment variable that turns the subgroup fast paths off (`off`; `on` is the
/// default) for a whole run: to compare them with the portable paths on one binary, or to
/// sidestep a driver whose subgroups misbehave in a way the one-time checks miss.
/// Tensor-core matmuls are not affected.
pub const SUBGROUPS_ENV: &str = "MOEGRAD_SUBGROUPS";

/// Environment variable that makes kernel choices (matmul tiles and depth splits, threads
/// a row) as for a GPU (`gpu`) or a CPU adapter (`cpu`), whatever the adapter is; `auto`,
/// the default, goes by the adapter's type. `gpu` on lavapipe runs a GPU's choices where
/// there is no GPU: how the tests cover them in CI.
pub const TUNING_ENV: &str = "MOEGRAD_TUNING";

/// Environment variable that forces one register tile shape, e.g. `128x128x8/8x8`: how the
/// per-device tile table is tuned with `moegrad bench`.
pub const TILES_ENV: &str = "MOEGRAD_MATMUL_TILES";

/// Environment variable that forces the tensor-core kernel's shape, e.g. `4x2/2x4/32`.
pub const COOP_TILES_ENV: &str = "MOEGRAD_COOP_TILES";

/// Whose kernel choices a device makes where GPUs and CPU adapters differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tuning {
    /// As the adapter's type says.
    #[default]
    Auto,
    /// A GPU's: big tiles, depth splits, up to 256 threads a row.
    Gpu,
    /// A CPU adapter's (lavapipe, whose workgroups each run on one core thread, their
    /// threads in turn): fewer threads a row, tiles that fit the product, no depth splits.
    Cpu,
}

/// Which kernels run. `None` leaves a choice to the per-device tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPolicy {
    /// The arithmetic of matmuls (a backward pass keeps its forward pass's).
    pub precision: Precision,
    /// Whether kernels may take their subgroup paths (where the adapter has subgroups
    /// and they pass their one-time checks).
    pub subgroups: bool,
    pub tuning: Tuning,
    /// One register tile shape for every portable matmul (and no tensor cores).
    pub matmul_tiles: Option<Tiles>,
    /// Slices of the depth of every batched or depth-grouped matmul.
    pub matmul_splits: Option<usize>,
    /// The tensor-core kernel's shape.
    pub coop_tiles: Option<CoopTiles>,
    /// One workgroup of this many threads a row for every row kernel (no packed rows).
    pub row_threads: Option<u32>,
}

impl Default for KernelPolicy {
    fn default() -> Self {
        KernelPolicy {
            precision: Precision::F32,
            subgroups: true,
            tuning: Tuning::Auto,
            matmul_tiles: None,
            matmul_splits: None,
            coop_tiles: None,
            row_threads: None,
        }
    }
}

impl KernelPolicy {
    /// The default policy with the `MOEGRAD_*` environment variables applied.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The default policy with the variables `var` returns applied (empty values are
    /// unset); a bad value is `Error::BadSetting` naming the variable.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let bad = |var: &'static str, value: &str, expected: &'static str| Error::BadSetting { var, value: value.to_string(), expected };
        let mut policy = KernelPolicy::default();
        if let Some(v) = get(SUBGROUPS_ENV) {
            policy.subgroups = match v.as_str() {
                "on" => true,
                "off" => false,
                _ => return Err(bad(SUBGROUPS_ENV, &v, "on or off")),
            };
        }
        if let Some(v) = get(TUNING_ENV) {
            policy.tuning = match v.as_str() {
                "auto" => Tuning::Auto,
                "gpu" => Tuning::Gpu,
                "cpu" => Tuning::Cpu,
                _ => return Err(bad(TUNING_ENV, &v, "auto, gpu or cpu")),
            };
        }
        if let Some(v) = get(TILES_ENV) {
            policy.matmul_tiles = Some(v.parse().map_err(|_| bad(TILES_ENV, &v, "BMxBNxBK/TMxTN, e.g. 128x128x8/8x8 (BK, TM, TN multiples of 4)"))?);
        }
        if let Some(v) = get(COOP_TILES_ENV) {
            policy.coop_tiles = Some(v.parse().map_err(|_| bad(COOP_TILES_ENV, &v, "SG_MxSG_N/QMxQN/BK, e.g. 2x2/4x4/16 (BK a multiple of 16)"))?);
        }
        Ok(policy)
    }

    /// Panics, naming the field, on a value no kernel takes: an override set in code is a
    /// programming mistake.
    fn check(&self) {
        if let Some(t) = self.row_threads {
            assert!(ROW_THREADS.contains(&t), "KernelPolicy::row_threads must be one of {ROW_THREADS:?}, got {t}");
        }
        if let Some(s) = self.matmul_splits {
            assert!(s >= 1, "KernelPolicy::matmul_splits must be at least 1, got {s}");
        }
    }
}

thread_local! {
    static OVERRIDE: Cell<Option<KernelPolicy>> = const { Cell::new(None) };
}

impl Device {
    /// The policy in force for work recorded now on this thread: the innermost
    /// `with_policy`, else the one read when the device opened.
    pub fn policy(&self) -> KernelPolicy {
        OVERRIDE.with(Cell::get).unwrap_or(self.0.policy)
    }

    /// Runs `f` with the policy `change` makes of the current one, for every kernel
    /// recorded on this thread inside it (a backward pass keeps the precision of its
    /// forward pass); the previous policy is back afterwards, however `f` ends.
    ///
    /// ```no_run
    /// # let dev = moegrad_core::Device::new()?;
    /// use moegrad_core::ops::Precision;
    /// let half = dev.with_policy(|p| p.precision = Precision::F16, || 1 + 1);
    /// # Ok::<(), moegrad_core::Error>(())
    /// ```
    pub fn with_policy<R>(&self, change: impl FnOnce(&mut KernelPolicy), f: impl FnOnce() -> R) -> R {
        struct Restore(Option<KernelPolicy>);
        impl Drop for Restore {
            fn drop(&mut self) {
                OVERRIDE.with(|o| o.set(self.0));
            }
        }
        let mut policy = self.policy();
        change(&mut policy);
        policy.check();
        let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(policy))));
        f()
    }
}
