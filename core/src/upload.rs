//! Uploads: copying host data into a tensor's buffer.
//!
//! A small write goes through `Queue::write_buffer`, which copies the data into a staging
//! buffer wgpu makes for that write and runs the copy before the next submission. For a
//! large one that staging buffer is as large as the data and new each time: the driver
//! allocates and pins that much host memory for every checkpoint load or gradient
//! bucket. Large writes instead go in chunks through two staging buffers taken from the
//! pool (one, for a single chunk), so the host fills one while the GPU copies out of the
//! other, and repeated uploads create no buffer after the first. They do so when the GPU
//! has nothing queued (loading weights, a benchmark's copies); behind queued work a large
//! write still goes through `write_buffer`, which never makes the host wait.

use std::sync::Arc;

use crate::device::DeviceInner;
use crate::error::{Error, Result};
use crate::pool::PooledBuffer;
use crate::recorder::Command;
use crate::tensor::Tensor;

/// Writes of at least this many bytes go through the pooled staging buffers.
pub const STAGED_UPLOAD_MIN_BYTES: u64 = 4 << 20;

/// Bytes a staging buffer carries per copy: large enough that a submission per chunk
/// costs nothing against the copy, small enough that the two buffers hold little.
pub const UPLOAD_CHUNK_BYTES: u64 = 32 << 20;

const STAGING: wgpu::BufferUsages = wgpu::BufferUsages::MAP_WRITE.union(wgpu::BufferUsages::COPY_SRC);

impl Tensor {
    /// Overwrites the buffer's first `bytes.len()` bytes.
    pub(crate) fn write_bytes(&self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() || self.is_void() {
            return Ok(());
        }
        let dev = &self.device().0;
        let len = bytes.len() as u64;
        if len >= STAGED_UPLOAD_MIN_BYTES && len.is_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT) && gpu_idle(dev) {
            if let Some(staging) = staging_buffers(dev, len) {
                return write_staged(dev, &staging, self.buffer(), bytes);
            }
        }
        // The staged copies are recorded in order with the kernels; `write_buffer` runs
        // before the next submission's commands, so what is recorded goes first: it may
        // still read this (recycled) buffer.
        let mut rec = dev.recorder.lock().unwrap();
        rec.flush(dev);
        dev.queue.write_buffer(self.buffer(), 0, bytes);
        Ok(())
    }
}

/// Whether the GPU has finished everything submitted. Only then does a staged upload go
/// ahead: its copies queue behind that work, so waiting for one to map a staging buffer
/// again would hold the host until the GPU caught up (a data-parallel step's gradient
/// uploads while the backward pass still runs); `write_buffer` never waits.
fn gpu_idle(dev: &DeviceInner) -> bool {
    dev.device.poll(wgpu::PollType::Poll).is_ok_and(|status| status.is_queue_empty())
}

/// Two staging buffers of a chunk each (one of `len` bytes where that is at most a
/// chunk), or `None` when the memory for them cannot be had, which leaves `write_buffer`.
fn staging_buffers(dev: &Arc<DeviceInner>, len: u64) -> Option<Vec<PooledBuffer>> {
    let count = if len > UPLOAD_CHUNK_BYTES { 2 } else { 1 };
    (0..count).map(|_| PooledBuffer::new(dev, UPLOAD_CHUNK_BYTES.min(len), STAGING).ok()).collect()
}

/// Copies `bytes` into `target` a chunk at a time, alternating between the staging
/// buffers: mapping one waits only for the GPU's copy out of it two chunks before.
fn write_staged(dev: &DeviceInner, staging: &[PooledBuffer], target: &wgpu::Buffer, bytes: &[u8]) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| Error::Upload(e.to_string());
    let chunk = UPLOAD_CHUNK_BYTES.min(bytes.len() as u64) as usize;
    let mut copies: Vec<Option<wgpu::SubmissionIndex>> = vec![None; staging.len()];
    for (i, piece) in bytes.chunks(chunk).enumerate() {
        let slot = i % staging.len();
        let buffer = staging[slot].buffer();
        let slice = buffer.slice(0..piece.len() as u64);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Write, move |r| {
            let _ = tx.send(r);
        });
        // A buffer of this upload's may still be read by its copy two chunks ago, which
        // waits only for that copy and the work recorded before the upload; no wait is
        // taken when the buffer is already free.
        dev.device.poll(wgpu::PollType::Poll).map_err(|e| failed(&e))?;
        let mapped = match rx.try_recv() {
            Ok(mapped) => mapped,
            Err(_) => {
                let poll = wgpu::PollType::Wait { submission_index: copies[slot].take(), timeout: None };
                dev.device.poll(poll).map_err(|e| failed(&e))?;
                rx.recv().map_err(|e| failed(&e))?
            }
        };
        mapped.map_err(|e| failed(&e))?;
        slice.get_mapped_range_mut().map_err(|e| failed(&e))?.copy_from_slice(piece);
        buffer.unmap();
        let mut rec = dev.recorder.lock().unwrap();
        let dst_offset = (i * chunk) as u64;
        rec.push(Command::Copy { src: buffer.clone(), src_offset: 0, dst: target.clone(), dst_offset, size: piece.len() as u64 });
        copies[slot] = rec.flush(dev);
    }
    Ok(())
}
