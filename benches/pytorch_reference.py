#!/usr/bin/env python3
"""The workloads of `moegrad bench --suite pytorch`, in PyTorch eager, printing the same
JSON keys, so that one command on a GPU machine gives the side-by-side table:

    python3 benches/pytorch_reference.py --json > torch.json
    moegrad bench --suite pytorch --against torch.json

Times are CUDA-event medians over --iters runs after one warm-up. fp32 matmuls run without
TF32 unless --tf32. The `_fp16`/`_f16` keys are the mixed-precision references: f16
tensors for the matmul, autocast with a GradScaler for the LM step (moegrad's
`train.precision = "f16"`). --scale tiny and --device cpu give the small shapes for a quick
check.

--compile MODE runs only the MoE layers and the two LM steps, each through
`torch.compile(mode=MODE)`, under the same keys, so that its report is one more column of
the table; its `_f16` step is bf16 autocast (no loss scaling needed). The MoE layer's
expert counts come to the host (`tolist`), where the graph breaks: what comes after is
compiled for symbolic sizes once a second set of counts is seen, so the runs timed after
the warm-up ones compile nothing.

The copies time a 1 GiB float tensor (16 MiB at --scale tiny) from pageable host memory
into a GPU tensor, and back into a new host tensor, as moegrad's `Tensor::write` and
`to_vec` do; the `_pinned` keys, which moegrad has no counterpart for, do the same from and
into page-locked memory.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, iters, device, warmups=1):
    for _ in range(warmups):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def wall_timed(fn, iters, device):
    """Medians of the wall clock up to the device's finishing, host work included (copies)."""
    fn()
    times = []
    for _ in range(iters):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def result(key, seconds, value, unit, timer):
    return {"key": key, "ms": seconds * 1e3, "value": value, "unit": unit, "peak_fraction": None, "timer": timer}


class MoE(torch.nn.Module):
    """TopK MoE: softmax router without bias, top-k experts weighted by their
    probabilities, GELU expert MLPs; tokens grouped by expert with one sort."""

    def __init__(self, d, f, experts, k):
        super().__init__()
        self.k, self.experts = k, experts
        self.router = torch.nn.Parameter(torch.randn(d, experts) * 0.02)
        self.w_in = torch.nn.Parameter(torch.randn(experts, d, f) * 0.02)
        self.w_out = torch.nn.Parameter(torch.randn(experts, f, d) * 0.02)

    def forward(self, x):
        probs = (x @ self.router).softmax(-1)
        weights, idx = probs.topk(self.k, dim=-1)
        flat = idx.reshape(-1)
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=self.experts).tolist()
        xs = x[order // self.k]
        outs, start = [], 0
        for e, n in enumerate(counts):
            h = F.gelu(xs[start:start + n] @ self.w_in[e], approximate="tanh")
            outs.append(h @ self.w_out[e])
            start += n
        ys = torch.cat(outs) * weights.reshape(-1)[order, None]
        return torch.zeros_like(x).index_add_(0, order // self.k, ys)


class Block(torch.nn.Module):
    def __init__(self, d, heads, f, experts, k):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = torch.nn.RMSNorm(d), torch.nn.RMSNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.out = torch.nn.Linear(d, d, bias=False)
        self.moe = MoE(d, f, experts, k)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)

        def rope(z):
            a, c = z.chunk(2, dim=-1)
            return torch.cat([a * cos - c * sin, a * sin + c * cos], dim=-1)

        y = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, d))
        return x + self.moe(self.n2(x).reshape(b * t, d)).view(b, t, d)


