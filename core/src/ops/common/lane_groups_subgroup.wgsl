// Items (a row, a token) worked on by GROUP consecutive lanes of one subgroup each, the
// subgroup size a multiple of GROUP (checked on the host). Items are placed by subgroup
// ids, not by local index, whose mapping to subgroups the APIs leave open. A butterfly of
// shuffles over lane masks GROUP/2 .. 1 reduces a group without workgroup memory or
// barriers; each step combines the same pair of values on both of its lanes, so every
// lane of a group ends with the same result.

struct Invocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
    @builtin(subgroup_size) subgroup_size: u32,
}

// (item slot in the workgroup, lane in the item's group).
fn group_place(inv: Invocation) -> vec2<u32> {
    return vec2<u32>(inv.subgroup * (inv.subgroup_size / GROUP) + inv.subgroup_lane / GROUP, inv.subgroup_lane % GROUP);
}

// Sum of `v` over this lane's group.
fn group_sum(v: f32) -> f32 {
    var s = v;
    for (var mask = GROUP / 2u; mask > 0u; mask >>= 1u) {
        s += subgroupShuffleXor(s, mask);
    }
    return s;
}

// Maximum of `v` over this lane's group.
fn group_max(v: f32) -> f32 {
    var m = v;
    for (var mask = GROUP / 2u; mask > 0u; mask >>= 1u) {
        m = max(m, subgroupShuffleXor(m, mask));
    }
    return m;
}
