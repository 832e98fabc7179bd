// Workgroup-wide reductions shared by the row kernels (softmax family, cross-entropy,
// norms, gradient norm). The including kernel defines WG, its workgroup size, and every
// thread of the workgroup must make the same calls.

var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<f32, WG>;

// Sum of every thread's `v`.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    red_sum[lid] = v;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if lid < k {
            red_sum[lid] += red_sum[lid + k];
        }
        workgroupBarrier();
    }
    let total = red_sum[0];
    workgroupBarrier();
    return total;
}

// Merges every thread's (max, sum) into the row's.
fn workgroup_max_sum(lid: u32, acc: vec2<f32>) -> vec2<f32> {
    red_max[lid] = acc.x;
    red_sum[lid] = acc.y;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if lid < k {
            let m2 = red_max[lid + k];
            let mm = max(red_max[lid], m2);
            red_sum[lid] = red_sum[lid] * exp(red_max[lid] - mm) + red_sum[lid + k] * exp(m2 - mm);
            red_max[lid] = mm;
        }
        workgroupBarrier();
    }
    let total = vec2<f32>(red_max[0], red_sum[0]);
    workgroupBarrier();
    return total;
}
