{{ENABLE}}
// What every matmul kernel shares: the operands, how the matrices of one dispatch are laid
// out (workgroup z picks one), and staging one BK-deep slice of op(A) and op(B) in
// workgroup memory. C = op(A) * op(B), op = identity or transpose (TRANS_A, TRANS_B).
// GROUPING defines `group_ranges(wid)`: which matrix workgroup `wid` works on, the rows and the
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

struct Params { m: u32, n: u32, k: u32, batch_stride_a: u32, batch_stride_b: u32, experts: u32, splits: u32 }

struct Ranges { m_begin: u32, m_end: u32, k_begin: u32, k_end: u32, a_off: u32, b_off: u32, c_off: u32, tile: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<{{A_ELEM}}>;
@group(0) @binding(2) var<storage, read> b: array<{{B_ELEM}}>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

{{GROUPING}}

// Split depth: with p.splits > 1, workgroup z works on matrix z / splits of the grouping,
// over slice z % splits of its depth (BK-aligned), into a partial product of its own at
// matrix z of C; the host sums the partials. A product with a small output and a long
// depth then still fills the GPU.
fn ranges(wid: vec3<u32>) -> Ranges {
    var r = group_ranges(vec3(wid.x, wid.y, wid.z / p.splits));
    let s = wid.z % p.splits;
    let chunk = ((r.k_end - r.k_begin + p.splits - 1u) / p.splits + BK - 1u) / BK * BK;
    r.k_begin = min(r.k_begin + s * chunk, r.k_end);
    r.k_end = min(r.k_begin + chunk, r.k_end);
    r.c_off = r.c_off * p.splits + s * p.m * p.n;
    return r;
}

// The staged slices are K-major: element (m, k) of op(A) at index k * AS + m of the A
// tile, element (k, n) of op(B) at k * BS + n of the B tile. Each main kernel declares the
// tiles in the layout its inner loop reads and stores into them with put_a and put_b.

// x rounded to the nearest f16 (ties to even), kept in an f32: mixed precision without
// SHADER_F16. pack2x16float would do, but its rounding is the driver's choice (NVIDIA's
// truncates), and results should not depend on the adapter.
fn round_to_f16(x: f32) -> f32 {
    let ax = abs(x);
    if ax >= 65520.0 {
        return bitcast<f32>((bitcast<u32>(x) & 0x80000000u) | 0x7f800000u); // overflow: +-inf
    }
    if ax < 6.103515625e-5 {
        return round(x * 16777216.0) / 16777216.0; // f16 subnormals: multiples of 2^-24
    }
    let bits = bitcast<u32>(x);
    return bitcast<f32>((bits + 0xfffu + ((bits >> 13u) & 1u)) & 0xffffe000u); // 10 mantissa bits
}

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

// Loads per thread of one BK-deep slice of op(A) and of op(B).
const A_LOADS: u32 = (BM * BK / VA + THREADS - 1u) / THREADS;
const B_LOADS: u32 = (BN * BK / VB + THREADS - 1u) / THREADS;

// One thread's share of a slice, held in registers between its loads from memory and its
// stores to workgroup memory. Kernels load slice k + 1 before multiplying the tiles of
// slice k, so the multiplications cover the memory latency.
struct Slice { a: array<vec4<f32>, A_LOADS>, b: array<vec4<f32>, B_LOADS> }

// Which element of op(A)'s BM x BK slice (m, k) the j-th load of thread `tid` starts at,
// with the loads along A's contiguous dimension; likewise op(B)'s BK x BN slice (k, n).
// Consecutive threads read consecutive addresses.
fn a_element(tid: u32, j: u32) -> vec2<u32> {
    let e = tid + j * THREADS;
    let line = select(BK, BM, TRANS_A) / VA;
    let along = (e % line) * VA;
    let across = e / line;
    return select(vec2(across, along), vec2(along, across), TRANS_A);
}

fn b_element(tid: u32, j: u32) -> vec2<u32> {
    let e = tid + j * THREADS;
    let line = select(BN, BK, TRANS_B) / VB;
    let along = (e % line) * VB;
    let across = e / line;
    return select(vec2(across, along), vec2(along, across), TRANS_B);
}

// Reads the slice k0..k0+BK of op(A) rows row0.. and op(B) columns col0.. of matrix
// `rg`: zeros past its edges, so any M, N, K work (and a slice past the end is all zeros).
fn load_slice(rg: Ranges, row0: u32, col0: u32, k0: u32, tid: u32) -> Slice {
    var s: Slice;
    for (var j = 0u; j < A_LOADS; j++) {
        let mk = a_element(tid, j);
        let gm = row0 + mk.x;
        let gk = k0 + mk.y;
        s.a[j] = vec4(0.0);
        if tid + j * THREADS < BM * BK / VA && gm < rg.m_end && gk < rg.k_end {
            s.a[j] = read_a(rg.a_off + select(gm * p.k + gk, gk * p.m + gm, TRANS_A));
        }
    }
    for (var j = 0u; j < B_LOADS; j++) {
        let kn = b_element(tid, j);
        let gk = k0 + kn.x;
        let gn = col0 + kn.y;
        s.b[j] = vec4(0.0);
        if tid + j * THREADS < BN * BK / VB && gn < p.n && gk < rg.k_end {
            s.b[j] = read_b(rg.b_off + select(gk * p.n + gn, gn * p.k + gk, TRANS_B));
        }
    }
    return s;
}

// Puts a loaded slice into the workgroup tiles (through put_a and put_b).
fn store_slice(s: Slice, tid: u32) {
    for (var j = 0u; j < A_LOADS; j++) {
        if tid + j * THREADS < BM * BK / VA {
            let mk = a_element(tid, j);
            for (var i = 0u; i < VA; i++) {
                put_a(select((mk.y + i) * AS + mk.x, mk.y * AS + mk.x + i, TRANS_A), to_tile(s.a[j][i]));
            }
        }
    }
    for (var j = 0u; j < B_LOADS; j++) {
        if tid + j * THREADS < BN * BK / VB {
            let kn = b_element(tid, j);
            for (var i = 0u; i < VB; i++) {
                put_b(select(kn.x * BS + kn.y + i, (kn.x + i) * BS + kn.y, TRANS_B), to_tile(s.b[j][i]));
            }
        }
    }
}
