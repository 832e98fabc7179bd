// The fused router, one thread per token: probabilities = softmax(logits) over the E
// experts, the top-k experts by probability (ties to the lower index), and their weights:
// the probabilities themselves, or renormalised over the chosen k when RENORMALIZE.
// With up to STAGED_EXPERTS experts the workgroup's rows pass through workgroup memory,
// so that global reads and writes are coalesced (a row per thread would stride by E) and
// each row is read from memory once; rows are padded by one word so that the threads'
// row-wise accesses hit distinct banks. More experts read and write global memory directly.

const RENORMALIZE: bool = {{RENORMALIZE}};
const MOST_NEGATIVE: f32 = -3.4028235e38;
const WG: u32 = 64u;
const STAGED_EXPERTS: u32 = 64u;

struct Params { tokens: u32, experts: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> indices: array<u32>;

var<workgroup> rows: array<f32, WG * (STAGED_EXPERTS + 1u)>;

// The row of local token `lt` (global token `t`): staged, or in global memory.
fn row_value(staged: bool, lt: u32, t: u32, e: u32) -> f32 {
    if staged {
        return rows[lt * (p.experts + 1u) + e];
    }
    return probs[t * p.experts + e];
}

fn set_row_value(staged: bool, lt: u32, t: u32, e: u32, v: f32) {
    if staged {
        rows[lt * (p.experts + 1u) + e] = v;
    } else {
        probs[t * p.experts + e] = v;
    }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lt: u32) {
    let t0 = (wid.x + wid.y * nwg.x) * WG;
    if t0 >= p.tokens {
        return;
    }
    let staged = p.experts <= STAGED_EXPERTS;
    let count = min(WG, p.tokens - t0); // tokens in this workgroup
    let span = count * p.experts; // their logits, contiguous
    if staged {
        for (var i = lt; i < span; i += WG) {
            rows[(i / p.experts) * (p.experts + 1u) + i % p.experts] = logits[t0 * p.experts + i];
        }
    } else if lt < count {
        for (var e = 0u; e < p.experts; e++) {
            probs[(t0 + lt) * p.experts + e] = logits[(t0 + lt) * p.experts + e];
        }
    }
    workgroupBarrier();

    let t = t0 + lt;
    if lt < count {
        var m = MOST_NEGATIVE;
        for (var e = 0u; e < p.experts; e++) {
            m = max(m, row_value(staged, lt, t, e));
        }
        var s = 0.0;
        for (var e = 0u; e < p.experts; e++) {
            let x = exp(row_value(staged, lt, t, e) - m);
            set_row_value(staged, lt, t, e, x);
            s += x;
        }
        for (var e = 0u; e < p.experts; e++) {
            set_row_value(staged, lt, t, e, row_value(staged, lt, t, e) / s);
        }
        var prev_v = 0.0;
        var prev_i = 0u;
        var chosen_sum = 0.0;
        for (var j = 0u; j < p.k; j++) {
            var best_i = 0xffffffffu;
            var best_v = 0.0;
            for (var e = 0u; e < p.experts; e++) {
                let v = row_value(staged, lt, t, e);
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
    workgroupBarrier();
    if staged {
        for (var i = lt; i < span; i += WG) {
            probs[t0 * p.experts + i] = rows[(i / p.experts) * (p.experts + 1u) + i % p.experts];
        }
    }
}
