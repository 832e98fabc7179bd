// Batched C[b] = op(A[b]) * op(B[b]), op = identity or transpose (TRANS_A, TRANS_B).
// A 64x64 output tile per workgroup of 16x16 threads, each accumulating a 4x4 block in
// registers over 16-deep K slices staged in workgroup memory. Edge tiles load zeros, so
// any M, N, K work. A batch stride of 0 shares one operand across the batch.

const TRANS_A: bool = {{TRANS_A}};
const TRANS_B: bool = {{TRANS_B}};
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

struct Params { m: u32, n: u32, k: u32, batch_stride_a: u32, batch_stride_b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> a_tile: array<f32, 1024>; // [BK][BM]
var<workgroup> b_tile: array<f32, 1024>; // [BK][BN]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let a_off = wid.z * p.batch_stride_a;
    let b_off = wid.z * p.batch_stride_b;
    let c_off = wid.z * p.m * p.n;

    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var r = 0u; r < 4u; r++) {
            let e = tid + r * 256u;
            // Consecutive threads read consecutive addresses of the operand's layout.
            var mm: u32;
            var ka: u32;
            if TRANS_A { ka = e / BM; mm = e % BM; } else { mm = e / BK; ka = e % BK; }
            let gm = row0 + mm;
            let gka = k0 + ka;
            var va = 0.0;
            if gm < p.m && gka < p.k {
                if TRANS_A { va = a[a_off + gka * p.m + gm]; } else { va = a[a_off + gm * p.k + gka]; }
            }
            a_tile[ka * BM + mm] = va;

            var nn: u32;
            var kb: u32;
            if TRANS_B { nn = e / BK; kb = e % BK; } else { kb = e / BN; nn = e % BN; }
            let gn = col0 + nn;
            let gkb = k0 + kb;
            var vb = 0.0;
            if gn < p.n && gkb < p.k {
                if TRANS_B { vb = b[b_off + gn * p.k + gkb]; } else { vb = b[b_off + gkb * p.n + gn]; }
            }
            b_tile[kb * BN + nn] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var ar: array<f32, 4>;
            var br: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                ar[i] = a_tile[kk * BM + lid.y + 16u * i];
                br[i] = b_tile[kk * BN + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(ar[i], br[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let gm = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let gn = col0 + lid.x + 16u * j;
            if gm < p.m && gn < p.n {
                c[c_off + gm * p.n + gn] = acc[i * 4u + j];
            }
        }
    }
}
