// out[i, :] = table[ids[i], :] (embedding lookup). An id past the table gives a zero row.

struct Params { total: u32, d: u32, rows: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.total {
        return;
    }
    let id = ids[i / p.d];
    out[i] = select(0.0, table[id * p.d + i % p.d], id < p.rows);
}
