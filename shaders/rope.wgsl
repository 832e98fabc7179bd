// Rotary position embedding, one thread per rotated pair (the two halves of a head vector
// form the pairs). Head vector (b, h, t) starts at base + b * batch + h * head + t * position
// floats, with each tensor's own (base, batch, head, position), so one kernel rotates a
// contiguous [..., T, head_dim] tensor, moves one part of a fused QKV projection into
// heads, or packs the heads' gradients back into it. Row t is position offset + t; cos and
// sin come from a table computed once on the host in f64. SIGN = -1 rotates back (the
// backward pass); SIGN = 0 copies (the values, which are not rotated).

const SIGN: f32 = {{SIGN}};

struct Params { pairs: u32, t: u32, heads: u32, head_dim: u32, offset: u32, _pad0: u32, _pad1: u32, _pad2: u32, src: vec4<u32>, dst: vec4<u32> }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cos_table: array<f32>; // [positions, head_dim / 2]
@group(0) @binding(3) var<storage, read> sin_table: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Offset of pair j of head vector (b, h, t) in a tensor laid out as `at`.
fn pair_offset(at: vec4<u32>, b: u32, h: u32, t: u32, j: u32) -> u32 {
    return at.x + b * at.y + h * at.z + t * at.w + j;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.pairs {
        return;
    }
    let half = p.head_dim / 2u;
    let j = i % half;
    let vector = i / half;
    let t = vector % p.t;
    let h = (vector / p.t) % p.heads;
    let b = vector / (p.t * p.heads);
    let read_at = pair_offset(p.src, b, h, t, j);
    let write_at = pair_offset(p.dst, b, h, t, j);
    let rotate = SIGN != 0.0;
    let k = (p.offset + t) * half + j;
    let c = select(1.0, cos_table[k], rotate);
    let s = SIGN * sin_table[k];
    let u = x[read_at];
    let v = x[read_at + half];
    y[write_at] = u * c - v * s;
    y[write_at + half] = u * s + v * c;
}
