//! Batched command recording. Ops append dispatches, clears and copies here; nothing reaches
//! the GPU until a read-back (or a full batch) flushes them as one submission. No op ever
//! waits for the GPU.
//!
//! Each dispatch's small uniform parameters go to its own 256-byte slot of one arena buffer,
//! written once per flush just before the submit. A per-dispatch `write_buffer` would run
//! ahead of the batch's commands and clobber parameters that earlier dispatches still need.

use std::sync::Arc;

use crate::device::DeviceInner;
use crate::gpu_timer::PassTimestamps;
use crate::pipeline::Kernel;

/// Bytes in one parameter slot: the largest uniform struct a kernel may declare, and the
/// offset alignment every adapter accepts.
pub const PARAM_SLOT_BYTES: u64 = 256;
const ARENA_BYTES: u64 = 1 << 20;

pub(crate) enum Command {
    Dispatch { kernel: Arc<Kernel>, bind_group: wgpu::BindGroup, groups: [u32; 3] },
    Clear { buffer: wgpu::Buffer, size: u64 },
    Copy { src: wgpu::Buffer, src_offset: u64, dst: wgpu::Buffer, dst_offset: u64, size: u64 },
}

pub(crate) struct Recorder {
    commands: Vec<Command>,
    params: Vec<u8>,
    arena: wgpu::Buffer,
    slot: u64,
    pub submissions: usize,
    pub dispatches: usize,
    pub read_backs: usize,
    /// While `Device::time_gpu` measures: the timestamp queries of each compute pass.
    pub timestamps: Option<PassTimestamps>,
}

impl Recorder {
    pub fn new(device: &wgpu::Device, limits: &wgpu::Limits) -> Self {
        let slot = PARAM_SLOT_BYTES.max(limits.min_uniform_buffer_offset_alignment as u64);
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("moegrad params arena"),
            size: ARENA_BYTES.min(limits.max_buffer_size),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Recorder { commands: Vec::new(), params: Vec::new(), arena, slot, submissions: 0, dispatches: 0, read_backs: 0, timestamps: None }
    }

    /// Reserves a parameter slot (flushing first when the arena is full) and returns its
    /// binding.
    pub fn push_params(&mut self, device: &DeviceInner, params: &[u32]) -> wgpu::BufferBinding<'_> {
        assert!(params.len() as u64 * 4 <= PARAM_SLOT_BYTES, "kernel parameters exceed {PARAM_SLOT_BYTES} bytes");
        if self.params.len() as u64 + self.slot > self.arena.size() {
            self.flush(device);
        }
        let offset = self.params.len() as u64;
        self.params.extend_from_slice(bytemuck::cast_slice(params));
        self.params.resize((offset + self.slot) as usize, 0);
        wgpu::BufferBinding { buffer: &self.arena, offset, size: wgpu::BufferSize::new(PARAM_SLOT_BYTES) }
    }

    pub fn push(&mut self, command: Command) {
        if matches!(command, Command::Dispatch { .. }) {
            self.dispatches += 1;
        }
        self.commands.push(command);
    }

    /// Encodes everything recorded, consecutive dispatches in one compute pass (one pass each
    /// while profiling), and submits;
    /// returns the submission (`None` when there was nothing to submit).
    pub fn flush(&mut self, device: &DeviceInner) -> Option<wgpu::SubmissionIndex> {
        if self.commands.is_empty() {
            return None;
        }
        if !self.params.is_empty() {
            device.queue.write_buffer(&self.arena, 0, &self.params);
        }
        let mut encoder = device.device.create_command_encoder(&Default::default());
        let mut commands = std::mem::take(&mut self.commands).into_iter().peekable();
        while let Some(command) = commands.next() {
            match command {
                Command::Dispatch { kernel, bind_group, groups } => {
                    let per_dispatch = self.timestamps.as_ref().is_some_and(PassTimestamps::per_dispatch);
                    let timestamp_writes = self.timestamps.as_mut().map(|t| t.next_pass(&device.device, &kernel.name));
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
                    dispatch(&mut pass, &kernel, &bind_group, groups);
                    while !per_dispatch && matches!(commands.peek(), Some(Command::Dispatch { .. })) {
                        let Some(Command::Dispatch { kernel, bind_group, groups }) = commands.next() else { unreachable!() };
                        dispatch(&mut pass, &kernel, &bind_group, groups);
                    }
                }
                Command::Clear { buffer, size } => encoder.clear_buffer(&buffer, 0, Some(size)),
                Command::Copy { src, src_offset, dst, dst_offset, size } => encoder.copy_buffer_to_buffer(&src, src_offset, &dst, dst_offset, size),
            }
        }
        let submission = device.queue.submit([encoder.finish()]);
        self.params.clear();
        self.submissions += 1;
        Some(submission)
    }
}

fn dispatch(pass: &mut wgpu::ComputePass<'_>, kernel: &Kernel, bind_group: &wgpu::BindGroup, groups: [u32; 3]) {
    pass.set_pipeline(&kernel.pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
}
