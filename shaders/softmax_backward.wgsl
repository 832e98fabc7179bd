// Backward of the softmax family, one workgroup per row, from the saved output y:
//   softmax, StableMax: dx = y * r * (g - sum(g * y)) / temperature, where r = 1 for
//     softmax and 1 / (1 + |z|) for StableMax (its s'(z) / s(z)), z the scaled logit;
//   log-softmax: dx = (g - exp(y) * sum(g)) / temperature;
// 0 where masked.
// Loads are V = vec4<f32> or f32 at a time (`common/row_chunks.wgsl`), as in the forward
// kernel.

const WG: u32 = {{WG}}u;
const MODE: u32 = {{MODE}}u;

struct Params { rows: u32, n: u32, inv_temp: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<V>;
@group(0) @binding(2) var<storage, read> g: array<V>;
@group(0) @binding(3) var<storage, read_write> dx: array<V>;
{{LOGITS}}

// Entries that took part in the forward pass. Masked ones (y = 0; log-softmax: the most
// negative f32) get a zero gradient whatever g holds there, and loads with none are not
// read from g at all: causal attention never computes those gradients.
fn live_entries(yc: V) -> VB {
    return select(yc != V(0.0), yc > V(MOST_NEGATIVE), MODE == 1u);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = inv.wid.x + inv.wid.y * inv.nwg.x;
    if row >= p.rows {
        return;
    }
    let chunks = p.n / VEC;
    let base = row * chunks;
    var acc = 0.0;
    for (var c = inv.lid; c < chunks; c += WG) {
        let yc = y[base + c];
        let live = live_entries(yc);
        if any(live) {
            let gc = select(V(0.0), g[base + c], live);
            acc += chunk_sum(select(gc * yc, gc, MODE == 1u));
        }
    }
    let dot = workgroup_sum(inv, acc);
    for (var c = inv.lid; c < chunks; c += WG) {
        let yc = y[base + c];
        let live = live_entries(yc);
        var d = V(0.0);
        if any(live) {
            let gc = select(V(0.0), g[base + c], live);
            d = select(yc * ratio(base + c) * (gc - dot), gc - exp(yc) * dot, MODE == 1u) * p.inv_temp;
            d = select(V(0.0), d, live);
        }
        dx[base + c] = d;
    }
}
