// The tensor-core matmul (wgpu's cooperative matrices): f16 tiles, f32 accumulators.
// A workgroup is eight 32-lane subgroups computing a 128 x 128 output tile; subgroup s
// owns rows 32 * (s / 2) .. +32 and columns 64 * (s % 2) .. +64 of it, as 2 x 4
// accumulator matrices of 16 x 16 (acc<i><j>). They are separate variables, each written
// out, rather than an array indexed in loops: an array of matrices indexed by a loop
// counter may live in memory rather than registers. `load_slice` and `store_slice`
// (matmul_tiles.wgsl) put each BK-deep slice of the operands in workgroup memory, rounded
// to f16 and zero-filled at the edges, so every cooperative load is in bounds; the next
// slice's loads are in flight while the current one is multiplied. A tile wholly inside C, with rows
// 32-byte aligned, is stored straight to memory; edge tiles go through a 16 x 16 staging
// area per subgroup and are written element by element.

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

// Copies subgroup `sg`'s staging area, just stored to, into the 16 x 16 block of C at
// (gm, gn), clipped to C. Every subgroup of the workgroup must call it (it has barriers).
fn copy_staged(rg: Ranges, gm: u32, gn: u32, sg: u32, lane: u32) {
    workgroupBarrier();
    for (var e = lane; e < 256u; e += SUBGROUP) {
        let r = gm + e / 16u;
        let col = gn + e % 16u;
        if r < rg.m_end && col < p.n {
            c[rg.c_off + r * p.n + col] = staging[sg * 256u + e];
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32, @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let rg = ranges(wid);
    let row0 = rg.m_begin + rg.tile * BM;
    // A tile past its group's rows (grouped dispatches cover the worst case) skips the
    // depth loop rather than returning: cooperative operations need uniform control flow.
    let k_stop = select(rg.k_begin, rg.k_end, row0 < rg.m_end);
    let col0 = wid.x * BN;
    let sm = (sg / 2u) * 32u;
    let sn = (sg % 2u) * 64u;

    var acc00 = coop_mat16x16<f32, C>();
    var acc01 = coop_mat16x16<f32, C>();
    var acc02 = coop_mat16x16<f32, C>();
    var acc03 = coop_mat16x16<f32, C>();
    var acc10 = coop_mat16x16<f32, C>();
    var acc11 = coop_mat16x16<f32, C>();
    var acc12 = coop_mat16x16<f32, C>();
    var acc13 = coop_mat16x16<f32, C>();
    var slice = load_slice(rg, row0, col0, rg.k_begin, tid);
    for (var k0 = rg.k_begin; k0 < k_stop; k0 += BK) {
        store_slice(slice, tid);
        workgroupBarrier();
        slice = load_slice(rg, row0, col0, k0 + BK, tid);
        for (var kk = 0u; kk < BK; kk += 16u) {
            // op(A) is staged column-major ((m, k) at k * AS + m), op(B) row-major. (naga
            // 30 needs each stride and index of a cooperative load or store bound to a name
            // in the block that uses it.)
            let sa = AS;
            let sb = BS;
            let ib0 = kk * BS + sn;
            let ib1 = ib0 + 16u;
            let ib2 = ib0 + 32u;
            let ib3 = ib0 + 48u;
            let ia0 = kk * AS + sm;
            let ia1 = ia0 + 16u;
            let y0 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[ib0], sb);
            let y1 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[ib1], sb);
            let y2 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[ib2], sb);
            let y3 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[ib3], sb);
            let x0 = coopLoad<coop_mat16x16<f16, A>>(&a_tile[ia0], sa);
            acc00 = coopMultiplyAdd(x0, y0, acc00);
            acc01 = coopMultiplyAdd(x0, y1, acc01);
            acc02 = coopMultiplyAdd(x0, y2, acc02);
            acc03 = coopMultiplyAdd(x0, y3, acc03);
            let x1 = coopLoad<coop_mat16x16<f16, A>>(&a_tile[ia1], sa);
            acc10 = coopMultiplyAdd(x1, y0, acc10);
            acc11 = coopMultiplyAdd(x1, y1, acc11);
            acc12 = coopMultiplyAdd(x1, y2, acc12);
            acc13 = coopMultiplyAdd(x1, y3, acc13);
        }
        workgroupBarrier();
    }

    let gm = row0 + sm;
    let gn = col0 + sn;
    if row0 + BM <= rg.m_end && col0 + BN <= p.n && p.n % 8u == 0u && rg.c_off % 8u == 0u {
        let stride = p.n;
        let o00 = rg.c_off + gm * p.n + gn;
        let o01 = o00 + 16u;
        let o02 = o00 + 32u;
        let o03 = o00 + 48u;
        let o10 = o00 + 16u * p.n;
        let o11 = o10 + 16u;
        let o12 = o10 + 32u;
        let o13 = o10 + 48u;
        coopStoreT(acc00, &c[o00], stride);
        coopStoreT(acc01, &c[o01], stride);
        coopStoreT(acc02, &c[o02], stride);
        coopStoreT(acc03, &c[o03], stride);
        coopStoreT(acc10, &c[o10], stride);
        coopStoreT(acc11, &c[o11], stride);
        coopStoreT(acc12, &c[o12], stride);
        coopStoreT(acc13, &c[o13], stride);
    } else {
        let own = sg * 256u;
        let s16 = 16u;
        coopStoreT(acc00, &staging[own], s16);
        copy_staged(rg, gm, gn, sg, lane);
        coopStoreT(acc01, &staging[own], s16);
        copy_staged(rg, gm, gn + 16u, sg, lane);
        coopStoreT(acc02, &staging[own], s16);
        copy_staged(rg, gm, gn + 32u, sg, lane);
        coopStoreT(acc03, &staging[own], s16);
        copy_staged(rg, gm, gn + 48u, sg, lane);
        coopStoreT(acc10, &staging[own], s16);
        copy_staged(rg, gm + 16u, gn, sg, lane);
        coopStoreT(acc11, &staging[own], s16);
        copy_staged(rg, gm + 16u, gn + 16u, sg, lane);
        coopStoreT(acc12, &staging[own], s16);
        copy_staged(rg, gm + 16u, gn + 32u, sg, lane);
        coopStoreT(acc13, &staging[own], s16);
        copy_staged(rg, gm + 16u, gn + 48u, sg, lane);
    }
}
