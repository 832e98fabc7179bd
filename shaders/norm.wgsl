// Row normalisation with a learned scale, one workgroup per row. RMS (MODE 0):
// y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps). LayerNorm (MODE 1):
// y = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var(x) + eps). The row's mean and rstd
// are saved for the backward pass.

const WG: u32 = {{WG}}u;
const MODE: u32 = {{MODE}}u;

struct Params { rows: u32, n: u32, eps: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>; // [rows, 2]: mean, rstd

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = inv.wid.x + inv.wid.y * inv.nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.n;
    var mean = 0.0;
    if MODE == 1u {
        var s = 0.0;
        for (var j = inv.lid; j < p.n; j += WG) {
            s += x[base + j];
        }
        mean = workgroup_sum(inv, s) / f32(p.n);
    }
    var sq = 0.0;
    for (var j = inv.lid; j < p.n; j += WG) {
        let c = x[base + j] - mean;
        sq += c * c;
    }
    let rstd = inverseSqrt(workgroup_sum(inv, sq) / f32(p.n) + p.eps);
    for (var j = inv.lid; j < p.n; j += WG) {
        y[base + j] = (x[base + j] - mean) * rstd * w[j] + select(0.0, b[j], MODE == 1u);
    }
    if inv.lid == 0u {
        stats[row * 2u] = mean;
        stats[row * 2u + 1u] = rstd;
    }
}
