// Counts the elements of one f32 tensor that are NaN or infinite, adding into count[0]
// (which the launches for several tensors share). The test is on the bits, an exponent
// of all ones, which holds whatever the driver's float semantics: a comparison with NaN
// may be optimised away where NaN is not preserved, a bit pattern cannot. Only a thread
// that finds one touches the atomic, so a healthy tensor costs one read per element.

struct Params { n: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> count: array<atomic<u32>>;

const EXPONENT: u32 = 0x7f800000u;

@compute @workgroup_size(ELEMENTWISE_WG)
fn count_non_finite(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < p.n && (src[i] & EXPONENT) == EXPONENT {
        atomicAdd(&count[0], 1u);
    }
}
