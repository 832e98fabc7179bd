//! GPU time of recorded work, from timestamp queries written at the start and end of every
//! compute pass (adapters with `TIMESTAMP_QUERY`). Benchmarks time kernels this way rather
//! than with read-backs, which on a big GPU cost more than the kernels themselves.
//! `profile_gpu` gives every dispatch its own pass, to say which kernels the time went to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::device::Device;

/// Queries per query set (wgpu's maximum); more sets are added as passes need them.
const QUERIES_PER_SET: u32 = 4096;

/// Timestamp queries of a measurement in progress.
pub(crate) struct PassTimestamps {
    sets: Vec<wgpu::QuerySet>,
    /// Queries written so far (two per pass).
    used: u32,
    /// While profiling: the kernel of each pass (each dispatch is a pass of its own).
    kernels: Option<Vec<Arc<str>>>,
}

impl PassTimestamps {
    fn new(per_dispatch: bool) -> Self {
        PassTimestamps { sets: Vec::new(), used: 0, kernels: per_dispatch.then(Vec::new) }
    }

    pub fn per_dispatch(&self) -> bool {
        self.kernels.is_some()
    }

    /// Timestamp writes for the next compute pass, which starts with `kernel`.
    pub fn next_pass(&mut self, device: &wgpu::Device, kernel: &Arc<str>) -> wgpu::ComputePassTimestampWrites<'_> {
        let set = (self.used / QUERIES_PER_SET) as usize;
        if set == self.sets.len() {
            self.sets.push(device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("moegrad timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: QUERIES_PER_SET,
            }));
        }
        if let Some(kernels) = &mut self.kernels {
            kernels.push(kernel.clone());
        }
        let index = self.used % QUERIES_PER_SET;
        self.used += 2;
        wgpu::ComputePassTimestampWrites { query_set: &self.sets[set], beginning_of_pass_write_index: Some(index), end_of_pass_write_index: Some(index + 1) }
    }
}

/// One kernel's share of a profiled piece of work.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel's variant key, e.g. "softmax/forward".
    pub kernel: String,
    pub calls: usize,
    pub time: Duration,
}

impl Device {
    /// Whether `time_gpu` can measure on this adapter.
    pub fn has_gpu_timer(&self) -> bool {
        self.0.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Runs `work` and returns its result with the GPU time from the start of the first
    /// compute pass it recorded to the end of the last (what CUDA events around the same
    /// work measure: copies, clears and idle gaps between passes count), or `None` without
    /// timestamp queries. Waits for the GPU: for benchmarks, not for training.
    pub fn time_gpu<R>(&self, work: impl FnOnce() -> R) -> (R, Option<Duration>) {
        let (result, passes) = self.measure_passes(false, work);
        let span = passes.map(|p| {
            let start = p.iter().map(|(_, begin, _)| *begin).min().unwrap_or_default();
            let end = p.iter().map(|(_, _, end)| *end).max().unwrap_or_default();
            end.saturating_sub(start)
        });
        (result, span)
    }

    /// Runs `work` with every dispatch in a compute pass of its own and returns the GPU
    /// time per kernel, longest first (`None` without timestamp queries). Splitting the
    /// passes costs a little: use `time_gpu` for the total.
    pub fn profile_gpu<R>(&self, work: impl FnOnce() -> R) -> (R, Option<Vec<KernelTime>>) {
        let (result, passes) = self.measure_passes(true, work);
        let profile = passes.map(|passes| {
            let mut by_kernel: HashMap<Arc<str>, KernelTime> = HashMap::new();
            for (kernel, begin, end) in passes {
                let time = end.saturating_sub(begin);
                let entry = by_kernel.entry(kernel.clone()).or_insert_with(|| KernelTime { kernel: kernel.to_string(), calls: 0, time: Duration::ZERO });
                entry.calls += 1;
                entry.time += time;
            }
            let mut profile: Vec<KernelTime> = by_kernel.into_values().collect();
            profile.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.kernel.cmp(&b.kernel)));
            profile
        });
        (result, profile)
    }

    /// The start and end of each compute pass `work` records (GPU clock, from an arbitrary
    /// origin), with the pass's kernel when `per_dispatch` (an empty name otherwise).
    #[allow(clippy::type_complexity)]
    fn measure_passes<R>(&self, per_dispatch: bool, work: impl FnOnce() -> R) -> (R, Option<Vec<(Arc<str>, Duration, Duration)>>) {
        if !self.has_gpu_timer() {
            return (work(), None);
        }
        let inner = &self.0;
        {
            let mut rec = inner.recorder.lock().unwrap();
            rec.flush(inner);
            rec.timestamps = Some(PassTimestamps::new(per_dispatch));
        }
        let result = work();
        let stamps = {
            let mut rec = inner.recorder.lock().unwrap();
            rec.flush(inner);
            rec.timestamps.take().expect("timing was switched on above")
        };
        if stamps.used == 0 {
            return (result, Some(Vec::new()));
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
        let unnamed: Arc<str> = Arc::from("");
        let origin = ticks.iter().copied().min().unwrap_or_default();
        let at = |tick: u64| Duration::from_nanos(((tick - origin) as f64 * period) as u64);
        let passes = ticks
            .chunks(2)
            .enumerate()
            .map(|(i, p)| {
                let kernel = stamps.kernels.as_ref().map_or(&unnamed, |k| &k[i]).clone();
                (kernel, at(p[0]), at(p[1]))
            })
            .collect();
        (result, Some(passes))
    }
}
