// Row normalisation with a learned scale, WG threads a row and ROWS rows a workgroup
// (`ops/common/rows.rs`: short rows packed, one subgroup each). RMS (MODE 0):
// y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps). LayerNorm (MODE 1):
// y = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var(x) + eps). The row's mean and rstd
// are saved for the backward pass. Rows, scale and bias are read V values at a time
// (`common/row_chunks.wgsl`: vec4<f32> where rows are whole vec4s, else f32).
// RESIDUAL defines `row_chunk`, the input: x itself, or x + delta for a residual
// connection followed by a norm, whose sum `keep_sum` also writes out (one pass instead
// of an add and then a norm).

const WG: u32 = {{WG}}u;
const ROWS: u32 = {{ROWS}}u;
const MODE: u32 = {{MODE}}u;

struct Params { rows: u32, n: u32, eps: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read> w: array<V>;
@group(0) @binding(3) var<storage, read> b: array<V>;
@group(0) @binding(4) var<storage, read_write> y: array<V>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>; // [rows, 2]: mean, rstd

{{RESIDUAL}}

@compute @workgroup_size(WG * ROWS)
fn main(inv: Invocation) {
    let at = row_at(inv, p.rows);
    let row = at.row;
    let lane = at.lane;
    let chunks = p.n / VEC;
    let base = row * chunks;
    var mean = 0.0;
    if MODE == 1u {
        var s = 0.0;
        for (var c = lane; c < chunks; c += WG) {
            s += chunk_sum(row_chunk(base + c));
        }
        mean = row_sum(inv, s) / f32(p.n);
    }
    var sq = 0.0;
    for (var c = lane; c < chunks; c += WG) {
        let d = row_chunk(base + c) - V(mean);
        sq += chunk_sum(d * d);
    }
    let rstd = inverseSqrt(row_sum(inv, sq) / f32(p.n) + p.eps);
    if !at.live {
        return;
    }
    for (var c = lane; c < chunks; c += WG) {
        let v = row_chunk(base + c);
        keep_sum(base + c, v);
        y[base + c] = (v - V(mean)) * rstd * w[c] + select(V(0.0), b[c], MODE == 1u);
    }
    if lane == 0u {
        stats[row * 2u] = mean;
        stats[row * 2u + 1u] = rstd;
    }
}
