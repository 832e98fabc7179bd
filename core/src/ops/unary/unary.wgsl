// Element-wise y = f(x) and its backward dx = g * f'(x): one template for every unary op.
// FORWARD and DERIVATIVE are WGSL expressions in `x` and the scalar `s`. A thread maps one
// load of V (vec4<f32> where the length is a multiple of 4, for four times the bytes in
// flight per thread; f32 otherwise), f and f' applied to each float by `f_each` and
// `df_each`, which the Rust side (`each_float`) writes for V.

struct Params { loads: u32, s: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x_in: array<V>;
@group(0) @binding(2) var<storage, read_write> out: array<V>;
@group(0) @binding(3) var<storage, read> g_in: array<V>; // backward only

fn sigmoid(z: f32) -> f32 {
    return 1.0 / (1.0 + exp(-z));
}

// GELU, tanh approximation, written as x * sigmoid(2u) so that large |x| cannot overflow.
const GELU_C: f32 = 0.7978845608028654; // sqrt(2 / pi)
fn gelu(x: f32) -> f32 {
    return x * sigmoid(2.0 * GELU_C * (x + 0.044715 * x * x * x));
}
fn gelu_grad(x: f32) -> f32 {
    let s = sigmoid(2.0 * GELU_C * (x + 0.044715 * x * x * x));
    return s + x * s * (1.0 - s) * 2.0 * GELU_C * (1.0 + 3.0 * 0.044715 * x * x);
}

fn f(x: f32, s: f32) -> f32 { return {{FORWARD}}; }
fn df(x: f32, s: f32) -> f32 { return {{DERIVATIVE}}; }

@compute @workgroup_size(ELEMENTWISE_WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < p.loads {
        out[i] = f_each(x_in[i], p.s);
    }
}

@compute @workgroup_size(ELEMENTWISE_WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < p.loads {
        out[i] = g_in[i] * df_each(x_in[i], p.s);
    }
}
