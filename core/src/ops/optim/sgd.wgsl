// Plain SGD, in place: p <- p - lr * g, a load of V a thread (vec4<f32> where the
// parameter's length is a multiple of 4, else f32), as AdamW does.

struct Params { loads: u32, lr: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<V>;
@group(0) @binding(2) var<storage, read> grad: array<V>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < p.loads {
        param[i] -= p.lr * grad[i];
    }
}
