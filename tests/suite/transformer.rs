//! Transformer pieces: norms, SwiGLU, rotary embeddings, attention, AdamW, clipping.

use moegrad::models::{Ffn, FfnKind, KvCache, ModelConfig, Transformer};
use moegrad::ops::attention::attention_reference;
use moegrad::ops::heads::{merge_heads_reference, split_heads_reference};
use moegrad::ops::norm::norm_reference;
use moegrad::ops::optim::{adamw_reference, sgd_reference};
use moegrad::ops::rope::rope_reference;
use moegrad::ops::slice::concat_reference;
use moegrad::ops::swiglu::swiglu_reference;
use moegrad::ops::{
    add_layer_norm, add_rms_norm, attention, clip_grad_norm, clip_grad_norm_scaled, concat, grad_norm, layer_norm, merge_heads, rms_norm, rope,
    row_threads_allowed, split_heads, swiglu, AdamW, AdamWConfig, HostTensor, NormKind, RopeTable, Tiles,
};
use moegrad::prelude::*;
use rand::Rng;

use crate::common::{assert_close, check_op, device, dim, host, on_both_paths, packed_row_lengths, rng, upload, TOL};

#[test]
fn rms_and_layer_norm_match_reference_and_gradients() {
    on_both_paths(|| {
        let mut r = rng(70);
        // Rows of whole vec4s (4, 64, 300) take 16-byte loads, the rest single floats.
        for n in [1, 4, 7, 33, 64, 65, 300] {
            let rows = dim(&mut r, 20);
            let x = host(&mut r, &[rows, n], -2.0, 2.0);
            let w = host(&mut r, &[n], 0.5, 1.5);
            let b = host(&mut r, &[n], -0.5, 0.5);
            check_op("rms_norm", &[x.clone(), w.clone()], |t| rms_norm(&t[0], &t[1], 1e-5), |h| norm_reference(NormKind::Rms, &h[0], &h[1], None, 1e-5), TOL);
            check_op(
                "layer_norm",
                &[x, w, b],
                |t| layer_norm(&t[0], &t[1], &t[2], 1e-5),
                |h| norm_reference(NormKind::Layer, &h[0], &h[1], Some(&h[2]), 1e-5),
                TOL,
            );
        }
    });
}

/// `(x + delta, norm(x + delta))` on the host.
fn add_norm_reference(kind: NormKind, h: &[HostTensor]) -> (HostTensor, HostTensor) {
    let sum = HostTensor::new(&h[0].shape, h[0].data.iter().zip(&h[1].data).map(|(a, b)| a + b).collect());
    let normed = norm_reference(kind, &sum, &h[2], h.get(3), 1e-5);
    (sum, normed)
}

/// The residual sum and its norm, as one flat tensor (both carry gradients).
fn both(pair: (Tensor, Tensor)) -> Tensor {
    let (sum, normed) = pair;
    concat(&[&sum.reshape(&[sum.numel()]), &normed.reshape(&[normed.numel()])], 0)
}

fn both_reference(pair: (HostTensor, HostTensor)) -> HostTensor {
    let (sum, normed) = pair;
    HostTensor::new(&[sum.numel() * 2], sum.data.into_iter().chain(normed.data).collect())
}

#[test]
fn residual_norms_match_reference_and_gradients() {
    on_both_paths(|| {
        let mut r = rng(78);
        for n in [1, 4, 7, 64, 65, 300] {
            let rows = dim(&mut r, 20);
            let (x, delta) = (host(&mut r, &[rows, n], -2.0, 2.0), host(&mut r, &[rows, n], -1.0, 1.0));
            let (w, b) = (host(&mut r, &[n], 0.5, 1.5), host(&mut r, &[n], -0.5, 0.5));
            let rms_inputs = [x.clone(), delta.clone(), w.clone()];
            check_op(
                "add_rms_norm",
                &rms_inputs,
                |t| both(add_rms_norm(&t[0], &t[1], &t[2], 1e-5)),
                |h| both_reference(add_norm_reference(NormKind::Rms, h)),
                TOL,
            );
            // Only the norm used (the gradient of the sum is the norm's alone), only the sum.
            check_op("add_rms_norm, norm only", &rms_inputs, |t| add_rms_norm(&t[0], &t[1], &t[2], 1e-5).1, |h| add_norm_reference(NormKind::Rms, h).1, TOL);
            check_op("add_rms_norm, sum only", &rms_inputs, |t| add_rms_norm(&t[0], &t[1], &t[2], 1e-5).0, |h| add_norm_reference(NormKind::Rms, h).0, TOL);
            check_op(
                "add_layer_norm",
                &[x, delta, w, b],
                |t| both(add_layer_norm(&t[0], &t[1], &t[2], &t[3], 1e-5)),
                |h| both_reference(add_norm_reference(NormKind::Layer, h)),
                TOL,
            );
        }
    });
}

