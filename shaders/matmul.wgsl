// C = op(A) * op(B), op = identity or transpose (TRANS_A, TRANS_B), for one matrix per
// workgroup z. GROUPING defines `ranges(z)`: which rows and which depth (K) that matrix
// covers, and where its operands start:
//   plain batches: all rows and depth, per-batch offsets (stride 0 shares an operand);
//   rows grouped by expert (MoE forward, input gradient): rows offsets[z]..offsets[z+1]
//     of A and C, expert z's own B;
//   depth grouped by expert (MoE weight gradient): K runs over expert z's rows only and C
//     is expert z's own matrix.
// A 64x64 output tile per workgroup of 16x16 threads, each accumulating a 4x4 block in
// registers over 16-deep K slices staged in workgroup memory. Edge tiles load zeros, so
// any M, N, K work.

const TRANS_A: bool = {{TRANS_A}};
const TRANS_B: bool = {{TRANS_B}};
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

struct Params { m: u32, n: u32, k: u32, batch_stride_a: u32, batch_stride_b: u32 }

struct Ranges { m_begin: u32, m_end: u32, k_begin: u32, k_end: u32, a_off: u32, b_off: u32, c_off: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

{{GROUPING}}

var<workgroup> a_tile: array<f32, 1024>; // [BK][BM]
var<workgroup> b_tile: array<f32, 1024>; // [BK][BN]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let rg = ranges(wid.z);
    let row0 = rg.m_begin + wid.y * BM;
    if row0 >= rg.m_end {
        return; // a tile past this group's rows (grouped dispatches cover the worst case)
    }
    let col0 = wid.x * BN;
    let m_end = rg.m_end;
    let k_end = rg.k_end;

    var acc: array<f32, 16>;
    for (var k0 = rg.k_begin; k0 < k_end; k0 += BK) {
        for (var r = 0u; r < 4u; r++) {
            let e = tid + r * 256u;
            // Consecutive threads read consecutive addresses of the operand's layout.
            var mm: u32;
            var ka: u32;
            if TRANS_A { ka = e / BM; mm = e % BM; } else { mm = e / BK; ka = e % BK; }
            let gm = row0 + mm;
            let gka = k0 + ka;
            var va = 0.0;
            if gm < m_end && gka < k_end {
                if TRANS_A { va = a[rg.a_off + gka * p.m + gm]; } else { va = a[rg.a_off + gm * p.k + gka]; }
            }
            a_tile[ka * BM + mm] = va;

            var nn: u32;
            var kb: u32;
            if TRANS_B { nn = e / BK; kb = e % BK; } else { kb = e / BN; nn = e % BN; }
            let gn = col0 + nn;
            let gkb = k0 + kb;
            var vb = 0.0;
            if gn < p.n && gkb < k_end {
                if TRANS_B { vb = b[rg.b_off + gn * p.k + gkb]; } else { vb = b[rg.b_off + gkb * p.n + gn]; }
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
            if gm < m_end && gn < p.n {
                c[rg.c_off + gm * p.n + gn] = acc[i * 4u + j];
            }
        }
    }
}
