// The fused router: scores = softmax(logits) over the E experts (or, when SIGMOID, each
// logit's sigmoid, as DeepSeek-V3), the top-k experts by score plus SELECTION_BIAS's
// `bias_of(e)` (ties to the lower index), and their weights: the unbiased scores
// themselves, or renormalised over the chosen k when RENORMALIZE. The bias (auxiliary-
// loss-free balancing) moves which experts are chosen, never how much they weigh.
// A token's row is read as E / VEC loads of V (`common/row_chunks.wgsl`: vec4<f32> where
// E is a multiple of 4). LANES threads share a token, lane l holding loads l, l + LANES,
// l + 2 LANES... in registers, so each load instruction of a subgroup reads whole
// 128-byte runs; a workgroup routes WG / LANES tokens. EXCHANGE defines how a token's
// lanes combine their partial max, sum and top-k candidates:
// `router_exchange_subgroup.wgsl` (shuffles, no barriers) where the adapter has
// subgroups, `router_exchange_workgroup.wgsl` (workgroup memory) elsewhere.
// E and K are compiled in, so every loop has a constant trip count, and a lane's loads are
// variables of their own (each EACH_KEPT line is written out once per load, # its
// number), which stay in registers whether or not the compiler unrolls loops.
// When STATS, each token's log-normaliser m + ln S and entropy ln S - sum_x e_x (x - m) / S
// over its logits x (e_x = exp(x - m), S = sum_x e_x) are written too, by STATS_OUTPUT's
// `write_stats`; with SIGMOID the entropy is that of the scores normalised to sum to 1,
// ln M - sum_e s_e ln s_e / M with M = sum_e s_e.

const RENORMALIZE: bool = {{RENORMALIZE}};
const STATS: bool = {{STATS}};
const SIGMOID: bool = {{SIGMOID}};
const BIASED: bool = {{BIASED}};
const E: u32 = {{EXPERTS}}u;
const K: u32 = {{K}}u;
const LANES: u32 = {{LANES}}u;
const CHUNKS: u32 = E / VEC;
const WG: u32 = {{WG}}u;
const NONE: u32 = 0xffffffffu;

struct Params { tokens: u32, experts: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<V>;
@group(0) @binding(2) var<storage, read_write> probs: array<V>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> indices: array<u32>;

{{STATS_OUTPUT}}

{{SELECTION_BIAS}}

// A top-k candidate: probability v of expert e (e = NONE: no candidate).
struct Candidate { v: f32, e: u32 }

fn better(a: Candidate, b: Candidate) -> bool {
    return a.e != NONE && (b.e == NONE || ranks_above(a.v, a.e, b.v, b.e));
}

{{EXCHANGE}}

// Load c of token row `base`: past the row's end (and for threads past the last token)
// the most negative f32, whose exp(z - m) is 0.
fn token_load(live: bool, base: u32, c: u32) -> V {
    if live && c < CHUNKS {
        return logits[base + c];
    }
    return V(MOST_NEGATIVE);
}

// One load's share of the token's sum S of e = exp(z - m) and of sum e (z - m), for the
// entropy. A logit of -inf has probability 0 and adds nothing (not 0 * -inf).
fn sum_shares(e: V, shifted: V) -> vec2<f32> {
    return vec2<f32>(chunk_sum(e), chunk_sum(select(V(0.0), e * shifted, e > V(0.0))));
}

// The scores of one load: softmax numerators e times 1 / S, or the logits' sigmoids (0
// past the row's end, where z is the most negative f32).
fn scores(z: V, e: V, inv_s: f32) -> V {
    if SIGMOID {
        return select(V(0.0), V(1.0) / (V(1.0) + exp(-z)), z > V(MOST_NEGATIVE));
    }
    return e * inv_s;
}

// One load's share of M = sum s and of sum s ln s, for a sigmoid router's entropy.
fn score_shares(s: V) -> vec2<f32> {
    return vec2<f32>(chunk_sum(s), chunk_sum(select(V(0.0), s * log(s), s > V(0.0))));
}

// Expert e's unbiased score, from its logit (the chosen candidates carry biased keys).
fn score_of(base: u32, e: u32, m: f32, inv_s: f32) -> f32 {
    let z = chunk_lane(logits[base + e / VEC], e % VEC);
    if SIGMOID {
        return 1.0 / (1.0 + exp(-z));
    }
    return exp(z - m) * inv_s;
}

fn write_probs(live: bool, base: u32, c: u32, pc: V) {
    if live && c < CHUNKS {
        probs[base + c] = pc;
    }
}

// The better of `best` and the experts of load c (probabilities pc) that rank below
// `prev`; no bound while prev is no candidate (the first round).
fn best_in_load(best: Candidate, prev: Candidate, pc: V, c: u32) -> Candidate {
    var b = best;
    for (var q = 0u; q < VEC; q++) {
        let candidate = Candidate(chunk_lane(pc, q) + bias_of(c * VEC + q), c * VEC + q);
        if c < CHUNKS && (prev.e == NONE || better(prev, candidate)) && better(candidate, b) {
            b = candidate;
        }
    }
    return b;
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let place = token_place(inv);
    let t = (inv.wid.x + inv.wid.y * inv.nwg.x) * (WG / LANES) + place.x;
    let lane = place.y;
    // Threads past the last token skip memory but not the exchanges.
    let live = t < p.tokens;
    let base = t * CHUNKS;

    {{EACH_KEPT let z# = token_load(live, base, lane + #u * LANES);}}
    var m = MOST_NEGATIVE;
    {{EACH_KEPT m = max(m, chunk_max(z#));}}
    m = token_max(inv, m);
    {{EACH_KEPT let e# = exp(z# - m);}}
    var sums = vec2<f32>(0.0);
    {{EACH_KEPT sums += sum_shares(e#, z# - m);}}
    let total = token_sum(inv, sums.x);
    let inv_s = 1.0 / total;
    {{EACH_KEPT let p# = scores(z#, e#, inv_s);}}
    if STATS {
        var entropy = 0.0;
        if SIGMOID {
            var shares = vec2<f32>(0.0);
            {{EACH_KEPT shares += score_shares(p#);}}
            let mass = token_sum(inv, shares.x);
            let weighted = token_sum(inv, shares.y);
            entropy = select(0.0, log(mass) - weighted / mass, mass > 0.0);
        } else {
            let weighted = token_sum(inv, sums.y);
            entropy = log(total) - weighted * inv_s;
        }
        if live && lane == 0u {
            write_stats(t, m + log(total), entropy);
        }
    }
    {{EACH_KEPT write_probs(live, base, lane + #u * LANES, p#);}}

    // Top-k: K rounds of an arg-max over the lanes' candidates, each round below the last.
    var prev = Candidate(0.0, NONE);
    var chosen_sum = 0.0;
    for (var j = 0u; j < K; j++) {
        var best = Candidate(0.0, NONE);
        {{EACH_KEPT best = best_in_load(best, prev, p#, lane + #u * LANES);}}
        best = token_best(inv, best);
        var weight = best.v;
        if BIASED && live && best.e != NONE {
            weight = score_of(base, best.e, m, inv_s);
        }
        if live && lane == 0u {
            weights[t * K + j] = weight;
            indices[t * K + j] = best.e;
        }
        chosen_sum += weight;
        prev = best;
    }
    if RENORMALIZE && live && lane == 0u {
        let scale = 1.0 / chosen_sum;
        for (var j = 0u; j < K; j++) {
            weights[t * K + j] *= scale;
        }
    }
}
