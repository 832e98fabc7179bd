// The weighted combine back to token order, y[t, :] = sum_j w[t, j] * rows[pos(t, j), :],
// summed in slot order (deterministic), and its gradient with respect to the rows:
// drows[pos, :] = w[s] * g[token of s, :], s = sorted_slots[pos] (the weights' gradient,
// a reduction, is `combine_weights_backward.wgsl`). Rows are read one load of V at a time
// (vec4<f32> where they are whole vec4s, else f32): d and total count loads.

struct Params { total: u32, d: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<V>; // rows (combine) or g (backward)
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> index: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<V>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn combine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.total {
        return;
    }
    let t = i / p.d;
    let c = i % p.d;
    var acc = V(0.0);
    for (var j = 0u; j < p.k; j++) {
        let s = t * p.k + j;
        acc += w[s] * a[index[s] * p.d + c];
    }
    out[i] = acc;
}

@compute @workgroup_size(ELEMENTWISE_WG)
fn backward_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.total {
        return;
    }
    let s = index[i / p.d];
    out[i] = w[s] * a[(s / p.k) * p.d + i % p.d];
}
