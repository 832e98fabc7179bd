// Fused cross-entropy from logits with integer targets. `rows`: one workgroup per row
// computes lse = logsumexp(row) in one pass (max and rescaled sum together, V values per
// load: `common/row_chunks.wgsl`) and the row loss (lse - x[target]) + z_coef * lse^2, or
// 0 for an ignored target. `finish`: one workgroup averages the row losses over the
// counted (not ignored) rows, in a fixed order, so the result is deterministic.

const WG: u32 = {{WG}}u;

struct Params { rows: u32, n: u32, ignore_index: u32, z_coef: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<V>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_lse: array<f32>;

@compute @workgroup_size(WG)
fn rows(inv: Invocation) {
    let row = inv.wid.x + inv.wid.y * inv.nwg.x;
    if row >= p.rows {
        return;
    }
    let chunks = p.n / VEC;
    let base = row * chunks;
    var acc = vec2<f32>(MOST_NEGATIVE, 0.0);
    for (var c = inv.lid; c < chunks; c += WG) {
        acc = online_fold(acc, logits[base + c], VB(true));
    }
    let row_stats = workgroup_max_sum(inv, acc);
    if inv.lid == 0u {
        let lse = row_stats.x + log(row_stats.y);
        let t = targets[row];
        let j = min(t, p.n - 1u);
        let target_logit = chunk_lane(logits[base + j / VEC], j % VEC);
        row_lse[row] = lse;
        row_loss[row] = select(lse - target_logit + p.z_coef * lse * lse, 0.0, t == p.ignore_index);
    }
}

@group(0) @binding(5) var<storage, read_write> loss_out: array<f32>; // the mean, one value
@group(0) @binding(6) var<storage, read_write> count_out: array<f32>; // counted rows, as f32
@compute @workgroup_size(WG)
fn finish(inv: Invocation) {
    var loss = 0.0;
    var count = 0.0;
    for (var r = inv.lid; r < p.rows; r += WG) {
        loss += row_loss[r];
        count += select(1.0, 0.0, targets[r] == p.ignore_index);
    }
    let total_loss = workgroup_sum(inv, loss);
    let total_count = workgroup_sum(inv, count);
    if inv.lid == 0u {
        loss_out[0] = total_loss / max(total_count, 1.0);
        count_out[0] = total_count;
    }
}
