// Backward of the softmax family, one workgroup per row, from the saved output y:
//   softmax, StableMax: dx = y * r * (g - sum(g * y)) / temperature, where r = 1 for
//     softmax and 1 / (1 + |z|) for StableMax (its s'(z) / s(z)), z the scaled logit;
//   log-softmax: dx = (g - exp(y) * sum(g)) / temperature, 0 where masked.

const WG: u32 = {{WG}}u;
const MODE: u32 = {{MODE}}u;
const MOST_NEGATIVE: f32 = -3.4028235e38;

struct Params { rows: u32, n: u32, inv_temp: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
{{LOGITS}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.n;
    var acc = 0.0;
    for (var j = lid; j < p.n; j += WG) {
        let yj = y[base + j];
        if MODE == 1u {
            acc += select(0.0, g[base + j], yj > MOST_NEGATIVE);
        } else {
            acc += g[base + j] * yj;
        }
    }
    let dot = workgroup_sum(lid, acc);
    for (var j = lid; j < p.n; j += WG) {
        let yj = y[base + j];
        let gj = g[base + j];
        if MODE == 1u {
            dx[base + j] = select(0.0, (gj - exp(yj) * dot) * p.inv_temp, yj > MOST_NEGATIVE);
        } else {
            dx[base + j] = yj * ratio(base + j) * (gj - dot) * p.inv_temp;
        }
    }
}
