// Rotary position embedding on [..., T, head_dim] (the two halves of each head vector form
// the rotated pairs). Row r is position offset + r % T; cos and sin come from a table
// computed once on the host in f64. SIGN = -1 rotates back: the backward pass.

const SIGN: f32 = {{SIGN}};

struct Params { total: u32, t: u32, head_dim: u32, offset: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cos_table: array<f32>; // [positions, head_dim / 2]
@group(0) @binding(3) var<storage, read> sin_table: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u; // one thread per rotated pair
    if i >= p.total {
        return;
    }
    let half = p.head_dim / 2u;
    let row = i / half;
    let j = i % half;
    let pos = p.offset + row % p.t;
    let c = cos_table[pos * half + j];
    let s = SIGN * sin_table[pos * half + j];
    let a = x[row * p.head_dim + j];
    let b = x[row * p.head_dim + j + half];
    y[row * p.head_dim + j] = a * c - b * s;
    y[row * p.head_dim + j + half] = a * s + b * c;
}
