// The router's lane exchange through workgroup memory: portable, two barriers per
// exchange. A token's lanes are LANES consecutive invocations; each reads the others'
// partials in a fixed order, so all lanes agree bit for bit.

struct Invocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

var<workgroup> part_v: array<f32, WG>;
var<workgroup> part_e: array<u32, WG>;

// (token slot in the workgroup, lane in the token).
fn token_place(inv: Invocation) -> vec2<u32> {
    return vec2<u32>(inv.lid / LANES, inv.lid % LANES);
}

fn token_first(inv: Invocation) -> u32 {
    return inv.lid - inv.lid % LANES;
}

// Every lane's `v`, in lane order. Every thread of the workgroup must call it.
fn token_values(inv: Invocation, v: f32) -> array<f32, LANES> {
    part_v[inv.lid] = v;
    workgroupBarrier();
    let first = token_first(inv);
    var all: array<f32, LANES>;
    for (var l = 0u; l < LANES; l++) {
        all[l] = part_v[first + l];
    }
    workgroupBarrier();
    return all;
}

fn token_max(inv: Invocation, v: f32) -> f32 {
    let all = token_values(inv, v);
    var m = all[0];
    for (var l = 1u; l < LANES; l++) {
        m = max(m, all[l]);
    }
    return m;
}

fn token_sum(inv: Invocation, v: f32) -> f32 {
    let all = token_values(inv, v);
    var s = all[0];
    for (var l = 1u; l < LANES; l++) {
        s += all[l];
    }
    return s;
}

fn token_best(inv: Invocation, c: Candidate) -> Candidate {
    part_v[inv.lid] = c.v;
    part_e[inv.lid] = c.e;
    workgroupBarrier();
    let first = token_first(inv);
    var best = Candidate(0.0, NONE);
    for (var l = 0u; l < LANES; l++) {
        let other = Candidate(part_v[first + l], part_e[first + l]);
        if better(other, best) {
            best = other;
        }
    }
    workgroupBarrier();
    return best;
}
