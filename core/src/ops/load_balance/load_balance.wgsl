// The load-balancing loss of a top-k router (Switch Transformer): coef * E * sum_e f_e P_e,
// f_e = counts[e] / (T k) the share of the routed slots that went to expert e (a constant)
// and P_e = column_sums[e] / T the mean probability of expert e.
//   finish:   one workgroup: load[e] = f_e, and the loss, adding the E products in a fixed
//             order (deterministic);
//   backward: dprobs[t, e] = g * coef * E * f_e / T.

const WG: u32 = 256u;

struct Params { tokens: u32, experts: u32, slots: u32, coef: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> column_sums: array<f32>;
@group(0) @binding(2) var<storage, read> counts: array<u32>;
@group(0) @binding(3) var<storage, read_write> load: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;
@group(0) @binding(5) var<storage, read> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> dprobs: array<f32>;

@compute @workgroup_size(WG)
fn finish(inv: Invocation) {
    var acc = 0.0;
    for (var e = inv.lid; e < p.experts; e += WG) {
        let share = f32(counts[e]) / f32(p.slots);
        load[e] = share;
        acc += share * column_sums[e];
    }
    let total = workgroup_sum(inv, acc);
    if inv.lid == 0u {
        loss[0] = p.coef * f32(p.experts) * total / f32(p.tokens);
    }
}

@compute @workgroup_size(ELEMENTWISE_WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < p.tokens * p.experts {
        dprobs[i] = g[0] * p.coef * f32(p.experts) * load[i % p.experts] / f32(p.tokens);
    }
}
