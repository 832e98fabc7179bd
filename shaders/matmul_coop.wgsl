// The tensor-core matmul (wgpu's cooperative matrices): f16 tiles, f32 accumulators.
// A workgroup is eight 32-lane subgroups computing a 128 x 128 output tile; subgroup s
// owns rows 32 * (s / 2) .. +32 and columns 64 * (s % 2) .. +64 of it, as 2 x 4
// accumulator matrices of 16 x 16. `stage_tiles` (matmul_tiles.wgsl) puts each 32-deep
// slice of the operands in workgroup memory, rounded to f16 and zero-filled at the edges,
// so every cooperative load is in bounds. A tile wholly inside C, with rows 32-byte
// aligned, is stored straight to memory; edge tiles go through a 16 x 16 staging area per
// subgroup and are written element by element.

const QM: u32 = 2u; // 16 x 16 matrices per subgroup, down
const QN: u32 = 4u; // and across
const SUBGROUP: u32 = 32u;

var<workgroup> a_tile: array<f16, BK * AS>;
var<workgroup> b_tile: array<f16, BK * BS>;
var<workgroup> staging: array<f32, (THREADS / SUBGROUP) * 256u>;

fn put_a(i: u32, x: f16) {
    a_tile[i] = x;
}

fn put_b(i: u32, x: f16) {
    b_tile[i] = x;
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32, @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let rg = ranges(wid);
    let row0 = rg.m_begin + rg.tile * BM;
    // A tile past its group's rows (grouped dispatches cover the worst case) skips the
    // depth loop rather than returning: cooperative operations need uniform control flow.
    let k_stop = select(rg.k_begin, rg.k_end, row0 < rg.m_end);
    let col0 = wid.x * BN;
    let sm0 = (sg / 2u) * (16u * QM);
    let sn0 = (sg % 2u) * (16u * QN);

    var acc: array<coop_mat16x16<f32, C>, QM * QN>;
    for (var q = 0u; q < QM * QN; q++) {
        acc[q] = coop_mat16x16<f32, C>();
    }
    for (var k0 = rg.k_begin; k0 < k_stop; k0 += BK) {
        stage_tiles(rg, row0, col0, k0, tid);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 16u) {
            var y: array<coop_mat16x16<f16, B>, QN>;
            for (var j = 0u; j < QN; j++) {
                let ib = kk * BS + sn0 + 16u * j;
                let sb = BS;
                y[j] = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[ib], sb); // row-major: (k, n) at k * BS + n
            }
            for (var i = 0u; i < QM; i++) {
                let ia = kk * AS + sm0 + 16u * i;
                let sa = AS;
                let x = coopLoad<coop_mat16x16<f16, A>>(&a_tile[ia], sa); // column-major: (m, k) at k * AS + m
                for (var j = 0u; j < QN; j++) {
                    acc[i * QN + j] = coopMultiplyAdd(x, y[j], acc[i * QN + j]);
                }
            }
        }
        workgroupBarrier();
    }

    let inside = row0 + BM <= rg.m_end && col0 + BN <= p.n && p.n % 8u == 0u && rg.c_off % 8u == 0u;
    let own = sg * 256u;
    for (var i = 0u; i < QM; i++) {
        for (var j = 0u; j < QN; j++) {
            let gm = row0 + sm0 + 16u * i;
            let gn = col0 + sn0 + 16u * j;
            if inside {
                let io = rg.c_off + gm * p.n + gn;
                let so = p.n;
                coopStoreT(acc[i * QN + j], &c[io], so);
            } else {
                let s16 = 16u;
                coopStoreT(acc[i * QN + j], &staging[own], s16);
                workgroupBarrier();
                for (var e = lane; e < 256u; e += SUBGROUP) {
                    let r = gm + e / 16u;
                    let col = gn + e % 16u;
                    if r < rg.m_end && col < p.n {
                        c[rg.c_off + r * p.n + col] = staging[own + e];
                    }
                }
                workgroupBarrier();
            }
        }
    }
}
