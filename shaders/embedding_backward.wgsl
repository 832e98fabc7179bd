// Backward of the embedding lookup: dtable[r, :] = sum of g[i, :] over all i with ids[i] == r.
// A deterministic scatter-add without floating-point atomics: each workgroup owns ROWS
// table rows and walks all ids in order, adding the gradient row of each id it owns (its
// threads split the columns). Every table element is thus summed by one thread in index
// order. The ids are read once per workgroup, so the cost is O(rows / ROWS * n_ids) reads
// plus the O(n_ids * d) adds that any scatter-add needs.

struct Params { n_ids: u32, d: u32, rows: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> dtable: array<f32>; // zero-filled by the host

const WG: u32 = 256u;
const ROWS: u32 = {{ROWS}}u;
const NOT_OURS: u32 = 0xffffffffu;
var<workgroup> owned: array<u32, WG>; // the chunk's ids, NOT_OURS where another workgroup's

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row0 = (wid.x + wid.y * nwg.x) * ROWS;
    if row0 >= p.rows {
        return;
    }
    for (var chunk = 0u; chunk < p.n_ids; chunk += WG) {
        let i = chunk + lid;
        var id = NOT_OURS;
        if i < p.n_ids {
            id = ids[i];
        }
        owned[lid] = select(NOT_OURS, id, id >= row0 && id < row0 + ROWS);
        workgroupBarrier();
        let end = min(WG, p.n_ids - chunk);
        for (var t = 0u; t < end; t++) {
            let row = owned[t];
            if row != NOT_OURS {
                for (var c = lid; c < p.d; c += WG) {
                    dtable[row * p.d + c] += g[(chunk + t) * p.d + c];
                }
            }
        }
        workgroupBarrier();
    }
}
