// Backward of top-k: dx[row, indices[row, j]] = g[row, j]; every other entry stays 0.
// Indices within a row are distinct, so threads never write the same place.

struct Params { rows: u32, n: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.rows * p.k {
        return;
    }
    let row = i / p.k;
    dx[row * p.n + indices[i]] = g[i];
}
