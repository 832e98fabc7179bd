// The router's lane exchange through subgroup shuffles: no workgroup memory, no
// barriers. A token's lanes are LANES consecutive invocations of one subgroup (the
// subgroup size is a multiple of LANES, checked on the host), placed by subgroup ids, not
// by local index, whose mapping to subgroups the APIs leave open. A butterfly over lane
// masks LANES/2 .. 1 leaves every lane with the same result: each step combines the same
// pair of values on both of its lanes.

struct Invocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
    @builtin(subgroup_size) subgroup_size: u32,
}

// (token slot in the workgroup, lane in the token).
fn token_place(inv: Invocation) -> vec2<u32> {
    return vec2<u32>(inv.subgroup * (inv.subgroup_size / LANES) + inv.subgroup_lane / LANES, inv.subgroup_lane % LANES);
}

fn token_max(inv: Invocation, v: f32) -> f32 {
    var m = v;
    for (var mask = LANES / 2u; mask > 0u; mask >>= 1u) {
        m = max(m, subgroupShuffleXor(m, mask));
    }
    return m;
}

fn token_sum(inv: Invocation, v: f32) -> f32 {
    var s = v;
    for (var mask = LANES / 2u; mask > 0u; mask >>= 1u) {
        s += subgroupShuffleXor(s, mask);
    }
    return s;
}

fn token_best(inv: Invocation, c: Candidate) -> Candidate {
    var best = c;
    for (var mask = LANES / 2u; mask > 0u; mask >>= 1u) {
        let other = Candidate(subgroupShuffleXor(best.v, mask), subgroupShuffleXor(best.e, mask));
        if better(other, best) {
            best = other;
        }
    }
    return best;
}
