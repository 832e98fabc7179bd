// The tensor-core matmul (wgpu's cooperative matrices): f16 tiles, f32 accumulators.
// A workgroup is four 32-lane subgroups; subgroup s owns the (BM/2) x (BN/2) quadrant s
// of the BM x BN output tile, as 16x16 accumulator matrices. The operands are staged in
// workgroup memory by `stage_tiles` (matmul_tiles.wgsl), which rounds them to f16 and
// zero-fills the edges, so every cooperative load is in bounds. Results go through
// workgroup memory so that edge tiles can be stored element by element.

const QM: u32 = BM / 32u; // 16x16 matrices per quadrant, down
const QN: u32 = BN / 32u; // and across

var<workgroup> c_tile: array<f32, BM * BN>;

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32, @builtin(subgroup_id) sg: u32) {
    let rg = ranges(wid.z);
    let row0 = rg.m_begin + wid.y * BM;
    // A tile past its group's rows (grouped dispatches cover the worst case) skips the
    // depth loop rather than returning: cooperative operations need uniform control flow.
    let k_stop = select(rg.k_begin, rg.k_end, row0 < rg.m_end);
    let col0 = wid.x * BN;
    let qm0 = (sg / 2u) * (BM / 2u);
    let qn0 = (sg % 2u) * (BN / 2u);

    var acc: array<coop_mat16x16<f32, C>, QM * QN>;
    for (var q = 0u; q < QM * QN; q++) {
        acc[q] = coop_mat16x16<f32, C>();
    }
    for (var k0 = rg.k_begin; k0 < k_stop; k0 += BK) {
        stage_tiles(rg, row0, col0, k0, tid);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 16u) {
            for (var i = 0u; i < QM; i++) {
                let ia = kk * AS + qm0 + 16u * i;
                let sa = AS;
                let x = coopLoad<coop_mat16x16<f16, A>>(&a_tile[ia], sa); // column-major: (m, k) at k * AS + m
                for (var j = 0u; j < QN; j++) {
                    let ib = kk * BS + qn0 + 16u * j;
                    let sb = BS;
                    let y = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[ib], sb); // row-major: (k, n) at k * BS + n
                    acc[i * QN + j] = coopMultiplyAdd(x, y, acc[i * QN + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < QM; i++) {
        for (var j = 0u; j < QN; j++) {
            let io = (qm0 + 16u * i) * BN + qn0 + 16u * j;
            let so = BN;
            coopStoreT(acc[i * QN + j], &c_tile[io], so);
        }
    }
    workgroupBarrier();
    for (var e = tid; e < BM * BN; e += THREADS) {
        let gm = row0 + e / BN;
        let gn = col0 + e % BN;
        if gm < rg.m_end && gn < p.n {
            c[rg.c_off + gm * p.n + gn] = c_tile[e];
        }
    }
}
