//! Per-kernel throughput. Matmul reports FLOP/s: criterion prints it as "elem/s", one
//! element being one floating-point operation (2·M·N·K per product). The element-wise
//! add reports bytes moved (two reads and one write per element).
//!
//! Each iteration records the op and waits for the GPU (`synchronize`), so the time
//! includes one submission; GPU timestamp queries come with the `moegrad bench` harness.
//! `MOEGRAD_BENCH_SCALE=large` uses GPU-sized shapes (the defaults suit lavapipe).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use moegrad::ops::{binary, matmul_t, BinaryOp};
use moegrad::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn large() -> bool {
    std::env::var("MOEGRAD_BENCH_SCALE").is_ok_and(|s| s == "large")
}

/// Few samples and short windows: GPU timings are steady, and lavapipe is slow.
fn quick(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
}

fn matmul(c: &mut Criterion) {
    let dev = Device::new().expect("benchmarks need a GPU adapter");
    let mut rng = StdRng::seed_from_u64(0);
    let sizes: &[usize] = if large() { &[512, 1024, 2048, 4096] } else { &[64, 128, 256] };
    let mut group = c.benchmark_group("matmul_flops");
    quick(&mut group);
    for &n in sizes {
        let a = Tensor::randn(&dev, &[n, n], 1.0, &mut rng).unwrap();
        let b = Tensor::randn(&dev, &[n, n], 1.0, &mut rng).unwrap();
        group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        for (ta, tb, name) in [(false, false, "nn"), (false, true, "nt"), (true, false, "tn")] {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |bench, _| {
                bench.iter(|| {
                    let c = matmul_t(&a, &b, ta, tb);
                    dev.synchronize();
                    c
                })
            });
        }
    }
    group.finish();
}

fn elementwise(c: &mut Criterion) {
    let dev = Device::new().expect("benchmarks need a GPU adapter");
    let mut rng = StdRng::seed_from_u64(1);
    let sizes: &[usize] = if large() { &[1 << 20, 1 << 24, 1 << 26] } else { &[1 << 14, 1 << 18] };
    let mut group = c.benchmark_group("add_bytes");
    quick(&mut group);
    for &n in sizes {
        let a = Tensor::randn(&dev, &[n], 1.0, &mut rng).unwrap();
        let b = Tensor::randn(&dev, &[n], 1.0, &mut rng).unwrap();
        group.throughput(Throughput::Bytes(3 * 4 * n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| {
                let c = binary(BinaryOp::Add, &a, &b);
                dev.synchronize();
                c
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matmul, elementwise);
criterion_main!(benches);
