// The load-balancing loss of a top-k router (Switch Transformer): coef * E * sum_e f_e P_e,
// f_e the share of the T * k routed slots that went to expert e (a constant) and P_e the
// mean probability of expert e over the T tokens.
//   experts:  workgroup e sums column e of the probabilities and counts the slots that
//             chose e: share[e] = f_e, mean_probs[e] = P_e;
//   finish:   one workgroup adds the E products in a fixed order (deterministic);
//   backward: dprobs[t, e] = g * coef * E * f_e / T.

const WG: u32 = 256u;

struct Params { tokens: u32, experts: u32, k: u32, coef: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> share: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean_probs: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
@group(0) @binding(6) var<storage, read> g: array<f32>;
@group(0) @binding(7) var<storage, read_write> dprobs: array<f32>;

@compute @workgroup_size(WG)
fn experts(inv: Invocation) {
    let e = inv.wid.x;
    var prob_sum = 0.0;
    var chosen = 0.0;
    for (var t = inv.lid; t < p.tokens; t += WG) {
        prob_sum += probs[t * p.experts + e];
        for (var j = 0u; j < p.k; j++) {
            chosen += select(0.0, 1.0, indices[t * p.k + j] == e);
        }
    }
    let total_prob = workgroup_sum(inv, prob_sum);
    let total_chosen = workgroup_sum(inv, chosen);
    if inv.lid == 0u {
        share[e] = total_chosen / f32(p.tokens * p.k);
        mean_probs[e] = total_prob / f32(p.tokens);
    }
}

@compute @workgroup_size(WG)
fn finish(inv: Invocation) {
    var acc = 0.0;
    for (var e = inv.lid; e < p.experts; e += WG) {
        acc += share[e] * mean_probs[e];
    }
    let total = workgroup_sum(inv, acc);
    if inv.lid == 0u {
        loss[0] = p.coef * f32(p.experts) * total;
    }
}

@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i < p.tokens * p.experts {
        dprobs[i] = g[0] * p.coef * f32(p.experts) * share[i % p.experts] / f32(p.tokens);
    }
}
