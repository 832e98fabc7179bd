// Workgroup-wide reductions through subgroup operations, for adapters that have them:
// each subgroup reduces its threads' values in registers, one lane of each leaves the
// subgroup's result in workgroup memory, and after one barrier every subgroup reduces
// those partials the same way, so every thread ends with the same total. Two barriers a
// call, whatever WG (the tree in `reduce_memory.wgsl` takes log2(WG) + 2). Any subgroup
// size works with the row kernels' power-of-two WG, a single partial subgroup included
// (WG below the subgroup size); the sums' order is fixed for a given adapter.

struct Invocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
    @builtin(subgroup_size) subgroup_size: u32,
}

var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<f32, WG>;

// Sum of every thread's `v`.
fn workgroup_sum(inv: Invocation, v: f32) -> f32 {
    let mine = subgroupAdd(v);
    if inv.subgroup_lane == 0u {
        red_sum[inv.subgroup] = mine;
    }
    workgroupBarrier();
    var partial = 0.0;
    for (var i = inv.subgroup_lane; i < inv.subgroups; i += inv.subgroup_size) {
        partial += red_sum[i];
    }
    let total = subgroupAdd(partial);
    workgroupBarrier();
    return total;
}

// (max, sum of exp(z - max)) over a subgroup, from each thread's own pair.
fn subgroup_max_sum(acc: vec2<f32>) -> vec2<f32> {
    let m = subgroupMax(acc.x);
    return vec2<f32>(m, subgroupAdd(acc.y * exp(acc.x - m)));
}

// Merges every thread's (max, sum of exp(z - max)) into the workgroup's.
fn workgroup_max_sum(inv: Invocation, acc: vec2<f32>) -> vec2<f32> {
    let mine = subgroup_max_sum(acc);
    if inv.subgroup_lane == 0u {
        red_max[inv.subgroup] = mine.x;
        red_sum[inv.subgroup] = mine.y;
    }
    workgroupBarrier();
    var partial = vec2<f32>(-3.4028235e38, 0.0);
    for (var i = inv.subgroup_lane; i < inv.subgroups; i += inv.subgroup_size) {
        let m = max(partial.x, red_max[i]);
        partial = vec2<f32>(m, partial.y * exp(partial.x - m) + red_sum[i] * exp(red_max[i] - m));
    }
    let total = subgroup_max_sum(partial);
    workgroupBarrier();
    return total;
}
