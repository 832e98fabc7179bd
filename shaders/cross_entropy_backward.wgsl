// Backward of the fused cross-entropy, written straight from the logits:
//   dx[r, j] = g / count * (softmax[r, j] * (1 + 2 z_coef lse[r]) - [j == target[r]])
// and 0 for ignored rows. No one-hot is ever materialised.

struct Params { rows: u32, n: u32, ignore_index: u32, z_coef: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read> row_lse: array<f32>;
@group(0) @binding(4) var<storage, read> count: array<f32>;
@group(0) @binding(5) var<storage, read> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.rows * p.n {
        return;
    }
    let row = i / p.n;
    let j = i % p.n;
    let t = targets[row];
    let lse = row_lse[row];
    let scale = g[0] / max(count[0], 1.0);
    let prob = exp(logits[i] - lse);
    let d = prob * (1.0 + 2.0 * p.z_coef * lse) - select(0.0, 1.0, j == t);
    dx[i] = select(scale * d, 0.0, t == p.ignore_index);
}
