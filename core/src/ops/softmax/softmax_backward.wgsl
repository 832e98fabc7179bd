// Backward of the softmax family, laid out as the forward kernel (WG threads a row, ROWS
// rows a workgroup), from the saved output y:
//   softmax, StableMax: dx = y * r * (g - sum(g * y)) / temperature, where r = 1 for
//     softmax and 1 / (1 + |z|) for StableMax (its s'(z) / s(z)), z the scaled logit;
//   log-softmax: dx = (g - exp(y) * sum(g)) / temperature;
// 0 where masked.
// Loads are V = vec4<f32> or f32 at a time (`common/row_chunks.wgsl`), and rows of at most
// KEPT loads a thread are read once, their y and g kept in variables of their own between
// the passes, as in the forward kernel.

const WG: u32 = {{WG}}u;
const ROWS: u32 = {{ROWS}}u;
const MODE: u32 = {{MODE}}u;
const KEPT: u32 = {{KEPT}}u;

struct Params { rows: u32, n: u32, inv_temp: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<V>;
@group(0) @binding(2) var<storage, read> g: array<V>;
@group(0) @binding(3) var<storage, read_write> dx: array<V>;
{{LOGITS}}

// Entries that took part in the forward pass. Masked ones (y = 0; log-softmax: the most
// negative f32) get a zero gradient whatever g holds there.
fn live_entries(yc: V) -> VB {
    return select(yc != V(0.0), yc > V(MOST_NEGATIVE), MODE == 1u);
}

// g at load c where it is live, else 0; loads with no live entry are not read from g at
// all: causal attention never computes those gradients.
fn live_grad(c: u32, yc: V) -> V {
    let live = live_entries(yc);
    if !any(live) {
        return V(0.0);
    }
    return select(V(0.0), g[c], live);
}

// This load's share of the row's sum: sum(g * y), or sum(g) for log-softmax.
fn dot_share(yc: V, gc: V) -> f32 {
    return chunk_sum(select(gc * yc, gc, MODE == 1u));
}

fn grad(c: u32, yc: V, gc: V, dot: f32) -> V {
    var d = V(0.0);
    let live = live_entries(yc);
    if any(live) {
        d = select(yc * ratio(c) * (gc - dot), gc - exp(yc) * dot, MODE == 1u) * p.inv_temp;
    }
    return select(V(0.0), d, live);
}

// A load a thread keeps between the passes.
struct Kept { y: V, g: V }

// Load c of a kept row; past the row's end it reads as masked.
fn kept_load(base: u32, chunks: u32, c: u32) -> Kept {
    let masked = V(select(0.0, MOST_NEGATIVE, MODE == 1u));
    let yc = select(masked, y[base + min(c, chunks - 1u)], c < chunks);
    return Kept(yc, live_grad(base + c, yc));
}

fn write_kept(base: u32, chunks: u32, c: u32, k: Kept, dot: f32) {
    if c < chunks {
        dx[base + c] = grad(base + c, k.y, k.g, dot);
    }
}

@compute @workgroup_size(WG * ROWS)
fn main(inv: Invocation) {
    let at = row_at(inv, p.rows);
    let row = at.row;
    let lane = at.lane;
    let chunks = p.n / VEC;
    let base = row * chunks;
    var acc = 0.0;
    {{EACH_KEPT let k# = kept_load(base, chunks, lane + #u * WG);}}
    {{EACH_KEPT acc += dot_share(k#.y, k#.g);}}
    if KEPT == 0u {
        for (var c = lane; c < chunks; c += WG) {
            let yc = y[base + c];
            acc += dot_share(yc, live_grad(base + c, yc));
        }
    }
    let dot = row_sum(inv, acc);
    if !at.live {
        return;
    }
    {{EACH_KEPT write_kept(base, chunks, lane + #u * WG, k#, dot);}}
    if KEPT == 0u {
        for (var c = lane; c < chunks; c += WG) {
            let yc = y[base + c];
            dx[base + c] = grad(base + c, yc, live_grad(base + c, yc), dot);
        }
    }
}
