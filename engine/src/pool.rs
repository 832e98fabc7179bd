//! A pool of wgpu buffers keyed by size class and usage. Dropping a tensor returns its
//! buffer here; the next allocation of the same class takes it back, so a repeated
//! computation (a training step) stops creating buffers after its first run.
//!
//! Reuse is safe without waiting for the GPU: every use of a buffer is a command recorded
//! in order, and the GPU runs commands in that order. The one operation that jumps the
//! queue, `Queue::write_buffer`, is only ever issued after the recorder has flushed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::device::DeviceInner;

#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<HashMap<(u64, wgpu::BufferUsages), Vec<wgpu::Buffer>>>,
    created: AtomicUsize,
}

/// Rounds a request up to one of four classes per power of two (at most 25% waste),
/// never below 256 bytes.
fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let pow = 63 - (bytes - 1).leading_zeros() as u64; // 2^pow < bytes <= 2^(pow+1)
    let quarter = 1u64 << (pow - 2);
    let base = 1u64 << pow;
    (1..=4).map(|q| base + q * quarter).find(|&c| c >= bytes).unwrap()
}

impl BufferPool {
    pub fn created(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }

    /// A buffer of at least `bytes` bytes with exactly `usage`.
    pub fn take(&self, device: &wgpu::Device, max_bytes: u64, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let class = size_class(bytes).min(max_bytes.max(bytes));
        if let Some(buf) = self.free.lock().unwrap().get_mut(&(class, usage)).and_then(Vec::pop) {
            return buf;
        }
        self.created.fetch_add(1, Ordering::Relaxed);
        device.create_buffer(&wgpu::BufferDescriptor { label: None, size: class, usage, mapped_at_creation: false })
    }

    pub fn give(&self, buffer: wgpu::Buffer) {
        self.free.lock().unwrap().entry((buffer.size(), buffer.usage())).or_default().push(buffer);
    }
}

/// A buffer on loan from the pool; goes back when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    device: Arc<DeviceInner>,
}

impl PooledBuffer {
    pub(crate) fn new(device: &Arc<DeviceInner>, bytes: u64, usage: wgpu::BufferUsages) -> Self {
        let max = device.limits.max_buffer_size;
        let buffer = device.pool.take(&device.device, max, bytes, usage);
        PooledBuffer { buffer: Some(buffer), device: device.clone() }
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.device.pool.give(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_little_waste() {
        for bytes in [1u64, 255, 256, 257, 1000, 1024, 1025, 4096 * 3 + 4, 1 << 30] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert!(c <= (bytes.max(256) * 5) / 4 + 1, "{bytes} -> {c} wastes too much");
        }
    }
}
