// Token permutation by expert, deterministic and without atomics. The k expert choices of
// each token are "slots" (slot s = token * k + j).
//   histogram: one workgroup per expert counts the slots routed to it;
//   offsets:   one workgroup turns the counts into exclusive prefix sums (E + 1 values);
//   scatter:   one workgroup per expert walks the slots in order, ranking its own with a
//              workgroup scan, so slots keep their order within an expert (a stable sort):
//              sorted_slots[pos] = s and slot_positions[s] = pos.

const WG: u32 = 256u;

struct Params { slots: u32, experts: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> expert_of_slot: array<u32>;
@group(0) @binding(2) var<storage, read_write> counts: array<u32>;
@group(0) @binding(3) var<storage, read_write> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> sorted_slots: array<u32>;
@group(0) @binding(5) var<storage, read_write> slot_positions: array<u32>;

var<workgroup> scan: array<u32, WG>;

// Inclusive prefix sum of `scan` (Hillis-Steele); every thread must call it.
fn inclusive_scan(lid: u32) {
    for (var d = 1u; d < WG; d <<= 1u) {
        let add = select(0u, scan[lid - d], lid >= d);
        workgroupBarrier();
        scan[lid] += add;
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn histogram(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = wid.x + wid.y * nwg.x;
    if e >= p.experts {
        return;
    }
    var c = 0u;
    for (var s = lid; s < p.slots; s += WG) {
        c += u32(expert_of_slot[s] == e);
    }
    scan[lid] = c;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if lid < k {
            scan[lid] += scan[lid + k];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        counts[e] = scan[0];
    }
}

@compute @workgroup_size(256)
fn exclusive_offsets(@builtin(local_invocation_index) lid: u32) {
    scan[lid] = select(0u, counts[min(lid, p.experts - 1u)], lid < p.experts);
    workgroupBarrier();
    inclusive_scan(lid);
    if lid < p.experts {
        offsets[lid + 1u] = scan[lid];
    }
    if lid == 0u {
        offsets[0] = 0u;
    }
}

@compute @workgroup_size(256)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = wid.x + wid.y * nwg.x;
    if e >= p.experts {
        return;
    }
    var running = offsets[e];
    for (var chunk = 0u; chunk < p.slots; chunk += WG) {
        let s = chunk + lid;
        let hit = u32(s < p.slots && expert_of_slot[min(s, p.slots - 1u)] == e);
        scan[lid] = hit;
        workgroupBarrier();
        inclusive_scan(lid);
        if hit == 1u {
            let pos = running + scan[lid] - 1u;
            sorted_slots[pos] = s;
            slot_positions[s] = pos;
        }
        let chunk_total = scan[WG - 1u];
        workgroupBarrier();
        running += chunk_total;
    }
}
