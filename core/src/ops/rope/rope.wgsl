// Rotary position embedding, one thread per rotated pair (the two halves of a head vector
// form the pairs). Head vector (b, h, t) starts at base + b * batch + h * head + t * position
// floats, with each tensor's own (base, batch, head, position), so one kernel rotates a
// contiguous [..., T, head_dim] tensor, moves one part of a fused QKV projection into
// heads, or packs the heads' gradients back into it. Row t is position offset + t; cos and
// sin come from a table computed once on the host in f64. SIGN = -1 rotates back (the
// backward pass); SIGN = 0 copies and reads no table (the values, which are not rotated,
// and the heads merged back side by side).

const SIGN: f32 = {{SIGN}};
const ROTATE: bool = SIGN != 0.0;

struct Params { threads: u32, t: u32, heads: u32, head_dim: u32, offset: u32, _pad0: u32, _pad1: u32, _pad2: u32, src: vec4<u32>, dst: vec4<u32> }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cos_table: array<f32>; // [positions, head_dim / 2]
@group(0) @binding(3) var<storage, read> sin_table: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Offset of value j of head vector (b, h, t) in a tensor laid out as `at`.
fn value_offset(at: vec4<u32>, b: u32, h: u32, t: u32, j: u32) -> u32 {
    return at.x + b * at.y + h * at.z + t * at.w + j;
}

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= p.threads {
        return;
    }
    // A thread moves values j and j + half of a head vector; a copy of odd-sized heads
    // moves one value.
    let half = p.head_dim / 2u;
    let paired = ROTATE || p.head_dim % 2u == 0u;
    let lanes = select(p.head_dim, half, paired);
    let j = i % lanes;
    let vector = i / lanes;
    let t = vector % p.t;
    let h = (vector / p.t) % p.heads;
    let b = vector / (p.t * p.heads);
    let read_at = value_offset(p.src, b, h, t, j);
    let write_at = value_offset(p.dst, b, h, t, j);
    if !ROTATE {
        y[write_at] = x[read_at];
        if paired {
            y[write_at + half] = x[read_at + half];
        }
        return;
    }
    let k = (p.offset + t) * half + j;
    let c = cos_table[k];
    let s = SIGN * sin_table[k];
    let u = x[read_at];
    let v = x[read_at + half];
    y[write_at] = u * c - v * s;
    y[write_at + half] = u * s + v * c;
}