#[test]
fn norms_at_every_workgroup_size() {
    on_both_paths(|| {
        let mut r = rng(77);
        for threads in row_threads_allowed(&device()) {
            for n in [37, 300] {
                let (x, w, b) = (host(&mut r, &[3, n], -2.0, 2.0), host(&mut r, &[n], 0.5, 1.5), host(&mut r, &[n], -0.5, 0.5));
                let rms = |t: &[Tensor]| device().with_policy(|p| p.row_threads = Some(threads), || rms_norm(&t[0], &t[1], 1e-5));
                check_op("rms_norm", &[x.clone(), w.clone()], rms, |h| norm_reference(NormKind::Rms, &h[0], &h[1], None, 1e-5), TOL);
                let layer = |t: &[Tensor]| device().with_policy(|p| p.row_threads = Some(threads), || layer_norm(&t[0], &t[1], &t[2], 1e-5));
                check_op("layer_norm", &[x, w, b], layer, |h| norm_reference(NormKind::Layer, &h[0], &h[1], Some(&h[2]), 1e-5), TOL);
            }
        }
    });
}

#[test]
fn norms_of_rows_packed_several_to_a_workgroup() {
    // Each packed layout (short rows sharing a workgroup, a subgroup's lanes each) at row
    // lengths that select it, with a last workgroup that is not full: both norms, plain
    // and with a residual, forward and gradients.
    let dev = device();
    let mut r = rng(79);
    for (layout, sizes) in packed_row_lengths(&dev, &mut r) {
        for n in sizes {
            let rows = 2 * layout.rows as usize + r.random_range(1..layout.rows as usize);
            let what = |op: &str| format!("{op} of {rows} rows of {n}, {} threads x {} rows", layout.threads, layout.rows);
            let (x, delta) = (host(&mut r, &[rows, n], -2.0, 2.0), host(&mut r, &[rows, n], -1.0, 1.0));
            let (w, b) = (host(&mut r, &[n], 0.5, 1.5), host(&mut r, &[n], -0.5, 0.5));
            check_op(
                &what("rms_norm"),
                &[x.clone(), w.clone()],
                |t| rms_norm(&t[0], &t[1], 1e-5),
                |h| norm_reference(NormKind::Rms, &h[0], &h[1], None, 1e-5),
                TOL,
            );
            check_op(
                &what("add_layer_norm"),
                &[x, delta, w, b],
                |t| both(add_layer_norm(&t[0], &t[1], &t[2], &t[3], 1e-5)),
                |h| both_reference(add_norm_reference(NormKind::Layer, h)),
                TOL,
            );
        }
    }
}

#[test]
fn swiglu_matches_reference_and_gradients() {
    let mut r = rng(71);
    for n in [1, 7, 127, 1000] {
        let gate = host(&mut r, &[n], -4.0, 4.0);
        let up = host(&mut r, &[n], -2.0, 2.0);
        check_op("swiglu", &[gate, up], |t| swiglu(&t[0], &t[1]), |h| swiglu_reference(&h[0], &h[1]), TOL);
    }
}

#[test]
fn rope_rotates_pairs_by_position() {
    let mut r = rng(72);
    for (t, d, offset) in [(1, 2, 0), (7, 8, 3), (33, 16, 0), (5, 64, 100)] {
        let table = RopeTable::new(&device(), 200, d, 10_000.0).unwrap();
        let x = host(&mut r, &[2, 3, t, d], -1.0, 1.0);
        check_op("rope", &[x], |x| rope(&x[0], &table, offset), |h| rope_reference(&h[0], 10_000.0, offset), TOL);
    }
}

