// Backward of the fused router, one thread per token. The weights' gradient reaches the
// scores first (through the renormalisation when RENORMALIZE:
// dp[a_i] += (gw_i - sum_l gw_l w_l) / S, S the chosen probabilities' sum), joins the
// probabilities' own gradient gp, and goes through the softmax:
// dlogits_e = p_e (gp_e + extra_e - sum_l p_l (gp_l + extra_l)), plus p_e times the
// gradient of the token's log-normaliser where it has one (LSE_GRAD defines `lse_grad`).
// Sigmoid scores (SIGMOID) are independent: dlogits_e = s_e (1 - s_e) (gp_e + extra_e),
// plus the log-normaliser's gradient times softmax_e, recomputed from the logits (LSE_GRAD
// binds them for `logit`).

const RENORMALIZE: bool = {{RENORMALIZE}};
const SIGMOID: bool = {{SIGMOID}};

struct Params { tokens: u32, experts: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read> g_probs: array<f32>;
@group(0) @binding(5) var<storage, read> g_weights: array<f32>;
@group(0) @binding(6) var<storage, read_write> dlogits: array<f32>;

{{LSE_GRAD}}

// The weights' contribution to the gradient of probability `e` (0 if not chosen).
fn extra(t: u32, e: u32, chosen_sum: f32, gw_dot_w: f32) -> f32 {
    for (var j = 0u; j < p.k; j++) {
        if indices[t * p.k + j] == e {
            let gw = g_weights[t * p.k + j];
            if RENORMALIZE {
                return (gw - gw_dot_w) / chosen_sum;
            }
            return gw;
        }
    }
    return 0.0;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    if t >= p.tokens {
        return;
    }
    let base = t * p.experts;
    var chosen_sum = 0.0;
    var gw_dot_w = 0.0;
    for (var j = 0u; j < p.k; j++) {
        chosen_sum += probs[base + indices[t * p.k + j]];
        gw_dot_w += g_weights[t * p.k + j] * weights[t * p.k + j];
    }
    if SIGMOID {
        let g_lse = lse_grad(t);
        var m = -3.4028235e38;
        var total = 0.0;
        if g_lse != 0.0 {
            for (var e = 0u; e < p.experts; e++) {
                m = max(m, logit(base + e));
            }
            for (var e = 0u; e < p.experts; e++) {
                total += exp(logit(base + e) - m);
            }
        }
        for (var e = 0u; e < p.experts; e++) {
            let s = probs[base + e];
            let softmax_part = select(0.0, g_lse * exp(logit(base + e) - m) / total, g_lse != 0.0);
            dlogits[base + e] = s * (1.0 - s) * (g_probs[base + e] + extra(t, e, chosen_sum, gw_dot_w)) + softmax_part;
        }
        return;
    }
    var dot = 0.0;
    for (var e = 0u; e < p.experts; e++) {
        dot += probs[base + e] * (g_probs[base + e] + extra(t, e, chosen_sum, gw_dot_w));
    }
    // d lse / d logit_e = p_e: the log-normaliser's gradient joins after the softmax's
    // centring (added to every gp_e it would cancel).
    let centre = dot - lse_grad(t);
    for (var e = 0u; e < p.experts; e++) {
        dlogits[base + e] = probs[base + e] * (g_probs[base + e] + extra(t, e, chosen_sum, gw_dot_w) - centre);
    }
}
