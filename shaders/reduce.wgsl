// Reduction over the middle axis of an [outer, n, inner] view: one workgroup per output,
// each thread striding over n, then a tree in workgroup memory. `max` also writes the
// index of the first maximum, which its backward needs.

struct Params { outer: u32, n: u32, inner: u32, scale: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> arg: array<u32>; // max only

const WG: u32 = 64u;
const MOST_NEGATIVE: f32 = -3.4028235e38;
var<workgroup> vals: array<f32, WG>;
var<workgroup> idxs: array<u32, WG>;

@compute @workgroup_size(64)
fn reduce_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = wid.x + wid.y * nwg.x;
    if o >= p.outer * p.inner {
        return;
    }
    let base = (o / p.inner) * p.n * p.inner + o % p.inner;
    var acc = 0.0;
    for (var k = lid; k < p.n; k += WG) {
        acc += x[base + k * p.inner];
    }
    vals[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            vals[lid] += vals[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out[o] = vals[0] * p.scale;
    }
}

@compute @workgroup_size(64)
fn reduce_max(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = wid.x + wid.y * nwg.x;
    if o >= p.outer * p.inner {
        return;
    }
    let base = (o / p.inner) * p.n * p.inner + o % p.inner;
    var best = MOST_NEGATIVE;
    var best_k = 0xffffffffu;
    for (var k = lid; k < p.n; k += WG) {
        let v = x[base + k * p.inner];
        if v > best || best_k == 0xffffffffu {
            best = v;
            best_k = k;
        }
    }
    vals[lid] = best;
    idxs[lid] = best_k;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            let v = vals[lid + s];
            let k = idxs[lid + s];
            // Ties go to the lower index, so the result does not depend on the tree.
            if k != 0xffffffffu && (v > vals[lid] || (v == vals[lid] && k < idxs[lid])) {
                vals[lid] = v;
                idxs[lid] = k;
            }
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out[o] = vals[0];
        arg[o] = idxs[0];
    }
}
