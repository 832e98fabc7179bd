// One fused AdamW step, in place: moments, bias correction and decoupled weight decay,
// on the gradient times GRAD_SCALE's `grad_scale()` (gradient clipping and loss-scale
// removal, or 1). A thread updates one load of V: vec4<f32> where the parameter's length
// is a multiple of 4, for four times the bytes in flight per thread in a kernel that only
// moves memory (seven floats an element); f32 otherwise.
// The update:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / bc1 / (sqrt(v / bc2) + eps) + wd * p)

struct Params { loads: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, bc1: f32, bc2: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<V>;
@group(0) @binding(2) var<storage, read> grad: array<V>;
@group(0) @binding(3) var<storage, read_write> m: array<V>;
@group(0) @binding(4) var<storage, read_write> v: array<V>;

{{GRAD_SCALE}}

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.loads {
        return;
    }
    let g = grad[i] * grad_scale();
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let update = (mi / p.bc1) / (sqrt(vi / p.bc2) + p.eps);
    param[i] -= p.lr * (update + p.weight_decay * param[i]);
}
