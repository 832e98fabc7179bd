// The Default MoE's update of each expert's default vector, one thread per (expert, column):
// D_e <- beta * D_e + (1 - beta) * mean of expert e's outputs this step, where expert e's
// rows are the contiguous block offsets[e]..offsets[e+1] of the expert-ordered outputs.
// An expert that received no tokens keeps its vector.

struct Params { experts: u32, d: u32, beta: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> defaults: array<f32>;
@group(0) @binding(2) var<storage, read> rows: array<f32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> updated: array<f32>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.experts * p.d {
        return;
    }
    let e = i / p.d;
    let c = i % p.d;
    let begin = offsets[e];
    let end = offsets[e + 1u];
    if end == begin {
        updated[i] = defaults[i];
        return;
    }
    var acc = 0.0;
    for (var r = begin; r < end; r++) {
        acc += rows[r * p.d + c];
    }
    updated[i] = p.beta * defaults[i] + (1.0 - p.beta) * acc / f32(end - begin);
}
