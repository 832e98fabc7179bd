// Copies a block of `len` positions along one axis between two tensors viewed as
// [outer, axis, inner]: slice (src offset), concat and slice's backward (dst offset).

struct Params { total: u32, len: u32, inner: u32, src_axis: u32, src_start: u32, dst_axis: u32, dst_start: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.total {
        return;
    }
    let c = i % p.inner;
    let l = (i / p.inner) % p.len;
    let o = (i / p.inner) / p.len;
    dst[(o * p.dst_axis + p.dst_start + l) * p.inner + c] = src[(o * p.src_axis + p.src_start + l) * p.inner + c];
}
