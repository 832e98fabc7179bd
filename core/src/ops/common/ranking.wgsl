// The order top-k selections use (top-k, the fused router): larger value first, and the
// lower index on ties, so that results never depend on thread scheduling.
fn ranks_above(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}
