// Backward of the embedding lookup: dtable[r, :] = sum of g[i, :] over all i with ids[i] == r.
// One workgroup per table row scans the ids in chunks and adds the matching rows in index
// order: a deterministic scatter-add, no floating-point atomics.

struct Params { n_ids: u32, d: u32, rows: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> dtable: array<f32>;

const WG: u32 = 256u;
var<workgroup> hit: array<u32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    for (var c0 = 0u; c0 < p.d; c0 += WG) {
        let c = c0 + lid;
        var acc = 0.0;
        for (var chunk = 0u; chunk < p.n_ids; chunk += WG) {
            let i = chunk + lid;
            hit[lid] = u32(i < p.n_ids && ids[min(i, p.n_ids - 1u)] == row);
            workgroupBarrier();
            if c < p.d {
                let end = min(WG, p.n_ids - chunk);
                for (var t = 0u; t < end; t++) {
                    if hit[t] != 0u {
                        acc += g[(chunk + t) * p.d + c];
                    }
                }
            }
            workgroupBarrier();
        }
        if c < p.d {
            dtable[row * p.d + c] = acc;
        }
    }
}
