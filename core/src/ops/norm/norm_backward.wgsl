// Backward of the row norms, laid out as the forward kernel (WG threads a row, ROWS rows a
// workgroup), from the saved mean and rstd:
//   x_hat = (x - mean) * rstd, gw = g * w,
//   dx = rstd * (gw - mean(gw) [LayerNorm only] - x_hat * mean(gw * x_hat)).
// It also writes g * x_hat, which summed over rows is the scale's gradient. Loads are
// V values at a time, as in the forward kernel. RESIDUAL defines `residual_grad`,
// added to dx: the gradient of a residual sum that is also used unnormalised (0 if none).

const WG: u32 = {{WG}}u;
const ROWS: u32 = {{ROWS}}u;
const MODE: u32 = {{MODE}}u;

struct Params { rows: u32, n: u32, eps: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read> w: array<V>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<V>;
@group(0) @binding(5) var<storage, read_write> dx: array<V>;
@group(0) @binding(6) var<storage, read_write> g_xhat: array<V>;

{{RESIDUAL}}

@compute @workgroup_size(WG * ROWS)
fn main(inv: Invocation) {
    let at = row_at(inv, p.rows);
    let row = at.row;
    let lane = at.lane;
    let chunks = p.n / VEC;
    let base = row * chunks;
    let mean = stats[row * 2u];
    let rstd = stats[row * 2u + 1u];
    var sum_gw = 0.0;
    var sum_gw_xhat = 0.0;
    for (var c = lane; c < chunks; c += WG) {
        let gw = g[base + c] * w[c];
        sum_gw += chunk_sum(gw);
        sum_gw_xhat += chunk_sum(gw * (x[base + c] - V(mean)) * rstd);
    }
    let mean_gw = select(0.0, row_sum(inv, sum_gw) / f32(p.n), MODE == 1u);
    let mean_gw_xhat = row_sum(inv, sum_gw_xhat) / f32(p.n);
    if !at.live {
        return;
    }
    for (var c = lane; c < chunks; c += WG) {
        let x_hat = (x[base + c] - V(mean)) * rstd;
        let gc = g[base + c];
        dx[base + c] = rstd * (gc * w[c] - V(mean_gw) - x_hat * mean_gw_xhat) + residual_grad(base + c);
        g_xhat[base + c] = gc * x_hat;
    }
}
