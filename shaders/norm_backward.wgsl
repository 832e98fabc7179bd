// Backward of the row norms, one workgroup per row, from the saved mean and rstd:
//   x_hat = (x - mean) * rstd, gw = g * w,
//   dx = rstd * (gw - mean(gw) [LayerNorm only] - x_hat * mean(gw * x_hat)).
// It also writes g * x_hat, which summed over rows is the scale's gradient.

const WG: u32 = {{WG}}u;
const MODE: u32 = {{MODE}}u;

struct Params { rows: u32, n: u32, eps: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> g_xhat: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = inv.wid.x + inv.wid.y * inv.nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.n;
    let mean = stats[row * 2u];
    let rstd = stats[row * 2u + 1u];
    var sum_gw = 0.0;
    var sum_gw_xhat = 0.0;
    for (var j = inv.lid; j < p.n; j += WG) {
        let gw = g[base + j] * w[j];
        sum_gw += gw;
        sum_gw_xhat += gw * (x[base + j] - mean) * rstd;
    }
    let mean_gw = select(0.0, workgroup_sum(inv, sum_gw) / f32(p.n), MODE == 1u);
    let mean_gw_xhat = workgroup_sum(inv, sum_gw_xhat) / f32(p.n);
    for (var j = inv.lid; j < p.n; j += WG) {
        let x_hat = (x[base + j] - mean) * rstd;
        let gw = g[base + j] * w[j];
        dx[base + j] = rstd * (gw - mean_gw - x_hat * mean_gw_xhat);
        g_xhat[base + j] = g[base + j] * x_hat;
    }
}
