//! Per-kernel throughput. Matmul-like kernels report FLOP/s: criterion prints it as
//! "elem/s", one element being one floating-point operation. Memory-bound kernels report
//! bytes moved per second (each input read once, each output written once).
//!
//! Each iteration records the op and waits for the GPU (`synchronize`), so the time
//! includes one submission; GPU timestamp queries come with the `moegrad bench` harness.
//! `MOEGRAD_BENCH_SCALE=large` uses GPU-sized shapes (the defaults suit lavapipe).

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use moegrad::ops::*;
use moegrad::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn large() -> bool {
    std::env::var("MOEGRAD_BENCH_SCALE").is_ok_and(|s| s == "large")
}

/// Picks the lavapipe-sized or the GPU-sized value.
fn scale<T>(small: T, big: T) -> T {
    if large() {
        big
    } else {
        small
    }
}

struct Bench {
    dev: Device,
    rng: StdRng,
}

impl Bench {
    fn new() -> Self {
        Bench { dev: Device::new().expect("benchmarks need a GPU adapter"), rng: StdRng::seed_from_u64(0) }
    }

    fn randn(&mut self, shape: &[usize]) -> Tensor {
        Tensor::randn(&self.dev, shape, 1.0, &mut self.rng).unwrap()
    }

    fn ids(&mut self, n: usize, below: u32, shape: &[usize]) -> Tensor {
        let ids: Vec<u32> = (0..n).map(|_| self.rng.random_range(0..below)).collect();
        Tensor::from_u32(&self.dev, &ids, shape).unwrap()
    }

    /// Times `f` (recording and waiting for the GPU) under `name` with `throughput`.
    fn run<R>(&self, group: &mut BenchmarkGroup<'_, WallTime>, name: &str, param: impl std::fmt::Display, throughput: Throughput, f: impl Fn() -> R) {
        group.throughput(throughput);
        group.bench_function(BenchmarkId::new(name, param), |b| {
            b.iter(|| {
                let out = no_grad(&f);
                self.dev.synchronize();
                out
            })
        });
    }
}

/// Few samples and short windows: GPU timings are steady, and lavapipe is slow.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    g
}

fn bytes(floats: usize) -> Throughput {
    Throughput::Bytes(4 * floats as u64)
}

fn flops(n: usize) -> Throughput {
    Throughput::Elements(n as u64)
}

fn matmuls(c: &mut Criterion) {
    let mut b = Bench::new();
    let mut g = group(c, "matmul_flops");
    for n in scale(vec![64, 128, 256], vec![1024, 2048, 4096]) {
        let (x, y) = (b.randn(&[n, n]), b.randn(&[n, n]));
        for (ta, tb, name) in [(false, false, "nn"), (false, true, "nt"), (true, false, "tn")] {
            b.run(&mut g, name, n, flops(2 * n * n * n), || matmul_t(&x, &y, ta, tb));
        }
    }
    let (tokens, d, f, experts) = scale((512, 64, 128, 8), (32_768, 1024, 2048, 8));
    let x = b.randn(&[tokens, d]);
    let w = b.randn(&[experts, d, f]);
    let offsets: Vec<u32> = (0..=experts).map(|e| (e * tokens / experts) as u32).collect();
    let offsets = Tensor::from_u32(&b.dev, &offsets, &[experts + 1]).unwrap();
    b.run(&mut g, "grouped", format!("{tokens}x{d}x{f}/E{experts}"), flops(2 * tokens * d * f), || grouped_matmul(&x, &w, &offsets));
    let (bh, t, hd) = scale((8, 64, 32), (128, 512, 64));
    let (q, k, v) = (b.randn(&[bh, t, hd]), b.randn(&[bh, t, hd]), b.randn(&[bh, t, hd]));
    // Two products of 2 bh t^2 hd FLOPs, of which the causal mask leaves half to compute.
    b.run(&mut g, "attention_causal", format!("{bh}x{t}x{hd}"), flops(2 * bh * t * t * hd), || attention(&q, &k, &v, true));
    g.finish();
}

