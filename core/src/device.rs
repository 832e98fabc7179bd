//! The GPU device: adapter choice, the features and limits we ask for, and the shared state
//! (buffer pool, pipeline cache, command recorder) every tensor on it uses.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::pipeline::PipelineCache;
use crate::policy::{KernelPolicy, Tuning};
use crate::pool::{memory_limit_from, BufferPool, Shortage, MEMORY_LIMIT_ENV};
use crate::recorder::Recorder;

/// Environment variable that picks an adapter by (case-insensitive) substring of its name.
pub const ADAPTER_ENV: &str = "MOEGRAD_ADAPTER";

/// Features moegrad uses when the adapter has them; each has a portable fallback.
const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16.union(wgpu::Features::SUBGROUP).union(wgpu::Features::TIMESTAMP_QUERY);

/// A handle to one GPU; cheap to clone, shared by every tensor created on it.
#[derive(Clone)]
pub struct Device(pub(crate) Arc<DeviceInner>);

pub(crate) struct DeviceInner {
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub pool: BufferPool,
    pub pipelines: PipelineCache,
    pub recorder: Mutex<Recorder>,
    /// Tile shapes the adapter's cooperative-matrix (tensor-core) units support.
    pub cooperative_matrices: Vec<wgpu::CooperativeMatrixProperties>,
    /// Results of one-time checks of fast paths (see `Device::verified`).
    pub verdicts: Mutex<std::collections::HashMap<&'static str, bool>>,
    /// Which kernels run, as read from the environment when the device opened.
    pub policy: KernelPolicy,
    /// The first resource failure since the last read-back took it (see `Device::check`);
    /// shared with the device-lost callback.
    pub failure: Arc<Mutex<Option<Error>>>,
}

/// What `moegrad devices` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub subgroup_size: (u32, u32),
    pub timestamp_query: bool,
    pub cooperative_matrix: bool,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
    pub max_workgroup_storage: u32,
    pub max_invocations_per_workgroup: u32,
}

impl AdapterSummary {
    fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let f = adapter.features();
        let l = adapter.limits();
        AdapterSummary {
            subgroup_size: (info.subgroup_min_size, info.subgroup_max_size),
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            shader_f16: f.contains(wgpu::Features::SHADER_F16),
            subgroups: f.contains(wgpu::Features::SUBGROUP),
            timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            cooperative_matrix: f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
            max_storage_binding: l.max_storage_buffer_binding_size,
            max_buffer: l.max_buffer_size,
            max_workgroup_storage: l.max_compute_workgroup_storage_size,
            max_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
        }
    }
}

/// Adapters of the native compute backends (Vulkan, Metal, DX12), narrowed by
/// `WGPU_BACKEND`. wgpu is built without OpenGL: it is the weakest backend for compute, and
/// its EGL probe prints false errors at the start of every command on a headless machine.
fn all_adapters() -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends &= wgpu::Backends::PRIMARY;
    if desc.backends.is_empty() {
        return Vec::new();
    }
    let backends = desc.backends;
    pollster::block_on(wgpu::Instance::new(desc).enumerate_adapters(backends))
}