#[test]
fn split_heads_matches_reshape_transpose_and_rope() {
    let mut r = rng(78);
    for case in 0..6 {
        let (batch, heads, t, hd) = (dim(&mut r, 3), dim(&mut r, 4), dim(&mut r, 9), 2 * dim(&mut r, 5));
        let offset = r.random_range(0..20);
        let table = RopeTable::new(&device(), 40, hd, 10_000.0).unwrap();
        let qkv = host(&mut r, &[batch * t, 3 * heads * hd], -1.0, 1.0);
        // Every other case leaves the values unused: their columns get a zero gradient.
        let used = if case % 2 == 0 { 3 } else { 2 };
        check_op(
            "split_heads",
            &[qkv],
            |x| {
                let parts = split_heads(&x[0], batch, heads, &table, offset);
                concat(&parts.iter().take(used).collect::<Vec<_>>(), 0)
            },
            |h| {
                let parts = split_heads_reference(&h[0], batch, heads, 10_000.0, offset);
                concat_reference(&parts.iter().take(used).collect::<Vec<_>>(), 0)
            },
            TOL,
        );
    }
}

#[test]
fn merge_heads_puts_each_positions_heads_side_by_side() {
    let mut r = rng(79);
    // Even head sizes move pairs of values, odd ones single values.
    for case in 0..6 {
        let (batch, heads, t) = (dim(&mut r, 3), dim(&mut r, 4), dim(&mut r, 9));
        let hd = 2 * dim(&mut r, 5) + case % 2;
        let x = host(&mut r, &[batch * heads, t, hd], -1.0, 1.0);
        check_op("merge_heads", &[x], |x| merge_heads(&x[0], batch), |h| merge_heads_reference(&h[0], batch), TOL);
    }
}

#[test]
fn attention_causal_and_full() {
    let mut r = rng(73);
    for causal in [true, false] {
        for (b, t, d) in [(1, 1, 4), (3, 7, 8), (2, 33, 16)] {
            let q = host(&mut r, &[b, t, d], -1.0, 1.0);
            let k = host(&mut r, &[b, t, d], -1.0, 1.0);
            let v = host(&mut r, &[b, t, d], -1.0, 1.0);
            check_op("attention", &[q, k, v], |x| attention(&x[0], &x[1], &x[2], causal), |h| attention_reference(&h[0], &h[1], &h[2], causal), TOL);
        }
    }
}

#[test]
fn causal_attention_skips_the_masked_half() {
    // Tiles small enough that the masked half spans whole tiles, more keys than queries
    // (as with a KV cache), depth split into partial products, and a pool that hands out
    // buffers full of NaN: the scores and their gradients above the diagonal are never
    // computed, so nothing may read what those buffers held there.
    let mut r = rng(79);
    for (tiles, splits, b, t, s, d) in [(Tiles::SMALL, 1, 2, 100, 100, 8), (Tiles::SMALL, 3, 1, 70, 97, 4), (Tiles::MEDIUM, 2, 1, 150, 170, 8)] {
        let q = host(&mut r, &[b, t, d], -1.0, 1.0);
        let k = host(&mut r, &[b, s, d], -1.0, 1.0);
        let v = host(&mut r, &[b, s, d], -1.0, 1.0);
        for len in [b * t * s, splits * b * t * s, b * s * d, splits * b * s * d] {
            let poison: Vec<Tensor> = (0..4).map(|_| Tensor::from_slice(&device(), &vec![f32::NAN; len], &[len]).unwrap()).collect();
            drop(poison);
        }
        device().with_policy(
            |p| p.matmul_tiles = Some(tiles),
            || {
                device().with_policy(
                    |p| p.matmul_splits = Some(splits),
                    || {
                        check_op(
                            "causal attention",
                            &[q.clone(), k.clone(), v.clone()],
                            |x| attention(&x[0], &x[1], &x[2], true),
                            |h| attention_reference(&h[0], &h[1], &h[2], true),
                            TOL,
                        )
                    },
                )
            },
        );
    }
}

