//! `Tensor`: a shape, a dtype and a contiguous row-major buffer on the device, plus the
//! little autodiff state a leaf needs (does it want a gradient, what has accumulated).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::launch::elementwise_grid;
use crate::pool::PooledBuffer;
use crate::recorder::Command;
use crate::shape::{numel, Shape};

/// Identifies a tensor on the tape. Views of one buffer get distinct ids.
pub type TensorId = u64;

fn next_id() -> TensorId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Usage of every tensor buffer: bound by kernels, filled by clears and copies, read back.
const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// An n-dimensional array on a GPU. Cloning is cheap and shares the data.
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

struct TensorInner {
    id: TensorId,
    shape: Shape,
    dtype: DType,
    /// `None` for a void tensor: the output of an op that could not get memory for it.
    storage: Option<Arc<PooledBuffer>>,
    device: Device,
    /// A leaf whose gradient the user wants (a parameter).
    is_param: bool,
    /// Some recorded op's result depends on a parameter through this tensor.
    tracked: AtomicBool,
    grad: Mutex<Option<Tensor>>,
}

impl Tensor {
    /// An uninitialised tensor: the output buffer of an op. Fails, naming the size and the
    /// limit, when the tensor is larger than one kernel can bind on this adapter, or when
    /// the device (or its memory limit) has no room for it.
    pub fn empty(device: &Device, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = (numel(shape) * dtype.size_in_bytes()) as u64;
        let limit = device.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge { shape: shape.to_vec(), bytes, limit, adapter: device.name().to_string() });
        }
        let storage = PooledBuffer::new(&device.0, bytes.max(4), STORAGE_USAGE).map_err(|s| device.out_of_memory(s, shape, bytes))?;
        Ok(Tensor::from_parts(device.clone(), Some(Arc::new(storage)), shape, dtype, false))
    }

    /// An op's output: as `empty`, except that a resource failure does not panic. It is
    /// recorded on the device, under `op`'s name, for the next read-back to return, and
    /// the op gets a void tensor of the right shape. Until a read-back has taken the
    /// failure every op's output is void (none of them could hold a right value), and every
    /// kernel that would touch a void tensor is skipped, so nothing computed from a failed
    /// op can be read as if it were right.
    pub(crate) fn output(device: &Device, shape: &[usize], dtype: DType, op: impl std::fmt::Display) -> Tensor {
        let void = || Tensor::from_parts(device.clone(), None, shape, dtype, false);
        if device.failed() {
            return void();
        }
        Tensor::empty(device, shape, dtype).unwrap_or_else(|e| {
            device.fail(Error::Op { op: op.to_string(), source: Box::new(e) });
            void()
        })
    }

    /// `output`, zero-filled.
    pub(crate) fn output_zeros(device: &Device, shape: &[usize], dtype: DType, op: impl std::fmt::Display) -> Tensor {
        let t = Tensor::output(device, shape, dtype, op);
        t.clear();
        t
    }

    /// `output`, every element `value`.
    pub(crate) fn output_full(device: &Device, shape: &[usize], value: f32, op: impl std::fmt::Display) -> Tensor {
        let t = Tensor::output(device, shape, DType::F32, op);
        t.fill(value);
        t
    }

    /// Whether this tensor holds nothing because the op that made it failed for lack of
    /// memory (see `Device::check`).
    pub fn is_void(&self) -> bool {
        self.0.storage.is_none()
    }

    fn clear(&self) {
        if self.byte_len() > 0 && !self.is_void() {
            self.0.device.0.recorder.lock().unwrap().push(Command::Clear { buffer: self.buffer().clone(), size: self.byte_len() });
        }
    }

    fn fill(&self, value: f32) {
        if self.numel() > 0 {
            let device = &self.0.device;
            let pipeline = device.pipeline("fill", "main", || include_str!("fill.wgsl").to_string());
            device.launch(&pipeline, &[self.numel() as u32, value.to_bits()], &[self], elementwise_grid(self.numel()));
        }
    }

    fn from_parts(device: Device, storage: Option<Arc<PooledBuffer>>, shape: &[usize], dtype: DType, is_param: bool) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: next_id(),
            shape: Shape::from_slice(shape),
            dtype,
            storage,
            device,
            is_param,
            tracked: AtomicBool::new(is_param),
            grad: Mutex::new(None),
        }))
    }

    pub fn zeros(device: &Device, shape: &[usize]) -> Result<Tensor> {
        Tensor::zeros_of(device, shape, DType::F32)
    }

    /// Zero-filled with a GPU clear command (recorded in order, no upload).
    pub fn zeros_of(device: &Device, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = Tensor::empty(device, shape, dtype)?;
        t.clear();
        Ok(t)
    }

    /// Every element `value`, filled by a kernel (recorded in order, no upload).
    pub fn full(device: &Device, shape: &[usize], value: f32) -> Result<Tensor> {
        let t = Tensor::empty(device, shape, DType::F32)?;
        t.fill(value);
        Ok(t)
    }

    pub fn ones(device: &Device, shape: &[usize]) -> Result<Tensor> {
        Tensor::full(device, shape, 1.0)
    }

    pub fn from_slice(device: &Device, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::upload(device, bytemuck::cast_slice(data), data.len(), shape, DType::F32)
    }

    /// An index tensor (token ids, expert ids, permutations).
    pub fn from_u32(device: &Device, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        Tensor::upload(device, bytemuck::cast_slice(data), data.len(), shape, DType::U32)
    }

    fn upload(device: &Device, bytes: &[u8], len: usize, shape: &[usize], dtype: DType) -> Result<Tensor> {
        if len != numel(shape) {
            return Err(Error::DataLength { shape: shape.to_vec(), expected: numel(shape), got: len });
        }
        let t = Tensor::empty(device, shape, dtype)?;
        t.write_bytes(bytes)?;
        Ok(t)
    }

    /// Normal(0, std) entries from the caller's seeded generator (drawn on the host).
    pub fn randn(device: &Device, shape: &[usize], std: f32, rng: &mut impl Rng) -> Result<Tensor> {
        let normal = Normal::new(0.0f32, std).expect("std must be finite and non-negative");
        let data: Vec<f32> = (0..numel(shape)).map(|_| normal.sample(rng)).collect();
        Tensor::from_slice(device, &data, shape)
    }

    /// Uniform[lo, hi) entries from the caller's seeded generator.
    pub fn uniform(device: &Device, shape: &[usize], lo: f32, hi: f32, rng: &mut impl Rng) -> Result<Tensor> {
        let dist = Uniform::new(lo, hi).expect("uniform range must satisfy lo < hi");
        let data: Vec<f32> = (0..numel(shape)).map(|_| dist.sample(rng)).collect();
        Tensor::from_slice(device, &data, shape)
    }

    /// Overwrites the contents in place (a new data batch, a loaded checkpoint).
    pub fn write(&self, data: &[f32]) -> Result<()> {
        self.expect_dtype(DType::F32)?;
        self.expect_data()?;
        if data.len() != self.numel() {
            return Err(Error::DataLength { shape: self.shape().to_vec(), expected: self.numel(), got: data.len() });
        }
        self.write_bytes(bytemuck::cast_slice(data))
    }

    /// Marks this tensor as a parameter: backward passes accumulate into its `grad()`.
    pub fn requires_grad(self) -> Tensor {
        Tensor::from_parts(self.0.device.clone(), self.0.storage.clone(), &self.0.shape, self.0.dtype, true)
    }

    /// The same data under another shape of equal size, not recorded on the tape (the
    /// differentiable reshape is `Tensor::reshape`).
    pub fn alias(&self, shape: &[usize]) -> Tensor {
        assert_eq!(numel(shape), self.numel(), "alias: shape {:?} does not fit {:?}", shape, self.shape());
        Tensor::from_parts(self.0.device.clone(), self.0.storage.clone(), shape, self.0.dtype, false)
    }

    /// The same data, cut off from autodiff.
    pub fn detach(&self) -> Tensor {
        self.alias(&self.0.shape)
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    pub fn device(&self) -> &Device {
        &self.0.device
    }

    pub fn byte_len(&self) -> u64 {
        (self.numel() * self.0.dtype.size_in_bytes()) as u64
    }

    /// The wgpu buffer, for kernels. It may be larger than `byte_len` (pooled size class).
    /// Panics on a void tensor, which nothing binds.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.0.storage.as_deref().expect("a void tensor has no buffer: kernels that touch one are skipped").buffer()
    }

    pub fn is_param(&self) -> bool {
        self.0.is_param
    }

    /// Whether gradients flow back through this tensor.
    pub fn is_tracked(&self) -> bool {
        self.0.tracked.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_tracked(&self) {
        self.0.tracked.store(true, Ordering::Relaxed);
    }

    /// The gradient accumulated by backward passes since the last `zero_grad`.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.lock().unwrap().clone()
    }

    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap() = None;
    }

    /// Replaces the gradient (gradient clipping writes its scaled copy here).
    pub fn set_grad(&self, grad: Tensor) {
        assert_eq!(grad.shape(), self.shape(), "set_grad: gradient shape {:?} != tensor shape {:?}", grad.shape(), self.shape());
        *self.0.grad.lock().unwrap() = Some(grad);
    }

    /// `Error::Void` for a void tensor.
    pub(crate) fn expect_data(&self) -> Result<()> {
        match self.is_void() {
            true => Err(Error::Void { shape: self.shape().to_vec() }),
            false => Ok(()),
        }
    }

    fn expect_dtype(&self, wanted: DType) -> Result<()> {
        if self.0.dtype == wanted {
            Ok(())
        } else {
            Err(Error::DType { wanted, got: self.0.dtype })
        }
    }

    /// Copies the data to the host. The only place (with `item` and `read_later`) that
    /// waits for the GPU.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.expect_dtype(DType::F32)?;
        self.read_later().wait()
    }

    pub fn to_vec_u32(&self) -> Result<Vec<u32>> {
        self.expect_dtype(DType::U32)?;
        self.read_later().wait_with(bytemuck::pod_collect_to_vec)
    }

    /// The value of a one-element tensor (a loss).
    pub fn item(&self) -> Result<f32> {
        assert_eq!(self.numel(), 1, "item: tensor of shape {:?} is not a scalar", self.shape());
        Ok(self.to_vec()?[0])
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor(id={}, shape={:?}, {:?}", self.id(), self.shape(), self.dtype())?;
        if self.is_param() {
            write!(f, ", param")?;
        }
        write!(f, ")")
    }
}
