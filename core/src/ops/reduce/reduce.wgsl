// Reduction over the middle axis of an [outer, n, inner] view, in chunks: output (o, c, i)
// reduces x[o, k, i] over k in chunk c, [c * chunk, min(n, (c + 1) * chunk)). One chunk
// (chunk >= n) is the plain reduction; several give a partial result that a second pass
// reduces, so a long axis is spread over many workgroups instead of one.
//   rows (inner == 1): a workgroup per output, threads striding along the contiguous row,
//     then a tree in workgroup memory;
//   columns (inner > 1): a thread per output, consecutive threads on consecutive i, so
//     every step of the loop over k reads consecutive addresses.
// `max` also writes the index of the first maximum (within its chunk's axis, counted from
// 0), which its backward needs; it always runs as one chunk.

struct Params { outer: u32, n: u32, inner: u32, scale: f32, chunk: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> arg: array<u32>; // max only

const WG: u32 = 64u;
const MOST_NEGATIVE: f32 = -3.4028235e38;
const NONE: u32 = 0xffffffffu;
var<workgroup> vals: array<f32, WG>;
var<workgroup> idxs: array<u32, WG>;

// Output `o` (of outer * chunks * inner): where its elements start, its k range, and the
// stride between them.
struct Span { base: u32, k_begin: u32, k_end: u32 }

fn span(o: u32) -> Span {
    let chunks = (p.n + p.chunk - 1u) / p.chunk;
    let i = o % p.inner;
    let c = (o / p.inner) % chunks;
    let outer = o / (p.inner * chunks);
    let k_begin = c * p.chunk;
    return Span(outer * p.n * p.inner + i, k_begin, min(p.n, k_begin + p.chunk));
}

fn outputs() -> u32 {
    return p.outer * ((p.n + p.chunk - 1u) / p.chunk) * p.inner;
}

// (max, index) of a pair, ties to the lower index, NONE losing to anything.
fn better(v: f32, k: u32, best: f32, best_k: u32) -> bool {
    return k != NONE && (best_k == NONE || v > best || (v == best && k < best_k));
}

@compute @workgroup_size(64)
fn sum_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = wid.x + wid.y * nwg.x;
    if o >= outputs() {
        return;
    }
    let s = span(o);
    var acc = 0.0;
    for (var k = s.k_begin + lid; k < s.k_end; k += WG) {
        acc += x[s.base + k];
    }
    vals[lid] = acc;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if lid < h {
            vals[lid] += vals[lid + h];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out[o] = vals[0] * p.scale;
    }
}

@compute @workgroup_size(64)
fn sum_columns(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if o >= outputs() {
        return;
    }
    let s = span(o);
    var acc = 0.0;
    for (var k = s.k_begin; k < s.k_end; k++) {
        acc += x[s.base + k * p.inner];
    }
    out[o] = acc * p.scale;
}

@compute @workgroup_size(64)
fn max_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = wid.x + wid.y * nwg.x;
    if o >= outputs() {
        return;
    }
    let s = span(o);
    var best = MOST_NEGATIVE;
    var best_k = NONE;
    for (var k = s.k_begin + lid; k < s.k_end; k += WG) {
        let v = x[s.base + k];
        if better(v, k, best, best_k) {
            best = v;
            best_k = k;
        }
    }
    vals[lid] = best;
    idxs[lid] = best_k;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if lid < h && better(vals[lid + h], idxs[lid + h], vals[lid], idxs[lid]) {
            vals[lid] = vals[lid + h];
            idxs[lid] = idxs[lid + h];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out[o] = vals[0];
        arg[o] = idxs[0];
    }
}

@compute @workgroup_size(64)
fn max_columns(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if o >= outputs() {
        return;
    }
    let s = span(o);
    var best = MOST_NEGATIVE;
    var best_k = NONE;
    for (var k = s.k_begin; k < s.k_end; k++) {
        let v = x[s.base + k * p.inner];
        if better(v, k, best, best_k) {
            best = v;
            best_k = k;
        }
    }
    out[o] = best;
    arg[o] = best_k;
}
