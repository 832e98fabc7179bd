// Backward of max over the middle axis of [outer, n, inner]: the gradient goes to the
// position that won (the first maximum), zero elsewhere.

struct Params { total: u32, n: u32, inner: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> arg: array<u32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.total {
        return;
    }
    let inner = i % p.inner;
    let k = (i / p.inner) % p.n;
    let o = (i / p.inner) / p.n;
    let r = o * p.inner + inner;
    dx[i] = select(0.0, g[r], arg[r] == k);
}
