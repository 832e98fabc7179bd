// The softmax family along the last axis, one workgroup per row. MODE 0 = softmax,
// 1 = log-softmax, 2 = StableMax (s(z) = z + 1 for z >= 0, 1 / (1 - z) below, over the row
// sum). Logits are scaled by 1/temperature first. One pass over the row finds the max and
// the sum together (the sum is rescaled whenever the max grows); a second pass reads the
// row again (from cache) and writes.
// Each thread moves V values at a time (`common/row_chunks.wgsl`: vec4<f32> where rows
// are whole vec4s, else f32), and the loops have no branches, so the compiler can issue
// several loads before the first arrives.
// MASK defines `allowed(row, j)`; masked entries get exactly 0 (log-softmax: the most
// negative f32), and a fully masked row gives zeros, never NaN.

const WG: u32 = {{WG}}u;
const MODE: u32 = {{MODE}}u;

struct Params { rows: u32, n: u32, inv_temp: f32, mask_rows: u32, causal_t: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> y: array<V>;

{{MASK}}

{{ALLOWED_CHUNK}}

fn stable_s(z: V) -> V {
    return select(V(1.0) / (V(1.0) - z), z + V(1.0), z >= V(0.0));
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = inv.wid.x + inv.wid.y * inv.nwg.x;
    if row >= p.rows {
        return;
    }
    let chunks = p.n / VEC;
    let base = row * chunks;
    var acc = vec2<f32>(MOST_NEGATIVE, 0.0);
    for (var c = inv.lid; c < chunks; c += WG) {
        let ok = allowed_chunk(row, c);
        // Fully masked loads are never read (half a causal row); without a mask this
        // test is constant and compiles away.
        if !any(ok) {
            continue;
        }
        let z = x[base + c] * p.inv_temp;
        if MODE == 2u {
            acc.y += chunk_sum(select(V(0.0), stable_s(z), ok));
        } else {
            acc = online_fold(acc, z, ok);
        }
    }
    let row_stats = workgroup_max_sum(inv, acc);
    let m = row_stats.x;
    let inv_s = 1.0 / row_stats.y;
    let log_s = log(row_stats.y);
    let masked = V(select(0.0, MOST_NEGATIVE, MODE == 1u));
    for (var c = inv.lid; c < chunks; c += WG) {
        let ok = allowed_chunk(row, c);
        if !any(ok) {
            y[base + c] = masked;
            continue;
        }
        let z = x[base + c] * p.inv_temp;
        var out: V;
        if MODE == 0u {
            out = exp(z - m) * inv_s;
        } else if MODE == 1u {
            out = z - m - log_s;
        } else {
            out = stable_s(z) * inv_s;
        }
        y[base + c] = select(masked, out, ok);
    }
}
