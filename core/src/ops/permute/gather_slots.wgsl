// Rows from token order to expert order: dst[pos, :] = src[token of sorted_slots[pos], :]
// (each token appears k times). Its backward is the combine kernel with unit weights.
// A thread moves one load of V (vec4<f32> where rows are whole vec4s, else f32): total
// and d count loads.

struct Params { total: u32, d: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<V>;
@group(0) @binding(2) var<storage, read> index: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<V>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.total {
        return;
    }
    let pos = i / p.d;
    dst[i] = src[(index[pos] / p.k) * p.d + i % p.d];
}
