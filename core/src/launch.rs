//! Recording one kernel dispatch. By convention a kernel's binding 0 is its uniform
//! parameter struct and bindings 1.. are its tensors, in the order given.

use std::sync::Arc;

use crate::device::Device;
use crate::pipeline::Kernel;
use crate::recorder::Command;
use crate::tensor::Tensor;

/// Most workgroups a dispatch may have along one dimension (WebGPU's guaranteed minimum).
pub const MAX_GROUPS_PER_DIM: u32 = 65535;

/// Spreads `groups` workgroups over x and y so that large tensors fit the per-dimension
/// limit. Kernels recover the linear index as `wid.x + wid.y * nwg.x`; the few extra
/// workgroups this may launch must bounds-check.
pub fn grid(groups: usize) -> [u32; 3] {
    let groups = groups.max(1);
    let x = groups.min(MAX_GROUPS_PER_DIM as usize);
    let y = groups.div_ceil(x);
    assert!(y <= MAX_GROUPS_PER_DIM as usize, "dispatch of {groups} workgroups is too large");
    [x as u32, y as u32, 1]
}

/// Threads a workgroup of an element-wise kernel has (`ELEMENTWISE_WG` in its WGSL).
pub const ELEMENTWISE_THREADS: usize = 256;

/// WGSL appended to every kernel module: the element-wise kernels' workgroup size and
/// `flat_index`, the inverse of `elementwise_grid`.
pub(crate) const ELEMENTWISE_WGSL: &str = include_str!("elementwise.wgsl");

/// The grid of an element-wise kernel with one thread for each of `threads` elements (or
/// loads), whose WGSL finds its element with `flat_index`: the one launch convention of
/// every such kernel.
pub fn elementwise_grid(threads: usize) -> [u32; 3] {
    grid(threads.div_ceil(ELEMENTWISE_THREADS))
}

impl Device {
    /// Records a dispatch of `kernel` over `groups` workgroups, binding `tensors` to
    /// bindings 1, 2, ... in order. Never waits for the GPU.
    pub fn launch(&self, kernel: &Arc<Kernel>, params: &[u32], tensors: &[&Tensor], groups: [u32; 3]) {
        let bound: Vec<(u32, &Tensor)> = tensors.iter().enumerate().map(|(i, &t)| (i as u32 + 1, t)).collect();
        self.launch_bound(kernel, params, &bound, groups);
    }

    /// Like `launch`, with explicit binding numbers: for an entry point that uses only
    /// some of its module's bindings.
    pub fn launch_bound(&self, kernel: &Arc<Kernel>, params: &[u32], tensors: &[(u32, &Tensor)], groups: [u32; 3]) {
        // Checked before the recorder is locked: a panic holding the lock would poison it,
        // and with it every later use of the device.
        for &(_, t) in tensors {
            assert!(t.device().same(self), "tensor from another device passed to a kernel");
            assert!(t.numel() > 0, "empty tensors are not bound to kernels");
        }
        // Work on the void output of a failed op has no meaning; the failure waits in
        // `Device::check` for the next read-back.
        if tensors.iter().any(|(_, t)| t.is_void()) {
            return;
        }
        let inner = &self.0;
        let mut rec = inner.recorder.lock().unwrap();
        let layout = kernel.pipeline.get_bind_group_layout(0);
        let param_binding = rec.push_params(inner, params);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::Buffer(param_binding) }];
        for &(binding, t) in tensors {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: t.buffer(), offset: 0, size: wgpu::BufferSize::new(t.byte_len()) }),
            });
        }
        let bind_group = inner.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &layout, entries: &entries });
        rec.push(Command::Dispatch { kernel: kernel.clone(), bind_group, groups });
    }
}
