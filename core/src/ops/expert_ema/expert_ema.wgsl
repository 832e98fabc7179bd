// The Default MoE's update of each expert's default vector in two kernels, so that
// data-parallel ranks can add up their sums in between:
// `sums`: per (expert, column) the sum of expert e's outputs this step, where expert e's
//   rows are the contiguous block offsets[e]..offsets[e+1] of the expert-ordered outputs;
//   column d holds the number of rows. Output [E, d + 1]. When WEIGHTED, each row counts
//   with its slot's weight (row r is slot sorted_slots[r]) and column d holds the weights'
//   sum, so the update gives the weighted mean.
// `update`: D_e <- beta * D_e + (1 - beta) * sum_e / count_e. An expert that received no
//   tokens keeps its vector.

const WEIGHTED: bool = {{WEIGHTED}};

struct Params { experts: u32, d: u32, beta: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> defaults: array<f32>;
@group(0) @binding(2) var<storage, read> rows: array<f32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> sums_out: array<f32>;
@group(0) @binding(5) var<storage, read> sums_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> updated: array<f32>;

{{ROW_WEIGHTS}}

@compute @workgroup_size(ELEMENTWISE_WG)
fn sums(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let width = p.d + 1u;
    if i >= p.experts * width {
        return;
    }
    let e = i / width;
    let c = i % width;
    let begin = offsets[e];
    let end = offsets[e + 1u];
    if c == p.d {
        if WEIGHTED {
            var mass = 0.0;
            for (var r = begin; r < end; r++) {
                mass += row_weight(r);
            }
            sums_out[i] = mass;
        } else {
            sums_out[i] = f32(end - begin);
        }
        return;
    }
    var acc = 0.0;
    for (var r = begin; r < end; r++) {
        acc += row_weight(r) * rows[r * p.d + c];
    }
    sums_out[i] = acc;
}

@compute @workgroup_size(ELEMENTWISE_WG)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.experts * p.d {
        return;
    }
    let e = i / p.d;
    let c = i % p.d;
    let width = p.d + 1u;
    let count = sums_in[e * width + p.d];
    if count == 0.0 {
        updated[i] = defaults[i];
        return;
    }
    updated[i] = p.beta * defaults[i] + (1.0 - p.beta) * sums_in[e * width + c] / count;
}
