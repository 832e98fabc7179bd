// Global gradient norm and clipping, all on the GPU (no read-back). Gradients may hold
// 1 / unscale times the true ones (loss scaling); the norm reported is the true one.
//   partial_squares: each workgroup sums the squares of its chunk of one gradient into
//                    partials[first + workgroup];
//   finish:          one workgroup adds the partials in a fixed order (deterministic) into
//                    out[0] = norm and out[1] = min(1, max_norm / (norm + 1e-6)) * unscale;
//   scale:           dst = src * out[1].
// Gradients are read a load of V at a time (vec4<f32> where the gradient's length is a
// multiple of 4, else f32): partial_squares' and scale's n and chunk count loads.

const WG: u32 = 256u;

struct Params { n: u32, first: u32, chunk: u32, max_norm: f32, unscale: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<V>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> norm_scale: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst: array<V>;

@compute @workgroup_size(256)
fn partial_squares(inv: Invocation) {
    let start = inv.wid.x * p.chunk;
    let end = min(start + p.chunk, p.n);
    var acc = 0.0;
    for (var i = start + inv.lid; i < end; i += WG) {
        let x = src[i];
        acc += chunk_sum(x * x);
    }
    let total = workgroup_sum(inv, acc);
    if inv.lid == 0u {
        partials[p.first + inv.wid.x] = total;
    }
}

@compute @workgroup_size(256)
fn finish(inv: Invocation) {
    var acc = 0.0;
    for (var i = inv.lid; i < p.n; i += WG) {
        acc += partials[i];
    }
    let total = workgroup_sum(inv, acc);
    if inv.lid == 0u {
        let norm = sqrt(total) * p.unscale;
        out[0] = norm;
        out[1] = min(1.0, p.max_norm / (norm + 1e-6)) * p.unscale;
    }
}

@compute @workgroup_size(ELEMENTWISE_WG)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < p.n {
        dst[i] = src[i] * norm_scale[1];
    }
}
