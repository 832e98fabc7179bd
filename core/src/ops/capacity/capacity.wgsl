// Expert capacity: which routed slots an expert with room for CAPACITY slots keeps. One
// workgroup per expert scans its block of the expert-ordered slots (offsets[e] ..
// offsets[e + 1], token order within the block) and keeps the CAPACITY with the highest
// router score, ties to the earlier token, so the result is that of a stable sort by
// descending score. Scores are at least 0, so their bits order as the floats do:
//   1. a bisection over the bits finds v, the CAPACITY-th highest score (32 rounds of a
//      workgroup count, no sort);
//   2. every slot above v is kept, and of those equal to v the first ones in block order
//      until CAPACITY are kept (each thread takes a contiguous run of the block; a scan of
//      the runs' tie counts says where each run's ties start).
// An expert with no more than CAPACITY slots keeps them all (v is then 0 and every tie at
// 0 fits). keep[slot] is 1 or 0, in slot order.

const WG: u32 = 256u;

struct Params { experts: u32, k: u32, capacity: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read> sorted_slots: array<u32>;
@group(0) @binding(5) var<storage, read_write> keep: array<f32>;

var<workgroup> partial: array<u32, WG>;

// The score bits of the slot at expert-order position `pos`.
fn key(pos: u32) -> u32 {
    let s = sorted_slots[pos];
    return bitcast<u32>(probs[(s / p.k) * p.experts + indices[s]]);
}

// How many slots of the block have a key of at least `threshold`; every thread gets it.
fn count_at_least(lid: u32, begin: u32, end: u32, threshold: u32) -> u32 {
    var c = 0u;
    for (var pos = begin + lid; pos < end; pos += WG) {
        c += u32(key(pos) >= threshold);
    }
    partial[lid] = c;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if lid < half {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }
    let total = workgroupUniformLoad(&partial[0]);
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = wid.x + wid.y * nwg.x;
    if e >= p.experts {
        return;
    }
    let begin = offsets[e];
    let end = offsets[e + 1u];
    // Invariant: at least CAPACITY keys are >= lo (or lo = 0), fewer than CAPACITY >= hi.
    var lo = 0u;
    var hi = 0x7f800001u;
    for (var round = 0u; round < 32u; round++) {
        let mid = lo + (hi - lo) / 2u;
        let enough = count_at_least(lid, begin, end, mid) >= p.capacity;
        let open = hi - lo > 1u;
        lo = select(lo, mid, open && enough);
        hi = select(hi, mid, open && !enough);
    }
    let above = count_at_least(lid, begin, end, lo + 1u);
    let ties_kept = p.capacity - min(above, p.capacity);

    let run = (end - begin + WG - 1u) / WG;
    let first = begin + lid * run;
    let last = min(first + run, end);
    var ties = 0u;
    for (var pos = first; pos < last; pos++) {
        ties += u32(key(pos) == lo);
    }
    partial[lid] = ties;
    workgroupBarrier();
    for (var d = 1u; d < WG; d <<= 1u) {
        let add = select(0u, partial[lid - d], lid >= d);
        workgroupBarrier();
        partial[lid] += add;
        workgroupBarrier();
    }
    var before = partial[lid] - ties;
    for (var pos = first; pos < last; pos++) {
        let kk = key(pos);
        var kept = kk > lo;
        if kk == lo {
            kept = before < ties_kept;
            before += 1u;
        }
        keep[sorted_slots[pos]] = select(0.0, 1.0, kept);
    }
}
