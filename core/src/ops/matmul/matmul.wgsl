// The portable matmul: a BM x BN output tile per workgroup of (BN/TN) x (BM/TM) threads,
// each accumulating a TM x TN block in registers over the BK-deep slices that
// `load_slice` and `store_slice` (matmul_tiles.wgsl) put in workgroup memory, the next
// slice's loads in flight while the current one is multiplied. The tiles are read as vec4:
// a thread owns TM/4 groups of 4 rows (group g: rows g * BM/(TM/4) + 4 ty ..+4) and TN/4
// groups of 4 columns likewise, so each step of the inner loop is (TM + TN)/4 vector
// reads, at consecutive addresses across consecutive threads (no bank conflicts), for
// TM * TN multiply-adds.

const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const WX: u32 = BN / TN;
const WY: u32 = BM / TM;
const GM: u32 = TM / 4u; // row groups per thread
const GN: u32 = TN / 4u; // column groups per thread

var<workgroup> a_tile: array<vec4<{{TILE_T}}>, BK * AS / 4u>;
var<workgroup> b_tile: array<vec4<{{TILE_T}}>, BK * BS / 4u>;

fn put_a(i: u32, x: {{TILE_T}}) {
    a_tile[i / 4u][i % 4u] = x;
}

fn put_b(i: u32, x: {{TILE_T}}) {
    b_tile[i / 4u][i % 4u] = x;
}

@compute @workgroup_size(WX, WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tid = lid.y * WX + lid.x;
    let rg = ranges(wid);
    let row0 = rg.m_begin + rg.tile * BM;
    if row0 >= rg.m_end {
        return; // a tile past this group's rows (grouped dispatches cover the worst case)
    }
    let col0 = wid.x * BN;

    // acc[(4 g + r) * GN + h][q]: row r of the thread's row group g, column q of its column
    // group h.
    var acc: array<vec4<f32>, TM * GN>;
    var slice = load_slice(rg, row0, col0, rg.k_begin, tid);
    for (var k0 = rg.k_begin; k0 < rg.k_end; k0 += BK) {
        store_slice(slice, tid);
        workgroupBarrier();
        slice = load_slice(rg, row0, col0, k0 + BK, tid);
        for (var kk = 0u; kk < BK; kk++) {
            var ar: array<vec4<f32>, GM>;
            var br: array<vec4<f32>, GN>;
            for (var g = 0u; g < GM; g++) {
                ar[g] = vec4<f32>(a_tile[(kk * AS + g * (BM / GM)) / 4u + lid.y]);
            }
            for (var h = 0u; h < GN; h++) {
                br[h] = vec4<f32>(b_tile[(kk * BS + h * (BN / GN)) / 4u + lid.x]);
            }
            for (var g = 0u; g < GM; g++) {
                for (var r = 0u; r < 4u; r++) {
                    for (var h = 0u; h < GN; h++) {
                        let i = (4u * g + r) * GN + h;
                        acc[i] = fma(vec4(ar[g][r]), br[h], acc[i]);
                    }
                }
            }
        }
        workgroupBarrier();
    }
    for (var g = 0u; g < GM; g++) {
        for (var r = 0u; r < 4u; r++) {
            let gm = row0 + g * (BM / GM) + 4u * lid.y + r;
            for (var h = 0u; h < GN; h++) {
                for (var q = 0u; q < 4u; q++) {
                    let gn = col0 + h * (BN / GN) + 4u * lid.x + q;
                    if gm < rg.m_end && gn < p.n {
                        c[rg.c_off + gm * p.n + gn] = acc[(4u * g + r) * GN + h][q];
                    }
                }
            }
        }
    }
}
