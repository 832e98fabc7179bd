// Backward of the embedding lookup: dtable[r, :] = sum of g[i, :] over all i with ids[i] == r.
// A deterministic scatter-add without floating-point atomics: each workgroup owns ROWS
// table rows and walks all ids in order, adding the gradient row of each id it owns (its
// threads split the columns). Every table element is thus summed by one thread in index
// order. The ids come in chunks of WG: each thread flags whether its id is owned, a scan
// of the flags lists the owned ones in order, and the workgroup walks only that list (at
// vocabulary sizes about WG * ROWS / rows of them, against WG ids a chunk). The cost is
// O(rows / ROWS * n_ids) id reads plus the O(n_ids * d) adds that any scatter-add needs.

struct Params { n_ids: u32, d: u32, rows: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> dtable: array<f32>; // zero-filled by the host

const WG: u32 = 256u;
const ROWS: u32 = {{ROWS}}u;
// How many of the chunk's ids up to each thread's (inclusive) are owned.
var<workgroup> owned_before: array<u32, WG>;
// The owned ids of the chunk, in order: (position in the chunk, table row).
var<workgroup> owned: array<vec2<u32>, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row0 = (wid.x + wid.y * nwg.x) * ROWS;
    if row0 >= p.rows {
        return;
    }
    for (var chunk = 0u; chunk < p.n_ids; chunk += WG) {
        let i = chunk + lid;
        var id = row0 + ROWS; // not ours
        if i < p.n_ids {
            id = ids[i];
        }
        let ours = id >= row0 && id < row0 + ROWS;
        // Inclusive scan of the flags (Hillis-Steele).
        owned_before[lid] = select(0u, 1u, ours);
        for (var offset = 1u; offset < WG; offset <<= 1u) {
            workgroupBarrier();
            var sum = owned_before[lid];
            if lid >= offset {
                sum += owned_before[lid - offset];
            }
            workgroupBarrier();
            owned_before[lid] = sum;
        }
        workgroupBarrier();
        if ours {
            owned[owned_before[lid] - 1u] = vec2<u32>(lid, id);
        }
        let count = owned_before[WG - 1u];
        workgroupBarrier();
        for (var t = 0u; t < count; t++) {
            let entry = owned[t];
            for (var c = lid; c < p.d; c += WG) {
                dtable[entry.y * p.d + c] += g[(chunk + entry.x) * p.d + c];
            }
        }
        workgroupBarrier();
    }
}