/// The model joins each block's output to the residual stream inside the next norm's
/// kernel: its logits and every parameter's gradient must be those of the textbook
/// pre-norm block, x += attn(norm(x)); x += ffn(norm(x)), written with separate ops.
#[test]
fn fused_residual_norms_give_the_textbook_pre_norm_model() {
    for (ffn, tied) in [(FfnKind::Dense, true), (FfnKind::Topk, false)] {
        let config = ModelConfig { vocab_size: 37, d_model: 32, layers: 2, heads: 2, context: 16, ffn, tied_embeddings: tied, ..ModelConfig::default() };
        config.validate().unwrap();
        let model = Transformer::new(&device(), &config, &mut rng(82)).unwrap();
        let mut r = rng(83);
        let (batch, t) = (2, 11);
        let ids: Vec<u32> = (0..batch * t).map(|_| r.random_range(0..37)).collect();
        let ids = Tensor::from_u32(&device(), &ids, &[batch, t]).unwrap();
        let seed = upload(&host(&mut r, &[batch * t, 37], -1.0, 1.0));
        let run = |logits: Tensor| {
            logits.backward_with(&seed);
            let grads: Vec<Vec<f32>> = model.parameters().iter().map(|p| p.grad().unwrap().to_vec().unwrap()).collect();
            model.parameters().iter().for_each(Tensor::zero_grad);
            (logits.to_vec().unwrap(), grads)
        };
        let (fused, fused_grads) = run(model.forward(&ids, true).logits);
        let rope = RopeTable::new(&device(), config.context, config.head_dim(), config.rope_base).unwrap();
        let eps = config.norm_eps;
        let mut x = model.embed.embedding(&ids).reshape(&[batch * t, config.d_model]);
        for block in &model.blocks {
            x = x.add(&block.attn.forward(&rms_norm(&x, &block.attn_norm, eps), batch, &rope, None));
            let h = rms_norm(&x, &block.ffn_norm, eps);
            x = x.add(&match &block.ffn {
                Ffn::Dense(f) => f.forward(&h),
                Ffn::Moe(m) => m.forward(&h, true).0,
            });
        }
        let x = rms_norm(&x, &model.final_norm, eps);
        let logits = match &model.lm_head {
            Some(w) => x.matmul(w),
            None => x.matmul_t(&model.embed, false, true),
        };
        let (textbook, textbook_grads) = run(logits);
        let name = format!("{ffn:?} model");
        assert_close(&format!("{name} logits"), &fused, &textbook.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5);
        for ((param, got), want) in model.named_parameters().iter().map(|(n, _)| n).zip(&fused_grads).zip(&textbook_grads) {
            assert_close(&format!("{name}: gradient of {param}"), got, &want.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5);
        }
    }
}

#[test]
fn a_kv_cache_gives_the_logits_of_the_whole_sequence() {
    // Generation runs the prompt, then a token or a few at a time against the cached keys
    // and values: more keys than queries, positions offset in the rotary table, and (with
    // 32-row tiles) causal products over several tiles. Each chunk's logits must be the
    // rows of one forward pass over the whole sequence.
    let config = ModelConfig { vocab_size: 50, d_model: 32, layers: 2, heads: 2, context: 64, ffn: FfnKind::Dense, ..ModelConfig::default() };
    config.validate().unwrap();
    let model = Transformer::new(&device(), &config, &mut rng(80)).unwrap();
    let mut r = rng(81);
    let ids: Vec<u32> = (0..45).map(|_| r.random_range(0..50)).collect();
    device().with_policy(
        |p| p.matmul_tiles = Some(Tiles::SMALL),
        || {
            let whole = no_grad(|| model.forward(&Tensor::from_u32(&device(), &ids, &[1, ids.len()]).unwrap(), false).logits).to_vec().unwrap();
            let mut cache = KvCache::new();
            let mut start = 0;
            for len in [13, 1, 1, 7, 20, 3] {
                let chunk = Tensor::from_u32(&device(), &ids[start..start + len], &[1, len]).unwrap();
                let got = no_grad(|| model.forward_cached(&chunk, &mut cache)).to_vec().unwrap();
                let want: Vec<f64> = whole[start * 50..(start + len) * 50].iter().map(|&v| v as f64).collect();
                assert_close(&format!("logits of positions {start}..{}", start + len), &got, &want, 1e-5);
                start += len;
            }
            assert_eq!(start, ids.len());
        },
    );
}

#[test]
fn sgd_steps_match_reference() {
    let mut r = rng(73);
    // A length of whole vec4 loads and one of single floats.
    let n4 = 4 * r.random_range(1..300);
    for n in [n4, n4 + 1 + 2 * r.random_range(0..100)] {
        let p0 = host(&mut r, &[n], -1.0, 1.0);
        let p = upload(&p0).requires_grad();
        let mut opt = Sgd::new(std::slice::from_ref(&p), 0.1);
        let mut reference = p0.data.clone();
        for _ in 0..3 {
            let g = host(&mut r, &[n], -1.0, 1.0);
            p.set_grad(upload(&g));
            opt.step();
            reference = sgd_reference(&reference, &g.data, opt.lr);
        }
        assert_close(&format!("sgd param ({n})"), &p.to_vec().unwrap(), &reference, 1e-5);
    }
}