/// Lower is better: real GPUs before software ones.
fn preference(info: &wgpu::AdapterInfo) -> u8 {
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

impl Device {
    /// Every adapter wgpu can see, best first.
    pub fn adapters() -> Vec<AdapterSummary> {
        let mut adapters = all_adapters();
        adapters.sort_by_key(|a| preference(&a.get_info()));
        adapters.iter().map(AdapterSummary::of).collect()
    }

    /// Opens the best adapter, or the one whose name contains `$MOEGRAD_ADAPTER`.
    pub fn new() -> Result<Device> {
        let wanted = std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty());
        Device::with_adapter(wanted.as_deref())
    }

    /// The adapter for the `local_rank`-th process on a node of data-parallel training:
    /// the `local_rank`-th discrete GPU modulo their number (several ranks share a GPU
    /// when there are fewer), or the best adapter where there is no discrete GPU.
    /// `$MOEGRAD_ADAPTER` still decides when set.
    pub fn for_local_rank(local_rank: usize) -> Result<Device> {
        if std::env::var(ADAPTER_ENV).is_ok_and(|s| !s.is_empty()) {
            return Device::new();
        }
        let mut adapters = all_adapters();
        adapters.sort_by_key(|a| preference(&a.get_info()));
        let discrete = adapters.iter().filter(|a| a.get_info().device_type == wgpu::DeviceType::DiscreteGpu).count();
        match (discrete, adapters.is_empty()) {
            (_, true) => Err(Error::NoAdapter),
            (0, false) => Device::open(adapters.swap_remove(0)),
            // Discrete GPUs sort first.
            (n, false) => Device::open(adapters.swap_remove(local_rank % n)),
        }
    }

    /// Opens the best adapter whose name contains `name` (case-insensitive), or the best
    /// adapter overall when `name` is `None`.
    pub fn with_adapter(name: Option<&str>) -> Result<Device> {
        let mut adapters = all_adapters();
        if adapters.is_empty() {
            return Err(Error::NoAdapter);
        }
        adapters.sort_by_key(|a| preference(&a.get_info()));
        let adapter = match name {
            None => adapters.swap_remove(0),
            Some(wanted) => {
                let needle = wanted.to_lowercase();
                let pos = adapters.iter().position(|a| a.get_info().name.to_lowercase().contains(&needle));
                match pos {
                    Some(i) => adapters.swap_remove(i),
                    None => {
                        let available = adapters.iter().map(|a| format!("{:?} ({:?})", a.get_info().name, a.get_info().backend)).collect::<Vec<_>>().join(", ");
                        return Err(Error::AdapterNotFound { wanted: wanted.to_string(), available });
                    }
                }
            }
        };
        Device::open(adapter)
    }

    fn open(adapter: wgpu::Adapter) -> Result<Device> {
        let policy = KernelPolicy::from_env()?;
        let memory_limit = memory_limit_from(std::env::var(MEMORY_LIMIT_ENV).ok().as_deref())?;
        let info = adapter.get_info();
        let mut features = adapter.features() & OPTIONAL_FEATURES;
        // Tensor cores are an experimental wgpu feature: opted into only where they exist,
        // and used only by kernels that check their tile shape against the adapter's list.
        let cooperative = adapter.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
        let experimental_features = if cooperative {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            // SAFETY: the only experimental feature enabled is cooperative matrices, whose
            // kernels are checked against the CPU reference on first use (ops::matmul::kernel).
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let cooperative_matrices = if cooperative { adapter.cooperative_matrix_properties() } else { Vec::new() };
        // The adapter's own limits, not wgpu's defaults (which cap a binding at 128 MiB).
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("moegrad"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::RequestDevice { adapter: info.name.clone(), reason: e.to_string() })?;
        let recorder = Recorder::new(&device, &limits);
        let failure: Arc<Mutex<Option<Error>>> = Arc::default();
        let lost = failure.clone();
        device.set_device_lost_callback(move |reason, message| {
            lost.lock().unwrap().get_or_insert(Error::DeviceLost(format!("{reason:?}: {message}")));
        });
        Ok(Device(Arc::new(DeviceInner {
            info,
            features,
            limits,
            device,
            queue,
            pool: BufferPool::new(memory_limit),
            pipelines: PipelineCache::default(),
            recorder: Mutex::new(recorder),
            cooperative_matrices,
            verdicts: Mutex::default(),
            policy,
            failure,
        })))
    }

    pub fn name(&self) -> &str {
        &self.0.info.name
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.0.info
    }

    /// The features this device was opened with (a subset of what moegrad can use).
    pub fn features(&self) -> wgpu::Features {
        self.0.features
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.0.limits
    }

    /// Whether kernel choices suit a CPU adapter (lavapipe), whose workgroups each run on a
    /// core thread, their threads in turn: fewer threads a row, tiles that fit the product,
    /// no depth splits. The adapter's type decides, unless the policy's `tuning` does.
    pub fn tuned_for_cpu(&self) -> bool {
        match self.policy().tuning {
            Tuning::Auto => self.0.info.device_type == wgpu::DeviceType::Cpu,
            Tuning::Cpu => true,
            Tuning::Gpu => false,
        }
    }

    /// The adapter's (smallest, largest) subgroup size, when kernels may use subgroup
    /// operations: the adapter has them, and the policy allows them.
    pub fn subgroup_sizes(&self) -> Option<(u32, u32)> {
        let usable = self.0.features.contains(wgpu::Features::SUBGROUP) && self.policy().subgroups;
        usable.then_some((self.0.info.subgroup_min_size, self.0.info.subgroup_max_size))
    }

    /// Whether the adapter multiplies 16x16x16 f16 tiles into f32 accumulators on
    /// 32-lane subgroups: the one cooperative-matrix shape moegrad's kernels use.
    pub fn has_tensor_cores_f16(&self) -> bool {
        use wgpu::CooperativeScalarType as S;
        let info = &self.0.info;
        let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        self.0.features.contains(needed)
            && info.subgroup_min_size == 32
            && info.subgroup_max_size == 32
            && self.0.cooperative_matrices.iter().any(|p| (p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type) == (16, 16, 16, S::F16, S::F32))
    }

    /// The verdict of `check` for `key`, computed on first use and remembered for the
    /// device's life: how a fast path that CI cannot exercise proves itself on the
    /// hardware before it is trusted. A check that panics (its kernel does not compile on
    /// this driver, say) has failed: the portable path is used, and the panic's message
    /// says why.
    pub fn verified(&self, key: &'static str, check: impl FnOnce() -> bool) -> bool {
        if let Some(&v) = self.0.verdicts.lock().unwrap().get(key) {
            return v;
        }
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or_else(|_| {
            eprintln!("moegrad: the check of {key} panicked on {}; using the portable path", self.name());
            false
        });
        *self.0.verdicts.lock().unwrap().entry(key).or_insert(verdict)
    }

    /// The largest tensor, in bytes, that one kernel can bind.
    pub fn max_binding_bytes(&self) -> u64 {
        self.0.limits.max_storage_buffer_binding_size.min(self.0.limits.max_buffer_size)
    }

    /// Caps the bytes this device's buffers may hold, tensors and cached buffers together
    /// (`None`: no cap beyond the adapter's memory; `MOEGRAD_MEMORY_LIMIT` sets one when the
    /// device opens). An allocation that would pass it releases the cache, then fails with
    /// `Error::OutOfMemory`, as on a GPU with that much memory.
    pub fn set_memory_limit(&self, bytes: Option<u64>) {
        self.0.pool.set_limit(bytes);
    }

    /// Starts the peak of `DeviceStats::peak_bytes_in_use` again from the bytes in use now.
    pub fn reset_peak_memory(&self) {
        self.0.pool.reset_peak();
    }

    /// The error for an allocation of `bytes` for a `shape` tensor that the pool could not serve.
    pub(crate) fn out_of_memory(&self, shortage: Shortage, shape: &[usize], bytes: u64) -> Error {
        let (in_use, limit) = match shortage {
            Shortage::Limit { in_use, limit } => (in_use, Some(limit)),
            Shortage::Device { in_use } => (in_use, None),
        };
        Error::OutOfMemory { shape: shape.to_vec(), bytes, in_use, limit, adapter: self.name().to_string() }
    }

    /// Counters for checking that steady-state work allocates and compiles nothing new,
    /// and the memory accounts.
    pub fn stats(&self) -> DeviceStats {
        let memory = self.0.pool.accounts();
        let rec = self.0.recorder.lock().unwrap();
        DeviceStats {
            bytes_in_use: memory.in_use,
            peak_bytes_in_use: memory.peak,
            bytes_cached: memory.cached,
            buffers_created: self.0.pool.created(),
            pipelines_compiled: self.0.pipelines.compiled(),
            submissions: rec.submissions,
            dispatches: rec.dispatches,
            read_backs: rec.read_backs,
        }
    }

    /// Submits everything recorded so far and waits for the GPU to finish it. Only
    /// benchmarks need this; read-backs synchronise by themselves.
    pub fn synchronize(&self) {
        self.0.recorder.lock().unwrap().flush(&self.0);
        self.0.device.poll(wgpu::PollType::wait_indefinitely()).expect("GPU device lost while waiting");
    }

    /// Submits what has been recorded without waiting.
    pub fn flush(&self) {
        self.0.recorder.lock().unwrap().flush(&self.0);
    }

    /// Returns, and clears, the first resource failure (out of memory, past the binding
    /// limit, device lost) since the last call or read-back. Ops never panic on those: the
    /// failure waits here, the op's output is void, and work that touches a void tensor
    /// records nothing. Read-backs (`to_vec`, `item`, `PendingRead::wait`) call this first,
    /// so a training loop that reads its loss each step sees the failure at that step.
    pub fn check(&self) -> Result<()> {
        match self.0.failure.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether a failure is waiting for `check`.
    pub(crate) fn failed(&self) -> bool {
        self.0.failure.lock().unwrap().is_some()
    }

    /// Keeps `error` for `check`, unless an earlier failure is waiting there already.
    pub(crate) fn fail(&self, error: Error) {
        self.0.failure.lock().unwrap().get_or_insert(error);
    }

    pub fn same(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({:?}, {:?})", self.0.info.name, self.0.info.backend)
    }
}

/// Running totals kept by a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// wgpu buffers ever created (pool misses).
    pub buffers_created: usize,
    /// Compute pipelines ever compiled (cache misses).
    pub pipelines_compiled: usize,
    /// Queue submissions.
    pub submissions: usize,
    /// Kernel dispatches recorded.
    pub dispatches: usize,
    /// Blocking read-backs to the host.
    pub read_backs: usize,
    /// Bytes of the buffers live tensors (and read-backs in flight) hold, counted at the
    /// pool's size classes: what the device really spends on them.
    pub bytes_in_use: u64,
    /// The most `bytes_in_use` has been since the device opened or `reset_peak_memory`.
    pub peak_bytes_in_use: u64,
    /// Bytes of freed buffers the pool keeps for reuse.
    pub bytes_cached: u64,
}