class LM(torch.nn.Module):
    def __init__(self, vocab, d, layers, heads, context, f, experts, k):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d)
        self.blocks = torch.nn.ModuleList(Block(d, heads, f, experts, k) for _ in range(layers))
        self.norm = torch.nn.RMSNorm(d)
        hd = d // heads
        angles = torch.arange(context)[:, None] * 10000.0 ** (-2 * torch.arange(hd // 2) / hd)
        self.register_buffer("cos", angles.cos())
        self.register_buffer("sin", angles.sin())

    def forward(self, ids):
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x, self.cos[: ids.shape[1]], self.sin[: ids.shape[1]])
        return self.norm(x) @ self.embed.weight.T  # tied output projection


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", choices=["gpu", "tiny"], default="gpu")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--compile", metavar="MODE", choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                    help="only the MoE layers and LM steps, through torch.compile(mode=MODE)")
    args = ap.parse_args()
    dev, gpu, iters = args.device, args.scale == "gpu", args.iters
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    timer = "gpu" if dev == "cuda" else "wall"
    torch.manual_seed(0)
    results = []

    # The single kernels, eager only (torch.compile has nothing to fuse in them).
    if not args.compile:
        n = 4096 if gpu else 256
        a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
        s = timed(lambda: a @ b, iters, dev)
        results.append(result(f"matmul_{n}_fp32", s, 2 * n**3 / s / 1e12, "TFLOP/s", timer))
        if dev == "cuda":
            ah, bh = a.half(), b.half()
            s = timed(lambda: ah @ bh, iters, dev)
            results.append(result(f"matmul_{n}_fp16", s, 2 * n**3 / s / 1e12, "TFLOP/s", timer))

        rows, cols = (16384, 4096) if gpu else (512, 1024)
        x = torch.randn(rows, cols, device=dev)
        for name, fn in [("softmax", lambda: x.softmax(-1)), ("log_softmax", lambda: x.log_softmax(-1))]:
            s = timed(fn, iters, dev)
            results.append(result(f"{name}_{rows}x{cols}", s, 8 * rows * cols / s / 1e12, "TB/s", timer))

        tokens = 65536 if gpu else 4096
        logits = torch.randn(tokens, 64, device=dev)
        s = timed(lambda: logits.softmax(-1).topk(2, dim=-1), iters, dev)
        results.append(result(f"router_softmax_top2_{tokens}x64", s, s * 1e6, "us", timer))

    compile_mode = args.compile
    compiled = (lambda m: torch.compile(m, mode=compile_mode)) if compile_mode else (lambda m: m)
    # Compiling happens in the first runs: their time is left out.
    warmups = 3 if compile_mode else 1

    # The H100 table's MoE layer, and a fine-grained one (64 experts of width 512, top 8).
    shapes = [(16384, 1024, 2048, 8, 2), (16384, 1024, 512, 64, 8)] if gpu else [(512, 64, 128, 8, 2), (512, 64, 32, 64, 8)]
    for t, d, f, experts, k in shapes:
        moe = MoE(d, f, experts, k).to(dev)
        moe_fn = compiled(moe)
        xm = torch.randn(t, d, device=dev, requires_grad=True)
        seed = torch.randn(t, d, device=dev)

        def moe_step():
            moe_fn(xm).backward(seed)
            moe.zero_grad(set_to_none=True)
            xm.grad = None

        s = timed(moe_step, iters, dev, warmups)
        results.append(result(f"moe_layer_fwd_bwd_T{t}_d{d}_f{f}_E{experts}_k{k}", s, 12 * t * k * d * f / s / 1e12, "TFLOP/s", timer))

    d, layers, batch, context, vocab = (512, 8, 16, 512, 50304) if gpu else (64, 2, 4, 64, 512)
    model = LM(vocab, d, layers, d // 64, context, 2 * d, 8, 2).to(dev)
    model_fn = compiled(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    ids = torch.randint(0, vocab, (batch, context + 1), device=dev)

    def lm_step():
        loss = F.cross_entropy(model_fn(ids[:, :-1]).reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    lm_key = f"moe_lm_train_step_d{d}_L{layers}_E8_k2_b{batch}x{context}_V{vocab}"
    counters = None
    if dev == "cuda":
        # As moegrad's bench counts it: what a step allocates beyond the model, the
        # optimizer state (made by a first step) and the inputs.
        lm_step()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    s = timed(lm_step, iters, dev, warmups)
    results.append(result(lm_key, s, batch * context / s, "tokens/s", timer))
    if dev == "cuda":
        counters = {"step_memory_mib": (torch.cuda.max_memory_allocated() - before) / 2**20}
    if compile_mode:

        def lm_step_f16():
            with torch.autocast(dev, dtype=torch.bfloat16):
                loss = F.cross_entropy(model_fn(ids[:, :-1]).reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        s = timed(lm_step_f16, iters, dev, warmups)
        results.append(result(lm_key + "_f16", s, batch * context / s, "tokens/s", timer))
    elif dev == "cuda":
        scaler = torch.amp.GradScaler("cuda")

        def lm_step_f16():
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(ids[:, :-1]).reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)

        s = timed(lm_step_f16, iters, dev)
        results.append(result(lm_key + "_f16", s, batch * context / s, "tokens/s", timer))

    # Copies: only between a GPU and the host (on the CPU `.cpu()` copies nothing).
    if not compile_mode and dev == "cuda":
        floats, size = (1 << 28, "1GiB") if gpu else (1 << 22, "16MiB")
        on_gpu = torch.zeros(floats, device=dev)
        for pinned in [False, True]:
            host = torch.arange(floats, dtype=torch.float32)
            host = host.pin_memory() if pinned else host
            back = torch.empty(floats, pin_memory=True) if pinned else None
            suffix = "_pinned" if pinned else ""
            up = wall_timed(lambda: on_gpu.copy_(host), iters, dev)
            down = wall_timed((lambda: back.copy_(on_gpu)) if pinned else (lambda: on_gpu.cpu()), iters, dev)
            for key, s in [(f"copy_host_to_gpu_{size}{suffix}", up), (f"copy_gpu_to_host_{size}{suffix}", down)]:
                results.append(result(key, s, 4 * floats / s / 1e9, "GB/s", "wall"))

    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    tf32 = ", TF32 on" if args.tf32 else ""
    mode = f", torch.compile(mode={compile_mode!r}), bf16 autocast for _f16" if compile_mode else ""
    report = {"suite": "pytorch", "device": f"PyTorch {torch.__version__} on {name}{tf32}{mode}", "results": results, "counters": counters}
    if args.json:
        print(json.dumps(report))
    else:
        for r in results:
            print(f"  {r['key']:<52} {r['ms']:>10.3f} ms  {r['value']:>12.3f} {r['unit']}")
        if counters:
            print(f"  training step: {counters['step_memory_mib']:.0f} MiB beyond the model and optimizer")


if __name__ == "__main__":
    main()
