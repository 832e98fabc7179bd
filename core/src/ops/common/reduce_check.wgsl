// The one-time check of a device's workgroup reductions (`ops/common/rows.rs`).
// Like a row kernel, a row's WG threads (ROWS rows a workgroup) walk a row of known values
// with uneven trip counts (the row is not a multiple of WG), then reduce; every thread
// writes what it got, so the host can tell a wrong total, or a total some threads never
// see, from a right one.

const WG: u32 = {{WG}}u;
const ROWS: u32 = {{ROWS}}u;

struct Params { len: u32, salt: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // [workgroups * ROWS * WG, 3]

// Small integers: every order of summation gives the exact total.
fn value(row: u32, i: u32) -> f32 {
    return f32((i * 7u + row * 5u + p.salt) % 23u) - 11.0;
}

@compute @workgroup_size(WG * ROWS)
fn main(inv: Invocation) {
    let place = row_place(inv);
    let row = inv.wid.x * ROWS + place.x;
    var sum = 0.0;
    var acc = vec2<f32>(-3.4028235e38, 0.0);
    for (var i = place.y; i < p.len; i += WG) {
        let v = value(row, i);
        sum += v;
        let m = max(acc.x, 0.25 * v);
        acc = vec2<f32>(m, acc.y * exp(acc.x - m) + exp(0.25 * v - m));
    }
    let total = row_sum(inv, sum);
    let max_sum = row_max_sum(inv, acc);
    let at = (row * WG + place.y) * 3u;
    out[at] = total;
    out[at + 1u] = max_sum.x;
    out[at + 2u] = max_sum.y;
}
