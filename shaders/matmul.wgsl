// The portable matmul: a BM x BN output tile per workgroup of (BN/TN) x (BM/TM) threads,
// each accumulating a TM x TN block in registers over the BK-deep slices that
// `stage_tiles` (matmul_tiles.wgsl) puts in workgroup memory. A thread owns rows
// ty + WY*i and columns tx + WX*j: its tile reads hit distinct banks and its stores
// are coalesced.

const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const WX: u32 = BN / TN;
const WY: u32 = BM / TM;

@compute @workgroup_size(WX, WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tid = lid.y * WX + lid.x;
    let rg = ranges(wid.z);
    let row0 = rg.m_begin + wid.y * BM;
    if row0 >= rg.m_end {
        return; // a tile past this group's rows (grouped dispatches cover the worst case)
    }
    let col0 = wid.x * BN;

    var acc: array<f32, TM * TN>;
    for (var k0 = rg.k_begin; k0 < rg.k_end; k0 += BK) {
        stage_tiles(rg, row0, col0, k0, tid);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var ar: array<f32, TM>;
            var br: array<f32, TN>;
            for (var i = 0u; i < TM; i++) {
                ar[i] = f32(a_tile[kk * AS + lid.y + WY * i]);
            }
            for (var j = 0u; j < TN; j++) {
                br[j] = f32(b_tile[kk * BS + lid.x + WX * j]);
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] = fma(ar[i], br[j], acc[i * TN + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let gm = row0 + lid.y + WY * i;
        for (var j = 0u; j < TN; j++) {
            let gn = col0 + lid.x + WX * j;
            if gm < rg.m_end && gn < p.n {
                c[rg.c_off + gm * p.n + gn] = acc[i * TN + j];
            }
        }
    }
}
