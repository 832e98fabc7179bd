// Sums a broadcast gradient back to the shape of the input that was broadcast: each output
// element adds up the entries of g over the reduced (broadcast) dimensions.

struct Params {
    n_out: u32,
    n_reduced: u32,
    kept_rank: u32,
    reduced_rank: u32,
    kept_shape: array<vec4<u32>, 2>,
    kept_stride: array<vec4<u32>, 2>,
    reduced_shape: array<vec4<u32>, 2>,
    reduced_stride: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = flat_index(gid, nwg);
    if o >= p.n_out {
        return;
    }
    var rest = o;
    var base = 0u;
    for (var d = i32(p.kept_rank) - 1; d >= 0; d--) {
        let dim = p.kept_shape[d / 4][d % 4];
        base += (rest % dim) * p.kept_stride[d / 4][d % 4];
        rest = rest / dim;
    }
    var acc = 0.0;
    for (var r = 0u; r < p.n_reduced; r++) {
        var rr = r;
        var off = base;
        for (var d = i32(p.reduced_rank) - 1; d >= 0; d--) {
            let dim = p.reduced_shape[d / 4][d % 4];
            off += (rr % dim) * p.reduced_stride[d / 4][d % 4];
            rr = rr / dim;
        }
        acc += g[off];
    }
    out[o] = acc;
}
