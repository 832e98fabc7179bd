// The fused router: probabilities = softmax(logits) over the E experts, the top-k experts
// by probability (ties to the lower index), and their weights: the probabilities
// themselves, or renormalised over the chosen k when RENORMALIZE.
// A token's row is read as E / VEC loads of V (`common/row_chunks.wgsl`: vec4<f32> where
// E is a multiple of 4). LANES threads share a token, lane l holding loads l, l + LANES,
// l + 2 LANES... in registers, so each load instruction of a subgroup reads whole
// 128-byte runs; a workgroup routes WG / LANES tokens. EXCHANGE defines how a token's
// lanes combine their partial max, sum and top-k candidates:
// `router_exchange_subgroup.wgsl` (shuffles, no barriers) where the adapter has
// subgroups, `router_exchange_workgroup.wgsl` (workgroup memory) elsewhere.
// E and K are compiled in, so every loop has a constant trip count and unrolls.
// When STATS, each token's log-normaliser m + ln S and entropy ln S - sum_e z_e (x_e - m) / S
// (z_e = exp(x_e - m), S = sum_e z_e) are written too, by STATS_OUTPUT's `write_stats`.

const RENORMALIZE: bool = {{RENORMALIZE}};
const STATS: bool = {{STATS}};
const E: u32 = {{EXPERTS}}u;
const K: u32 = {{K}}u;
const LANES: u32 = {{LANES}}u;
const CHUNKS: u32 = E / VEC;
const PER_LANE: u32 = (CHUNKS + LANES - 1u) / LANES;
const WG: u32 = {{WG}}u;
const NONE: u32 = 0xffffffffu;

struct Params { tokens: u32, experts: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<V>;
@group(0) @binding(2) var<storage, read_write> probs: array<V>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> indices: array<u32>;

{{STATS_OUTPUT}}

// A top-k candidate: probability v of expert e (e = NONE: no candidate).
struct Candidate { v: f32, e: u32 }

fn better(a: Candidate, b: Candidate) -> bool {
    return a.e != NONE && (b.e == NONE || ranks_above(a.v, a.e, b.v, b.e));
}

{{EXCHANGE}}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let place = token_place(inv);
    let t = (inv.wid.x + inv.wid.y * inv.nwg.x) * (WG / LANES) + place.x;
    let lane = place.y;
    // Threads past the last token skip memory but not the exchanges.
    let live = t < p.tokens;
    let base = t * CHUNKS;

    var z: array<V, PER_LANE>;
    var m = MOST_NEGATIVE;
    for (var i = 0u; i < PER_LANE; i++) {
        let c = lane + i * LANES;
        z[i] = V(MOST_NEGATIVE);
        if live && c < CHUNKS {
            z[i] = logits[base + c];
            m = max(m, chunk_max(z[i]));
        }
    }
    m = token_max(inv, m);
    var s = 0.0;
    var weighted_logits = 0.0;
    for (var i = 0u; i < PER_LANE; i++) {
        if lane + i * LANES < CHUNKS {
            let shifted = z[i] - m;
            z[i] = exp(shifted);
            s += chunk_sum(z[i]);
            if STATS {
                // A logit of -inf has probability 0 and adds nothing (not 0 * -inf).
                weighted_logits += chunk_sum(select(V(0.0), z[i] * shifted, z[i] > V(0.0)));
            }
        }
    }
    let total = token_sum(inv, s);
    let inv_s = 1.0 / total;
    if STATS {
        let weighted = token_sum(inv, weighted_logits);
        if live && lane == 0u {
            write_stats(t, m + log(total), log(total) - weighted * inv_s);
        }
    }
    for (var i = 0u; i < PER_LANE; i++) {
        let c = lane + i * LANES;
        z[i] *= inv_s;
        if live && c < CHUNKS {
            probs[base + c] = z[i];
        }
    }

    // Top-k: K rounds of an arg-max over the lanes' candidates, each round below the last.
    var prev = Candidate(0.0, NONE);
    var chosen: array<Candidate, K>;
    var chosen_sum = 0.0;
    for (var j = 0u; j < K; j++) {
        var best = Candidate(0.0, NONE);
        for (var i = 0u; i < PER_LANE; i++) {
            let c = lane + i * LANES;
            for (var q = 0u; q < VEC; q++) {
                let candidate = Candidate(chunk_lane(z[i], q), c * VEC + q);
                if c < CHUNKS && (j == 0u || better(prev, candidate)) && better(candidate, best) {
                    best = candidate;
                }
            }
        }
        best = token_best(inv, best);
        chosen[j] = best;
        chosen_sum += best.v;
        prev = best;
    }
    if live && lane == 0u {
        let scale = select(1.0, 1.0 / chosen_sum, RENORMALIZE);
        for (var j = 0u; j < K; j++) {
            weights[t * K + j] = chosen[j].v * scale;
            indices[t * K + j] = chosen[j].e;
        }
    }
}
