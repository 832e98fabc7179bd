// The fused router, one thread per token: probabilities = softmax(logits) over the E
// experts, the top-k experts by probability (ties to the lower index), and their weights:
// the probabilities themselves, or renormalised over the chosen k when RENORMALIZE.

const RENORMALIZE: bool = {{RENORMALIZE}};
const E: u32 = {{EXPERTS}}u; // experts: p.experts, compiled in
const MOST_NEGATIVE: f32 = -3.4028235e38;

struct Params { tokens: u32, experts: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> indices: array<u32>;


@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    if t >= p.tokens {
        return;
    }
    // The token's row is read once into registers (E is fixed per pipeline, so the loops
    // unroll); softmax and the selection then never touch memory again.
    let base = t * E;
    var z: array<f32, E>;
    var m = MOST_NEGATIVE;
    for (var e = 0u; e < E; e++) {
        z[e] = logits[base + e];
        m = max(m, z[e]);
    }
    var s = 0.0;
    for (var e = 0u; e < E; e++) {
        z[e] = exp(z[e] - m);
        s += z[e];
    }
    for (var e = 0u; e < E; e++) {
        z[e] /= s;
        probs[base + e] = z[e];
    }
    var prev_v = 0.0;
    var prev_i = 0u;
    var chosen_sum = 0.0;
    for (var j = 0u; j < p.k; j++) {
        var best_i = 0xffffffffu;
        var best_v = 0.0;
        for (var e = 0u; e < E; e++) {
            let v = z[e];
            if (j == 0u || ranks_above(prev_v, prev_i, v, e)) && (best_i == 0xffffffffu || ranks_above(v, e, best_v, best_i)) {
                best_v = v;
                best_i = e;
            }
        }
        weights[t * p.k + j] = best_v;
        indices[t * p.k + j] = best_i;
        chosen_sum += best_v;
        prev_v = best_v;
        prev_i = best_i;
    }
    if RENORMALIZE {
        for (var j = 0u; j < p.k; j++) {
            weights[t * p.k + j] /= chosen_sum;
        }
    }
}
