// out[i] = EXPR of a[offset_a(i)] and b[offset_b(i)], where each input has a stride
// per output dimension. Zero strides broadcast (binary ops, broadcast_to); permuted
// strides transpose. The host merges contiguous dimensions first, so the rank is small.

struct Params {
    n: u32,
    rank: u32,
    shape: array<vec4<u32>, 2>,
    stride_a: array<vec4<u32>, 2>,
    stride_b: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a_in: array<f32>;
@group(0) @binding(2) var<storage, read> b_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn combine(a: f32, b: f32) -> f32 { return {{EXPR}}; }

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.n {
        return;
    }
    var rest = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let dim = p.shape[d / 4][d % 4];
        let idx = rest % dim;
        rest = rest / dim;
        ia += idx * p.stride_a[d / 4][d % 4];
        ib += idx * p.stride_b[d / 4][d % 4];
    }
    out[i] = combine(a_in[ia], b_in[ib]);
}
