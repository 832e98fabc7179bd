// The router's lane exchange through subgroup shuffles (`common/lane_groups_subgroup.wgsl`,
// a token's LANES lanes one group): no workgroup memory, no barriers.

const GROUP: u32 = LANES;

// (token slot in the workgroup, lane in the token).
fn token_place(inv: Invocation) -> vec2<u32> {
    return group_place(inv);
}

fn token_max(inv: Invocation, v: f32) -> f32 {
    return group_max(v);
}

fn token_sum(inv: Invocation, v: f32) -> f32 {
    return group_sum(v);
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
