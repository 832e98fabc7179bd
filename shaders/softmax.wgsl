// The softmax family along the last axis, one workgroup per row. MODE 0 = softmax,
// 1 = log-softmax, 2 = StableMax (s(z) = z + 1 for z >= 0, 1 / (1 - z) below, over the row
// sum). Logits are scaled by 1/temperature first. One pass over the row finds the max and
// the sum together (the sum is rescaled whenever the max grows); a second pass writes.
// MASK defines `allowed(row, j)`; masked entries get exactly 0 (log-softmax: the most
// negative f32), and a fully masked row gives zeros, never NaN. When a row fits in
// CACHE values per thread, the first pass keeps the logits in registers and the second
// reads them there: one read of the row instead of two.

const WG: u32 = {{WG}}u;
const MODE: u32 = {{MODE}}u;
const CACHE: u32 = {{CACHE}}u;
const MOST_NEGATIVE: f32 = -3.4028235e38;

struct Params { rows: u32, n: u32, inv_temp: f32, mask_rows: u32, causal_t: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

{{MASK}}

var<private> cached: array<f32, max(CACHE, 1u)>;

// Logit j of the row (scaled), read from memory and kept as this thread's i-th value.
fn load_logit(idx: u32, i: u32) -> f32 {
    let z = x[idx] * p.inv_temp;
    if CACHE > 0u {
        cached[i] = z;
    }
    return z;
}

// The same logit in the second pass: from registers when cached.
fn reload_logit(idx: u32, i: u32) -> f32 {
    if CACHE > 0u {
        return cached[i];
    }
    return x[idx] * p.inv_temp;
}

fn stable_s(z: f32) -> f32 {
    return select(1.0 / (1.0 - z), z + 1.0, z >= 0.0);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.n;
    var acc = vec2<f32>(MOST_NEGATIVE, 0.0);
    var i = 0u;
    for (var j = lid; j < p.n; j += WG) {
        let z = load_logit(base + j, i);
        i++;
        if allowed(row, j) {
            if MODE == 2u {
                acc.y += stable_s(z);
            } else {
                acc = online_add(acc, z);
            }
        }
    }
    let row_stats = workgroup_max_sum(lid, acc);
    let m = row_stats.x;
    let s = row_stats.y;
    i = 0u;
    for (var j = lid; j < p.n; j += WG) {
        var out = select(0.0, MOST_NEGATIVE, MODE == 1u);
        let z = reload_logit(base + j, i);
        i++;
        if allowed(row, j) {
            if MODE == 0u {
                out = exp(z - m) / s;
            } else if MODE == 1u {
                out = z - m - log(s);
            } else {
                out = stable_s(z) / s;
            }
        }
        y[base + j] = out;
    }
}
