//! GPU time of recorded work, from timestamp queries written at the start and end of every
//! compute pass (adapters with `TIMESTAMP_QUERY`). Benchmarks time kernels this way rather
//! than with read-backs, which on a big GPU cost more than the kernels themselves.

use std::time::Duration;

use crate::device::Device;

/// Queries per query set (wgpu's maximum); more sets are added as passes need them.
const QUERIES_PER_SET: u32 = 4096;

/// Timestamp queries of a measurement in progress.
pub(crate) struct PassTimestamps {
    sets: Vec<wgpu::QuerySet>,
    /// Queries written so far (two per pass).
    used: u32,
}

impl PassTimestamps {
    fn new() -> Self {
        PassTimestamps { sets: Vec::new(), used: 0 }
    }

    /// Timestamp writes for the next compute pass.
    pub fn next_pass(&mut self, device: &wgpu::Device) -> wgpu::ComputePassTimestampWrites<'_> {
        let set = (self.used / QUERIES_PER_SET) as usize;
        if set == self.sets.len() {
            self.sets.push(device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("moegrad timestamps"), ty: wgpu::QueryType::Timestamp, count: QUERIES_PER_SET }));
        }
        let index = self.used % QUERIES_PER_SET;
        self.used += 2;
        wgpu::ComputePassTimestampWrites { query_set: &self.sets[set], beginning_of_pass_write_index: Some(index), end_of_pass_write_index: Some(index + 1) }
    }
}

impl Device {
    /// Whether `time_gpu` can measure on this adapter.
    pub fn has_gpu_timer(&self) -> bool {
        self.0.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Runs `work` and returns its result with the GPU time of the compute passes it
    /// recorded (summed pass by pass), or `None` without timestamp queries. Waits for the
    /// GPU: for benchmarks, not for training.
    pub fn time_gpu<R>(&self, work: impl FnOnce() -> R) -> (R, Option<Duration>) {
        if !self.has_gpu_timer() {
            return (work(), None);
        }
        let inner = &self.0;
        {
            let mut rec = inner.recorder.lock().unwrap();
            rec.flush(inner);
            rec.timestamps = Some(PassTimestamps::new());
        }
        let result = work();
        let stamps = {
            let mut rec = inner.recorder.lock().unwrap();
            rec.flush(inner);
            rec.timestamps.take().expect("timing was switched on above")
        };
        if stamps.used == 0 {
            return (result, Some(Duration::ZERO));
        }
        let bytes = stamps.used as u64 * 8;
        let usage = |u| wgpu::BufferDescriptor { label: None, size: bytes, usage: u, mapped_at_creation: false };
        let resolved = inner.device.create_buffer(&usage(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC));
        let readback = inner.device.create_buffer(&usage(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST));
        let mut encoder = inner.device.create_command_encoder(&Default::default());
        for (i, set) in stamps.sets.iter().enumerate() {
            let count = (stamps.used - i as u32 * QUERIES_PER_SET).min(QUERIES_PER_SET);
            encoder.resolve_query_set(set, 0..count, &resolved, i as u64 * QUERIES_PER_SET as u64 * 8);
        }
        encoder.copy_buffer_to_buffer(&resolved, 0, &readback, 0, bytes);
        inner.queue.submit([encoder.finish()]);
        let slice = readback.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        inner.device.poll(wgpu::PollType::wait_indefinitely()).expect("GPU device lost while timing");
        let ticks: Vec<u64> = bytemuck::cast_slice(&slice.get_mapped_range().expect("mapped above")).to_vec();
        let period = inner.queue.get_timestamp_period() as f64;
        let nanos: f64 = ticks.chunks(2).map(|p| p[1].saturating_sub(p[0]) as f64 * period).sum();
        (result, Some(Duration::from_nanos(nanos as u64)))
    }
}
