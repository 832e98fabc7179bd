{{ENABLE}}
// What every matmul kernel shares: the operands, how the matrices of one dispatch are laid
// out (workgroup z picks one), and staging one BK-deep slice of op(A) and op(B) in
// workgroup memory. C = op(A) * op(B), op = identity or transpose (TRANS_A, TRANS_B).
// GROUPING defines `ranges(wid)`: which matrix workgroup `wid` works on, the rows and the
// depth (K) that matrix covers, where its operands start, and which tile of its rows
// (`tile`, counted from `m_begin`) is the workgroup's:
//   plain batches (matrix wid.z): all rows and depth, per-batch offsets (stride 0 shares
//     an operand);
//   rows grouped by expert (MoE forward, input gradient): rows offsets[e]..offsets[e+1] of
//     A and C, expert e's own B; the row tiles of all experts are numbered in one run
//     along wid.y, so the dispatch needs only rows/BM + experts of them;
//   depth grouped by expert (MoE weight gradient, matrix wid.z): K runs over expert z's
//     rows only and C is expert z's own matrix.
// Edge tiles stage zeros, so any M, N, K work.

const TRANS_A: bool = {{TRANS_A}};
const TRANS_B: bool = {{TRANS_B}};
const BM: u32 = {{BM}}u;
const BN: u32 = {{BN}}u;
const BK: u32 = {{BK}}u;
const THREADS: u32 = {{THREADS}}u;
// Elements per global load of A and B (1, or 4 when the host has checked that the
// operand's contiguous dimension is a multiple of 4 and is not the grouped one).
const VA: u32 = {{VEC_A}}u;
const VB: u32 = {{VEC_B}}u;
// Tile rows are padded by 8 elements: transposing stores spread over banks, and every
// 16-element sub-tile starts on a 16-byte boundary (cooperative loads need that).
const AS: u32 = BM + 8u;
const BS: u32 = BN + 8u;

struct Params { m: u32, n: u32, k: u32, batch_stride_a: u32, batch_stride_b: u32, experts: u32 }

struct Ranges { m_begin: u32, m_end: u32, k_begin: u32, k_end: u32, a_off: u32, b_off: u32, c_off: u32, tile: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<{{A_ELEM}}>;
@group(0) @binding(2) var<storage, read> b: array<{{B_ELEM}}>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

{{GROUPING}}

// The staged slices are K-major: element (m, k) of op(A) at index k * AS + m of the A
// tile, element (k, n) of op(B) at k * BS + n of the B tile. Each main kernel declares the
// tiles in the layout its inner loop reads and stores into them with put_a and put_b.

// How a value enters a tile: as is, or rounded to f16 for mixed precision.
fn to_tile(x: f32) -> {{TILE_T}} {
    {{TO_TILE}}
}

// VA (VB) consecutive elements of A (B) from element index i.
fn read_a(i: u32) -> vec4<f32> {
    {{READ_A}}
}

fn read_b(i: u32) -> vec4<f32> {
    {{READ_B}}
}

// Stages the slice k0..k0+BK of op(A) rows row0.. and op(B) columns col0.. of matrix
// `rg`. Consecutive threads read consecutive addresses of each operand's layout.
fn stage_tiles(rg: Ranges, row0: u32, col0: u32, k0: u32, tid: u32) {
    let a_line = select(BK, BM, TRANS_A) / VA; // loads along A's contiguous dimension
    for (var e = tid; e < BM * BK / VA; e += THREADS) {
        let along = (e % a_line) * VA;
        let across = e / a_line;
        let mm = select(across, along, TRANS_A);
        let kk = select(along, across, TRANS_A);
        let gm = row0 + mm;
        let gk = k0 + kk;
        var v = vec4(0.0);
        if gm < rg.m_end && gk < rg.k_end {
            v = read_a(rg.a_off + select(gm * p.k + gk, gk * p.m + gm, TRANS_A));
        }
        for (var i = 0u; i < VA; i++) {
            put_a(select((kk + i) * AS + mm, kk * AS + mm + i, TRANS_A), to_tile(v[i]));
        }
    }
    let b_line = select(BN, BK, TRANS_B) / VB;
    for (var e = tid; e < BN * BK / VB; e += THREADS) {
        let along = (e % b_line) * VB;
        let across = e / b_line;
        let nn = select(along, across, TRANS_B);
        let kk = select(across, along, TRANS_B);
        let gn = col0 + nn;
        let gk = k0 + kk;
        var v = vec4(0.0);
        if gn < p.n && gk < rg.k_end {
            v = read_b(rg.b_off + select(gk * p.n + gn, gn * p.k + gk, TRANS_B));
        }
        for (var i = 0u; i < VB; i++) {
            put_b(select(kk * BS + nn + i, (kk + i) * BS + nn, TRANS_B), to_tile(v[i]));
        }
    }
}
