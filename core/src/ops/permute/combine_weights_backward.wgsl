// The combine's gradient with respect to its gate weights: for each slot s,
// dw[s] = <g[token of s, :], rows[slot_positions[s], :]>. Each slot's dot product is a row
// kernel's row (`ops/common/rows.rs`: WG threads a slot, ROWS slots a workgroup, short
// rows packed one subgroup each), so consecutive lanes read consecutive loads of the same
// two rows and the partial sums meet in a reduction; a thread a slot would walk its two
// rows alone, each lane of a subgroup a different pair of them. Rows are read V values at a
// time (`common/row_chunks.wgsl`); d counts loads.

const WG: u32 = {{WG}}u;
const ROWS: u32 = {{ROWS}}u;

struct Params { slots: u32, d: u32, k: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<V>;
@group(0) @binding(2) var<storage, read> slot_positions: array<u32>;
@group(0) @binding(3) var<storage, read> rows: array<V>;
@group(0) @binding(4) var<storage, read_write> dw: array<f32>;

@compute @workgroup_size(WG * ROWS)
fn main(inv: Invocation) {
    let at = row_at(inv, p.slots);
    let g_row = (at.row / p.k) * p.d;
    let r_row = slot_positions[at.row] * p.d;
    var acc = 0.0;
    for (var c = at.lane; c < p.d; c += WG) {
        acc += chunk_sum(g[g_row + c] * rows[r_row + c]);
    }
    let dot = row_sum(inv, acc);
    if at.live && at.lane == 0u {
        dw[at.row] = dot;
    }
}
