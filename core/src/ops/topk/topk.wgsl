// Top-k along the last axis, one thread per row (rows are short: the expert count). Pass j
// takes the largest entry that ranks below the one pass j-1 took, ranking by value and then
// by lower index, so ties are deterministic and no per-row scratch is needed. `backward`
// scatters each value's gradient back to the position it came from (dx starts zeroed).

struct Params { rows: u32, n: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;
@group(0) @binding(3) var<storage, read_write> indices: array<u32>;


@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if row >= p.rows {
        return;
    }
    let base = row * p.n;
    var prev_v = 0.0;
    var prev_i = 0u;
    for (var j = 0u; j < p.k; j++) {
        var best_i = 0xffffffffu;
        var best_v = 0.0;
        for (var i = 0u; i < p.n; i++) {
            let v = x[base + i];
            let below_prev = j == 0u || ranks_above(prev_v, prev_i, v, i);
            if below_prev && (best_i == 0xffffffffu || ranks_above(v, i, best_v, best_i)) {
                best_v = v;
                best_i = i;
            }
        }
        values[row * p.k + j] = best_v;
        indices[row * p.k + j] = best_i;
        prev_v = best_v;
        prev_i = best_i;
    }
}
