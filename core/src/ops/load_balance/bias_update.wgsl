// DeepSeek-V3's auxiliary-loss-free balancing, one step: each expert's selection bias moves
// by `rate` towards an even load, b_e <- b_e + rate * sign(mean_l load_l - load_e): up for
// an expert below the mean load, down above it, unchanged at it. One thread per expert
// (the mean is over at most 256 loads).

struct Params { experts: u32, rate: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read> load: array<f32>;
@group(0) @binding(3) var<storage, read_write> updated: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x;
    if e >= p.experts {
        return;
    }
    var total = 0.0;
    for (var l = 0u; l < p.experts; l++) {
        total += load[l];
    }
    updated[e] = bias[e] + p.rate * sign(total / f32(p.experts) - load[e]);
}