fn memory_bound(c: &mut Criterion) {
    let mut b = Bench::new();
    let mut g = group(c, "memory_gbps");
    let n = scale(1 << 18, 1 << 26);
    let (x, y) = (b.randn(&[n]), b.randn(&[n]));
    b.run(&mut g, "add", n, bytes(3 * n), || x.add(&y));
    b.run(&mut g, "gelu", n, bytes(2 * n), || x.gelu());
    b.run(&mut g, "sum_all", n, bytes(n), || x.sum_all());

    let (rows, cols) = scale((256, 1024), (16_384, 4096));
    let s = b.randn(&[rows, cols]);
    b.run(&mut g, "softmax", format!("{rows}x{cols}"), bytes(2 * rows * cols), || softmax(&s));
    b.run(&mut g, "log_softmax", format!("{rows}x{cols}"), bytes(2 * rows * cols), || log_softmax(&s));
    b.run(&mut g, "stablemax", format!("{rows}x{cols}"), bytes(2 * rows * cols), || stablemax(&s));
    let w = b.randn(&[cols]);
    b.run(&mut g, "rms_norm", format!("{rows}x{cols}"), bytes(2 * rows * cols), || rms_norm(&s, &w, 1e-5));
    let delta = b.randn(&[rows, cols]);
    b.run(&mut g, "add_rms_norm", format!("{rows}x{cols}"), bytes(4 * rows * cols), || add_rms_norm(&s, &delta, &w, 1e-5));

    let (batch, t, heads, hd) = scale((4, 64, 4, 32), (16, 512, 8, 64));
    let qkv = b.randn(&[batch * t, 3 * heads * hd]);
    let table = RopeTable::new(&b.dev, t, hd, 10_000.0).unwrap();
    b.run(&mut g, "split_heads", format!("{batch}x{t}x{heads}x{hd}"), bytes(2 * qkv.numel()), || split_heads(&qkv, batch, heads, &table, 0));
    let per_head = b.randn(&[batch * heads, t, hd]);
    b.run(&mut g, "merge_heads", format!("{batch}x{t}x{heads}x{hd}"), bytes(2 * per_head.numel()), || merge_heads(&per_head, batch));

    let (tokens, vocab) = scale((64, 4096), (8192, 50_304));
    let logits = b.randn(&[tokens, vocab]);
    let targets = b.ids(tokens, vocab as u32, &[tokens]);
    b.run(&mut g, "cross_entropy", format!("{tokens}x{vocab}"), bytes(tokens * vocab), || cross_entropy(&logits, &targets, CrossEntropyOptions::default()));

    let p = b.randn(&[n]).requires_grad();
    p.set_grad(b.randn(&[n]));
    let mut opt = AdamW::new(std::slice::from_ref(&p), AdamWConfig::default()).unwrap();
    let opt = std::cell::RefCell::new(&mut opt);
    b.run(&mut g, "adamw", n, bytes(7 * n), || opt.borrow_mut().step());
    g.finish();
}

fn routing(c: &mut Criterion) {
    let mut b = Bench::new();
    let mut g = group(c, "routing");
    let (tokens, experts, k, d) = scale((4096, 64, 2, 64), (65_536, 64, 2, 1024));
    let logits = b.randn(&[tokens, experts]);
    b.run(&mut g, "router_softmax_topk", format!("{tokens}x{experts}/k{k}"), bytes(tokens * (experts * 2 + 2 * k)), || route(&logits, k, false));
    b.run(&mut g, "router_with_stats", format!("{tokens}x{experts}/k{k}"), bytes(tokens * (experts * 2 + 2 * k + 2)), || route_with_stats(&logits, k, false));
    b.run(&mut g, "topk", format!("{tokens}x{experts}/k{k}"), bytes(tokens * (experts + 2 * k)), || topk(&logits, k));
    let routed = route(&logits, k, false);
    let choices = routed.indices;
    b.run(&mut g, "permute", format!("{tokens}x{k}/E{experts}"), Throughput::Elements((tokens * k) as u64), || plan_routing(&choices, experts));
    let plan = plan_routing(&choices, experts);
    b.run(&mut g, "load_balancing_loss", format!("{tokens}x{experts}/k{k}"), bytes(tokens * experts), || load_balancing_loss(&routed.probs, &plan, 0.01).loss);
    let x = b.randn(&[tokens, d]);
    b.run(&mut g, "gather_slots", format!("{tokens}x{d}/k{k}"), bytes(2 * tokens * k * d), || gather_slots(&x, &plan));
    let rows = b.randn(&[tokens * k, d]);
    let weights = b.randn(&[tokens, k]);
    b.run(&mut g, "combine_slots", format!("{tokens}x{d}/k{k}"), bytes(tokens * k * d + tokens * d), || combine_slots(&rows, &weights, &plan));
    g.finish();
}

// No plots: criterion's need system fonts, which a bare GPU machine or CI image lacks,
// and the throughput it prints is the result.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = matmuls, memory_bound, routing
}
criterion_main!(benches);
