// out = EXPR of a and b, element by element, over two contiguous operands of one shape,
// or one repeating along the other's leading dimensions (a bias: A_AT or B_AT is then
// `i % ...`): the tape's gradient sums, and the binary ops whose broadcast is no more
// than that, which need none of the strided kernel's index arithmetic. A thread
// combines one load of V: vec4<f32> where the operands' lengths are multiples of 4
// (16-byte loads keep four times the bytes in flight per thread), f32 otherwise. EXPR
// (`a + b`, `a * b`, ...) reads the same for either type.

alias V = {{V}};

struct Params { loads: u32, a_loads: u32, b_loads: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a_in: array<V>;
@group(0) @binding(2) var<storage, read> b_in: array<V>;
@group(0) @binding(3) var<storage, read_write> out: array<V>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < p.loads {
        let a = a_in[{{A_AT}}];
        let b = b_in[{{B_AT}}];
        out[i] = {{EXPR}};
    }
}
