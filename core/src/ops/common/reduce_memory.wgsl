// Workgroup-wide reductions for the row kernels (softmax family, cross-entropy, norms,
// gradient norm), through a tree in workgroup memory: the portable path, log2(WG) + 2
// barriers a call (`reduce_subgroup.wgsl` is the fast one, with the same interface).
// The including kernel defines WG, its workgroup size, takes an `Invocation` as its
// entry point's argument, and every thread of the workgroup must make the same calls.

struct Invocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<f32, WG>;

// Sum of every thread's `v`.
fn workgroup_sum(inv: Invocation, v: f32) -> f32 {
    red_sum[inv.lid] = v;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if inv.lid < k {
            red_sum[inv.lid] += red_sum[inv.lid + k];
        }
        workgroupBarrier();
    }
    let total = red_sum[0];
    workgroupBarrier();
    return total;
}

// Merges every thread's (max, sum of exp(z - max)) into the workgroup's.
fn workgroup_max_sum(inv: Invocation, acc: vec2<f32>) -> vec2<f32> {
    red_max[inv.lid] = acc.x;
    red_sum[inv.lid] = acc.y;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if inv.lid < k {
            let m2 = red_max[inv.lid + k];
            let mm = max(red_max[inv.lid], m2);
            red_sum[inv.lid] = red_sum[inv.lid] * exp(red_max[inv.lid] - mm) + red_sum[inv.lid + k] * exp(m2 - mm);
            red_max[inv.lid] = mm;
        }
        workgroupBarrier();
    }
    let total = vec2<f32>(red_max[0], red_sum[0]);
    workgroupBarrier();
    return total;
}
