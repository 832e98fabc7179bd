// Row reductions for short rows packed several to a workgroup: each row is WG consecutive
// lanes of one subgroup (WG at most the adapter's smallest subgroup, the workgroup's
// WG * ROWS threads a multiple of its largest, both checked on the host), and a butterfly
// of shuffles over lane masks WG/2 .. 1 reduces it: no workgroup memory and no barriers,
// where one row a workgroup waits on two barriers a reduction. Each step combines the
// same pair of values in the same order on both of its lanes (the lower lane's first:
// a fused multiply-add is not symmetric), so every lane of a row ends with the same
// result. Rows are placed by subgroup ids, not by local index, whose mapping to subgroups
// the APIs leave open. The interface is `reduce_one_row.wgsl`'s.

struct Invocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
    @builtin(subgroup_size) subgroup_size: u32,
}

// (row slot in the workgroup, thread in the row).
fn row_place(inv: Invocation) -> vec2<u32> {
    return vec2<u32>(inv.subgroup * (inv.subgroup_size / WG) + inv.subgroup_lane / WG, inv.subgroup_lane % WG);
}

// Sum of `v` over the threads of this thread's row.
fn row_sum(inv: Invocation, v: f32) -> f32 {
    var s = v;
    for (var mask = WG / 2u; mask > 0u; mask >>= 1u) {
        s += subgroupShuffleXor(s, mask);
    }
    return s;
}

// Merges the (max, sum of exp(z - max)) pairs of this thread's row.
fn row_max_sum(inv: Invocation, acc: vec2<f32>) -> vec2<f32> {
    var r = acc;
    for (var mask = WG / 2u; mask > 0u; mask >>= 1u) {
        let other = vec2<f32>(subgroupShuffleXor(r.x, mask), subgroupShuffleXor(r.y, mask));
        let upper = (inv.subgroup_lane & mask) != 0u;
        let a = select(r, other, upper);
        let b = select(other, r, upper);
        let m = max(a.x, b.x);
        r = vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
    }
    return r;
}
