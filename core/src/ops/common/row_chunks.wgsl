// Row kernels read a row V values at a time: vec4<f32> where rows are whole vec4s (16-byte
// loads keep four times the bytes in flight per thread), f32 otherwise. The Rust side
// (`with_row_chunks`) defines VEC, V, its bool VB, and chunk_max, chunk_sum and
// chunk_lane for that type.

// Stands in for -infinity (masked and not-yet-seen entries), which WGSL cannot write.
const MOST_NEGATIVE: f32 = -3.4028235e38;

// Online softmax over one load: folds the allowed values of z into the running (max, sum
// of exp(z - max)), rescaling the sum when the max grows. No branches, so a thread's
// loads can all be in flight at once. Nothing allowed yet leaves (MOST_NEGATIVE, 0).
fn online_fold(acc: vec2<f32>, z: V, ok: VB) -> vec2<f32> {
    let live = select(V(MOST_NEGATIVE), z, ok);
    let grown = max(acc.x, chunk_max(live));
    return vec2<f32>(grown, acc.y * exp(acc.x - grown) + chunk_sum(select(V(0.0), exp(live - grown), ok)));
}