#[test]
fn adamw_steps_match_reference() {
    let mut r = rng(74);
    // A length of whole vec4 loads and one of single floats.
    let n4 = 4 * r.random_range(1..300);
    for n in [n4, n4 + 1 + 2 * r.random_range(0..100)] {
        let p0 = host(&mut r, &[n], -1.0, 1.0);
        let config = AdamWConfig { lr: 0.01, weight_decay: 0.1, ..AdamWConfig::default() };
        let p = upload(&p0).requires_grad();
        let mut opt = AdamW::new(std::slice::from_ref(&p), config).unwrap();
        let (mut pr, mut mr, mut vr) = (p0.data.clone(), vec![0.0; n], vec![0.0; n]);
        for step in 1..=3 {
            let g = host(&mut r, &[n], -1.0, 1.0);
            p.set_grad(upload(&g));
            opt.step();
            (pr, mr, vr) = adamw_reference(&pr, &g.data, &mr, &vr, config, step);
        }
        assert_close(&format!("adamw param ({n})"), &p.to_vec().unwrap(), &pr, 1e-5);
        assert_close(&format!("adamw m ({n})"), &opt.slots()[0].m.to_vec().unwrap(), &mr, 1e-5);
        assert_close(&format!("adamw v ({n})"), &opt.slots()[0].v.to_vec().unwrap(), &vr, 1e-5);
    }
}

/// AdamW applying the clipping factor as it reads the gradients: the reference update on
/// clipped, unscaled gradients, and bit for bit what clipping first, then stepping, gives.
#[test]
fn adamw_step_clipped_matches_reference_and_clipping_first() {
    let mut r = rng(77);
    let sizes = [1001, 3, 70_000];
    let config = AdamWConfig { lr: 0.01, weight_decay: 0.1, ..AdamWConfig::default() };
    let initial: Vec<HostTensor> = sizes.iter().map(|&n| host(&mut r, &[n], -1.0, 1.0)).collect();
    let fused: Vec<Tensor> = initial.iter().map(|h| upload(h).requires_grad()).collect();
    let separate: Vec<Tensor> = initial.iter().map(|h| upload(h).requires_grad()).collect();
    let (mut fused_opt, mut separate_opt) = (AdamW::new(&fused, config).unwrap(), AdamW::new(&separate, config).unwrap());
    let mut reference: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = initial.iter().map(|h| (h.data.clone(), vec![0.0; h.numel()], vec![0.0; h.numel()])).collect();
    // (max_norm, loss scale): clipping active, loss scaling alone, neither.
    for (step, (max_norm, loss_scale)) in [(1.0f32, 1.0f32), (f32::INFINITY, 256.0), (f32::INFINITY, 1.0), (0.5, 64.0)].into_iter().enumerate() {
        let grads: Vec<HostTensor> = sizes.iter().map(|&n| host(&mut r, &[n], -1.0, 1.0)).collect();
        for (p, g) in fused.iter().zip(&grads).chain(separate.iter().zip(&grads)) {
            p.set_grad(upload(&g.map(|v| v * loss_scale as f64)));
        }
        let norm = grad_norm(&fused, max_norm, loss_scale).unwrap();
        fused_opt.step_clipped(config.lr, &norm);
        clip_grad_norm_scaled(&separate, max_norm, loss_scale).unwrap();
        separate_opt.step();
        let true_norm = grads.iter().flat_map(|g| &g.data).map(|v| v * v).sum::<f64>().sqrt();
        let clip = (max_norm as f64 / (true_norm + 1e-6)).min(1.0);
        for (state, g) in reference.iter_mut().zip(&grads) {
            let clipped: Vec<f64> = g.data.iter().map(|v| v * clip).collect();
            *state = adamw_reference(&state.0, &clipped, &state.1, &state.2, config, step as u64 + 1);
        }
    }
    for (i, (state, (p, q))) in reference.iter().zip(fused.iter().zip(&separate)).enumerate() {
        let (fused_m, fused_v) = (&fused_opt.slots()[i].m, &fused_opt.slots()[i].v);
        assert_close("clipped adamw param", &p.to_vec().unwrap(), &state.0, 1e-5);
        assert_close("clipped adamw m", &fused_m.to_vec().unwrap(), &state.1, 1e-5);
        assert_close("clipped adamw v", &fused_v.to_vec().unwrap(), &state.2, 1e-5);
        assert_eq!(p.to_vec().unwrap(), q.to_vec().unwrap(), "parameter {i}: fused clipping must equal clipping first");
        assert_eq!(fused_m.to_vec().unwrap(), separate_opt.slots()[i].m.to_vec().unwrap(), "parameter {i}: first moments");
        assert_eq!(fused_v.to_vec().unwrap(), separate_opt.slots()[i].v.to_vec().unwrap(), "parameter {i}: second moments");
    }
}

