// The row interface over a workgroup that is one row (appended to `reduce_memory.wgsl` or
// `reduce_subgroup.wgsl`; `reduce_rows_subgroup.wgsl` packs several rows a workgroup
// behind the same three functions): (row slot, thread in the row), and reductions over
// the row's threads.

fn row_place(inv: Invocation) -> vec2<u32> {
    return vec2<u32>(0u, inv.lid);
}

fn row_sum(inv: Invocation, v: f32) -> f32 {
    return workgroup_sum(inv, v);
}

fn row_max_sum(inv: Invocation, acc: vec2<f32>) -> vec2<f32> {
    return workgroup_max_sum(inv, acc);
}
