// SwiGLU's gate: y = silu(gate) * up, and its backward
//   dgate = g * up * silu'(gate), dup = g * silu(gate).

struct Params { n: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // forward: y; backward: dgate
@group(0) @binding(4) var<storage, read> g: array<f32>;           // backward only
@group(0) @binding(5) var<storage, read_write> dup: array<f32>;   // backward only

fn sigmoid(z: f32) -> f32 {
    return 1.0 / (1.0 + exp(-z));
}

@compute @workgroup_size(ELEMENTWISE_WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < p.n {
        out[i] = gate[i] * sigmoid(gate[i]) * up[i];
    }
}

@compute @workgroup_size(ELEMENTWISE_WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < p.n {
        let s = sigmoid(gate[i]);
        out[i] = g[i] * up[i] * s * (1.0 + gate[i] * (1.0 - s));
        dup[i] = g[i] * gate[i] * s;
    }
}