#[test]
fn gradient_norm_and_clipping() {
    on_both_paths(|| {
        let mut r = rng(75);
        let a = upload(&host(&mut r, &[70_000], -1.0, 1.0)).requires_grad();
        let b = upload(&host(&mut r, &[70_000], -1.0, 1.0)).requires_grad();
        let c = upload(&host(&mut r, &[3], -1.0, 1.0)).requires_grad();
        // a and b receive the very same gradient tensor from `add`; c gets its own.
        let w = upload(&host(&mut r, &[70_000], -1.0, 1.0));
        a.add(&b).mul(&w).sum_all().add(&c.square().sum_all()).backward();
        let grads: Vec<Vec<f32>> = [&a, &b, &c].iter().map(|p| p.grad().unwrap().to_vec().unwrap()).collect();
        let norm: f64 = grads.iter().flatten().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
        let out = clip_grad_norm(&[a.clone(), b.clone(), c.clone()], 1.0).unwrap().to_vec().unwrap();
        assert!((out[0] as f64 - norm).abs() < 1e-4 * norm, "norm {} vs {norm}", out[0]);
        let scale = 1.0 / (norm + 1e-6);
        for (p, g) in [&a, &b, &c].iter().zip(&grads) {
            let want: Vec<f64> = g.iter().map(|&v| v as f64 * scale).collect();
            assert_close("clipped gradient", &p.grad().unwrap().to_vec().unwrap(), &want, 1e-5);
        }
        let unclipped = clip_grad_norm(std::slice::from_ref(&c), f32::INFINITY).unwrap().to_vec().unwrap();
        assert_eq!(unclipped[1], 1.0);
    });
}

/// Loss scaling: gradients that hold `scale` times the true ones come out unscaled (and
/// clipped by the true norm); an overflowed gradient makes the norm non-finite.
#[test]
fn loss_scaled_gradients_are_unscaled_then_clipped() {
    on_both_paths(|| {
        let mut r = rng(76);
        let true_grad = host(&mut r, &[5_000], -1.0, 1.0);
        let norm: f64 = true_grad.data.iter().map(|v| v * v).sum::<f64>().sqrt();
        let scale = 1024.0f32;
        for max_norm in [f32::INFINITY, 2.0] {
            let p = upload(&host(&mut r, &[5_000], -1.0, 1.0)).requires_grad();
            p.set_grad(upload(&true_grad.map(|v| v * scale as f64)));
            let out = clip_grad_norm_scaled(std::slice::from_ref(&p), max_norm, scale).unwrap().to_vec().unwrap();
            assert!((out[0] as f64 - norm).abs() < 1e-4 * norm, "true norm {norm}, got {}", out[0]);
            let clip = (max_norm as f64 / (norm + 1e-6)).min(1.0);
            let want: Vec<f64> = true_grad.data.iter().map(|v| v * clip).collect();
            assert_close("unscaled gradient", &p.grad().unwrap().to_vec().unwrap(), &want, 1e-5);
        }
        let p = upload(&host(&mut r, &[3], -1.0, 1.0)).requires_grad();
        p.set_grad(Tensor::from_slice(&device(), &[1.0, f32::INFINITY, 0.0], &[3]).unwrap());
        let out = clip_grad_norm_scaled(&[p], 1.0, scale).unwrap().to_vec().unwrap();
        assert!(!out[0].is_finite(), "an overflowed gradient must show in the norm, got {}", out[0]);
    });
}
