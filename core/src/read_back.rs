//! Read-backs: copying a tensor to the host. The copy is recorded after the work that
//! produces the tensor and submitted with it at once; waiting is separate, so a training
//! loop can record its next step while the GPU finishes this one and only then look at
//! this step's loss.

use crate::error::{Error, Result};
use crate::pool::PooledBuffer;
use crate::recorder::Command;
use crate::tensor::Tensor;

/// A read-back on its way: `wait` blocks until the work before it is done.
#[must_use = "a read-back does nothing until it is waited for"]
pub struct PendingRead {
    /// `None` for an empty tensor; an error when no staging buffer could be had.
    staging: Result<Option<PooledBuffer>>,
    bytes: u64,
    submission: Option<wgpu::SubmissionIndex>,
    device: crate::Device,
}

impl Tensor {
    /// Submits everything recorded so far plus a copy of this tensor, without waiting.
    pub fn read_later(&self) -> PendingRead {
        let bytes = self.byte_len();
        let device = self.device().clone();
        if let Err(e) = device.check().and_then(|()| self.expect_data()) {
            return PendingRead { staging: Err(e), bytes, submission: None, device };
        }
        if bytes == 0 {
            return PendingRead { staging: Ok(None), bytes, submission: None, device };
        }
        let dev = &device.0;
        let staging = match PooledBuffer::new(dev, bytes, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST) {
            Ok(staging) => staging,
            Err(shortage) => {
                let staging = Err(device.out_of_memory(shortage, self.shape(), bytes));
                return PendingRead { staging, bytes, submission: None, device };
            }
        };
        let submission = {
            let mut rec = dev.recorder.lock().unwrap();
            rec.push(Command::Copy { src: self.buffer().clone(), src_offset: 0, dst: staging.buffer().clone(), dst_offset: 0, size: bytes });
            rec.read_backs += 1;
            rec.flush(dev)
        };
        PendingRead { staging: Ok(Some(staging)), bytes, submission, device }
    }
}

impl PendingRead {
    /// The f32 values, once the GPU has produced them, copied once out of the mapped
    /// staging buffer (whose bytes need not be aligned for f32).
    pub fn wait(self) -> Result<Vec<f32>> {
        self.wait_with(bytemuck::pod_collect_to_vec)
    }

    /// The raw bytes, once the GPU has produced them.
    pub fn wait_bytes(self) -> Result<Vec<u8>> {
        self.wait_with(<[u8]>::to_vec)
    }

    /// `take` of the staging buffer's bytes, once the GPU has produced them. Waits for
    /// this read's submission only, not for work submitted after it.
    pub(crate) fn wait_with<T: Default>(self, take: impl FnOnce(&[u8]) -> T) -> Result<T> {
        let Some(staging) = self.staging? else { return Ok(T::default()) };
        let slice = staging.buffer().slice(0..self.bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let poll = wgpu::PollType::Wait { submission_index: self.submission, timeout: None };
        self.device.0.device.poll(poll).map_err(|e| Error::ReadBack(e.to_string()))?;
        rx.recv().map_err(|e| Error::ReadBack(e.to_string()))?.map_err(|e| Error::ReadBack(e.to_string()))?;
        let data = take(&slice.get_mapped_range().map_err(|e| Error::ReadBack(e.to_string()))?);
        staging.buffer().unmap();
        Ok(data)
    }
}
