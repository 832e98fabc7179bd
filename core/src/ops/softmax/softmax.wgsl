// The softmax family along the last axis, WG threads a row and ROWS rows a workgroup
// (`ops/common/rows.rs`: short rows packed, one subgroup each). MODE 0 = softmax,
// 1 = log-softmax, 2 = StableMax (s(z) = z + 1 for z >= 0, 1 / (1 - z) below, over the row
// sum). Logits are scaled by 1/temperature first. One pass over the row finds the max and
// the sum together (the sum is rescaled whenever the max grows); a second pass writes.
// Each thread moves V values at a time (`common/row_chunks.wgsl`: vec4<f32> where rows
// are whole vec4s, else f32).
// Rows of at most KEPT loads a thread are read once: a thread issues all its loads before
// it uses the first, and keeps them for the second pass in variables of their own (each
// EACH_KEPT line is written out once per load, # its number), which stay in registers
// whether or not the compiler unrolls loops (the measured kernel kept an array indexed
// in a loop of unknown length: local memory). The row then costs one read and one write. Longer rows (KEPT = 0) are read twice, the second time mostly from
// cache.
// MASK defines `allowed(row, j)`; masked entries get exactly 0 (log-softmax: the most
// negative f32), and a fully masked row gives zeros, never NaN.

const WG: u32 = {{WG}}u;
const ROWS: u32 = {{ROWS}}u;
const MODE: u32 = {{MODE}}u;
const KEPT: u32 = {{KEPT}}u;

struct Params { rows: u32, n: u32, inv_temp: f32, mask_rows: u32, causal_t: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> y: array<V>;

{{MASK}}

{{ALLOWED_CHUNK}}

fn stable_s(z: V) -> V {
    return select(V(1.0) / (V(1.0) - z), z + V(1.0), z >= V(0.0));
}

// Load c of the row at `base`, scaled by 1/temperature; 0 where no entry takes part, so
// fully masked loads (half a causal row) are never read.
fn scaled_load(base: u32, c: u32, ok: VB) -> V {
    if !any(ok) {
        return V(0.0);
    }
    return x[base + c] * p.inv_temp;
}

// Folds one load into the running (max, sum) of the row.
fn fold(acc: vec2<f32>, z: V, ok: VB) -> vec2<f32> {
    if MODE == 2u {
        return vec2<f32>(acc.x, acc.y + chunk_sum(select(V(0.0), stable_s(z), ok)));
    }
    return online_fold(acc, z, ok);
}

// The output for one load, from the row's max m and sum s (as 1/s and log s).
fn normalised(z: V, ok: VB, m: f32, inv_s: f32, log_s: f32) -> V {
    var out: V;
    if MODE == 0u {
        out = exp(z - m) * inv_s;
    } else if MODE == 1u {
        out = z - m - log_s;
    } else {
        out = stable_s(z) * inv_s;
    }
    return select(V(select(0.0, MOST_NEGATIVE, MODE == 1u)), out, ok);
}

// A load a thread keeps between the passes: its scaled logits and which take part.
struct Kept { z: V, ok: VB }

// Load c of a kept row; past the row's end nothing takes part and nothing is read.
fn kept_load(row: u32, base: u32, chunks: u32, c: u32) -> Kept {
    let ok = select(VB(false), allowed_chunk(row, min(c, chunks - 1u)), c < chunks);
    return Kept(scaled_load(base, c, ok), ok);
}

fn write_kept(base: u32, chunks: u32, c: u32, k: Kept, m: f32, inv_s: f32, log_s: f32) {
    if c < chunks {
        y[base + c] = normalised(k.z, k.ok, m, inv_s, log_s);
    }
}

@compute @workgroup_size(WG * ROWS)
fn main(inv: Invocation) {
    let at = row_at(inv, p.rows);
    let row = at.row;
    let lane = at.lane;
    let chunks = p.n / VEC;
    let base = row * chunks;
    var acc = vec2<f32>(MOST_NEGATIVE, 0.0);
    {{EACH_KEPT let k# = kept_load(row, base, chunks, lane + #u * WG);}}
    {{EACH_KEPT acc = fold(acc, k#.z, k#.ok);}}
    if KEPT == 0u {
        for (var c = lane; c < chunks; c += WG) {
            let ok = allowed_chunk(row, c);
            acc = fold(acc, scaled_load(base, c, ok), ok);
        }
    }
    let row_stats = row_max_sum(inv, acc);
    if !at.live {
        return;
    }
    let m = row_stats.x;
    let inv_s = 1.0 / row_stats.y;
    let log_s = log(row_stats.y);
    {{EACH_KEPT write_kept(base, chunks, lane + #u * WG, k#, m, inv_s, log_s);}}
    if KEPT == 0u {
        for (var c = lane; c < chunks; c += WG) {
            let ok = allowed_chunk(row, c);
            y[base + c] = normalised(scaled_load(base, c, ok), ok, m, inv_s, log_s);
        }
    }
}
