// The fused router: probabilities = softmax(logits) over the E experts, the top-k experts
// by probability (ties to the lower index), and their weights: the probabilities
// themselves, or renormalised over the chosen k when RENORMALIZE.
// LANES threads share a token, each holding a contiguous run of PER_LANE of its logits in
// registers, so a token's row is read in one coalesced sweep and a workgroup routes
// WG / LANES tokens. The lanes combine their partial max, sum and top-k candidates
// through workgroup memory (portable: no subgroup operations needed).

const RENORMALIZE: bool = {{RENORMALIZE}};
const E: u32 = {{EXPERTS}}u; // experts: p.experts, compiled in
const LANES: u32 = {{LANES}}u;
const PER_LANE: u32 = (E + LANES - 1u) / LANES;
const WG: u32 = {{WG}}u;
const MOST_NEGATIVE: f32 = -3.4028235e38;
const NONE: u32 = 0xffffffffu;

struct Params { tokens: u32, experts: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> indices: array<u32>;

var<workgroup> part_v: array<f32, WG>;
var<workgroup> part_i: array<u32, WG>;

// The max (or sum) of `v` over the LANES threads of the token whose first thread is
// `first`, in a fixed order. Every thread of the workgroup must call it.
fn token_max(lid: u32, first: u32, v: f32) -> f32 {
    part_v[lid] = v;
    workgroupBarrier();
    var m = part_v[first];
    for (var l = 1u; l < LANES; l++) {
        m = max(m, part_v[first + l]);
    }
    workgroupBarrier();
    return m;
}

fn token_sum(lid: u32, first: u32, v: f32) -> f32 {
    part_v[lid] = v;
    workgroupBarrier();
    var s = part_v[first];
    for (var l = 1u; l < LANES; l++) {
        s += part_v[first + l];
    }
    workgroupBarrier();
    return s;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = (wid.x + wid.y * nwg.x) * (WG / LANES) + lid / LANES;
    let lane = lid % LANES;
    let first = lid - lane;
    // Threads past the last token skip memory but not the barriers.
    let live = t < p.tokens;
    let e0 = lane * PER_LANE;
    let base = t * E;

    var z: array<f32, PER_LANE>;
    var m = MOST_NEGATIVE;
    for (var i = 0u; i < PER_LANE; i++) {
        z[i] = MOST_NEGATIVE;
        if live && e0 + i < E {
            z[i] = logits[base + e0 + i];
            m = max(m, z[i]);
        }
    }
    m = token_max(lid, first, m);
    var s = 0.0;
    for (var i = 0u; i < PER_LANE; i++) {
        if e0 + i < E {
            z[i] = exp(z[i] - m);
            s += z[i];
        }
    }
    s = token_sum(lid, first, s);
    for (var i = 0u; i < PER_LANE; i++) {
        if live && e0 + i < E {
            z[i] /= s;
            probs[base + e0 + i] = z[i];
        }
    }

    // Top-k: k rounds of an arg-max over the lanes' candidates, each round below the last.
    var prev_v = 0.0;
    var prev_i = 0u;
    var chosen_sum = 0.0;
    for (var j = 0u; j < p.k; j++) {
        var best_v = 0.0;
        var best_i = NONE;
        for (var i = 0u; i < PER_LANE; i++) {
            let e = e0 + i;
            if e < E && (j == 0u || ranks_above(prev_v, prev_i, z[i], e)) && (best_i == NONE || ranks_above(z[i], e, best_v, best_i)) {
                best_v = z[i];
                best_i = e;
            }
        }
        part_v[lid] = best_v;
        part_i[lid] = best_i;
        workgroupBarrier();
        for (var l = 0u; l < LANES; l++) {
            let v = part_v[first + l];
            let e = part_i[first + l];
            if e != NONE && (best_i == NONE || ranks_above(v, e, best_v, best_i)) {
                best_v = v;
                best_i = e;
            }
        }
        workgroupBarrier();
        if live && lane == 0u {
            weights[t * p.k + j] = best_v;
            indices[t * p.k + j] = best_i;
        }
        chosen_sum += best_v;
        prev_v = best_v;
        prev_i = best_i;
    }
    if RENORMALIZE && live && lane == 0u {
        for (var j = 0u; j < p.k; j++) {
            weights[t * p.k + j] /= chosen_sum;
        }
    }
}
