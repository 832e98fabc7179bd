// Row reductions for short rows packed several to a workgroup: each row is a group of WG
// consecutive lanes of one subgroup (`lane_groups_subgroup.wgsl`; WG at most the adapter's
// smallest subgroup, the workgroup's WG * ROWS threads a multiple of its largest, both
// checked on the host), reduced by a butterfly of shuffles: no workgroup memory and no
// barriers, where one row a workgroup waits on two barriers a reduction. The interface is
// `reduce_one_row.wgsl`'s.

const GROUP: u32 = WG;

// (row slot in the workgroup, thread in the row).
fn row_place(inv: Invocation) -> vec2<u32> {
    return group_place(inv);
}

// Sum of `v` over the threads of this thread's row.
fn row_sum(inv: Invocation, v: f32) -> f32 {
    return group_sum(v);
}

// Merges the (max, sum of exp(z - max)) pairs of this thread's row. Each step combines
// the pair in the same order on both lanes (the lower lane's first): a fused multiply-add
// is not symmetric.
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
