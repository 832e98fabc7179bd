// The fused router, one thread per token: probabilities = softmax(logits) over the E
// experts, the top-k experts by probability (ties to the lower index), and their weights:
// the probabilities themselves, or renormalised over the chosen k when RENORMALIZE.

const RENORMALIZE: bool = {{RENORMALIZE}};
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
    let base = t * p.experts;
    var m = MOST_NEGATIVE;
    for (var e = 0u; e < p.experts; e++) {
        m = max(m, logits[base + e]);
    }
    var s = 0.0;
    for (var e = 0u; e < p.experts; e++) {
        s += exp(logits[base + e] - m);
    }
    for (var e = 0u; e < p.experts; e++) {
        probs[base + e] = exp(logits[base + e] - m) / s;
    }
    var prev_v = 0.0;
    var prev_i = 0u;
    var chosen_sum = 0.0;
    for (var j = 0u; j < p.k; j++) {
        var best_i = 0xffffffffu;
        var best_v = 0.0;
        for (var e = 0u; e < p.experts; e++) {
            let v = probs[base + e];
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
