// Backward of the fused cross-entropy, written straight from the logits:
//   dx[r, j] = g / count * (softmax[r, j] * (1 + 2 z_coef lse[r]) - [j == target[r]])
// and 0 for ignored rows. No one-hot is ever materialised. Each thread writes one load of
// V values (`common/row_chunks.wgsl`: vec4<f32> where rows are whole vec4s, else f32).

struct Params { rows: u32, n: u32, ignore_index: u32, z_coef: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<V>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read> row_lse: array<f32>;
@group(0) @binding(4) var<storage, read> count: array<f32>;
@group(0) @binding(5) var<storage, read> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<V>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    let chunks = p.n / VEC;
    if c >= p.rows * chunks {
        return;
    }
    let row = c / chunks;
    let j = (c % chunks) * VEC + LOAD_OFFSETS;
    let t = targets[row];
    let lse = row_lse[row];
    let scale = g[0] / max(count[0], 1.0);
    let prob = exp(logits[c] - V(lse));
    let d = prob * (1.0 + 2.0 * p.z_coef * lse) - select(V(0.0), V(1.0), j == VU(t));
    dx[c] = select(scale * d, V(0.0), t == p.ignore_index);
}
