#!/usr/bin/env bash
# One call of the workplace's GPU machine: Vulkan loaders, then the named steps, each under
# its own time limit, with its output in $OUT/<step>.log (stderr in <step>.err) and the
# tails printed. The JSON of `pytorch` and `torch` is then a report that
# `moegrad bench --report pytorch.log --against torch.log` sets side by side.
#
#   bash benches/gpu_run.sh goals pytorch
#   bash benches/gpu_run.sh torch profile
#   bash benches/gpu_run.sh suite ops
#
# The device tool ends a call after 600 s, so keep the steps' limits (below) in one call
# under that: the three calls above take at most 480, 480 and 520 s.
# Expects the loaders' .debs in .gl/ and release binaries (moegrad, suite, core_tests,
# models_tests) packed in .dev.tgz, both carried with the call:
# `bash benches/gpu_prepare.sh` makes them here.
set -u
if [ -f .dev.tgz ]; then mkdir -p .dev && tar -xzf .dev.tgz -C .dev; fi
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
# Tests that find their data through CARGO_MANIFEST_DIR were built in /work/main.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"

step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name ($*)"
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>"$OUT/$name.err"
    echo "rc=$? in $((SECONDS - start)) s"
    grep -v XDG_RUNTIME "$OUT/$name.err" | tail -n 10
    tail -n "${TAIL:-25}" "$OUT/$name.log"
}

run_step() {
    case $1 in
        devices) step devices 60 .dev/moegrad devices ;;
        ops) step ops 120 .dev/core_tests --test-threads 4 ;;
        suite) step suite 110 .dev/suite --test-threads 8 ;;
        units) step units 120 .dev/models_tests ;;
        pytorch) step pytorch 120 .dev/moegrad bench --suite pytorch --json ;;
        kernels) step kernels 60 .dev/moegrad bench --suite kernels --json ;;
        # One rank: the read-back and upload of the d512 LM's gradients and what the buckets hide
        # (two ranks need Open MPI on the machine).
        dist) step dist 120 .dev/moegrad bench --suite dist --iters 10 ;;
        # The two goals still open: softmax and the router, with subgroup paths and
        # without (MOEGRAD_SUBGROUPS=off), and with .dev/moegrad-base, a build of an
        # earlier commit, for a before/after in the same session (RMSNorm, cross-entropy,
        # add, gelu and the expert rows too: their loads changed after the H100 run).
        # Attention and the optimizer pass, which the base build has no workloads for,
        # the same two ways; attention also at the 128x128 tiles it took at the H100 run
        # (MOEGRAD_MATMUL_TILES), to check the 64x64 tiles chosen for its head-wide
        # products since. Then every softmax row size on long rows and on attention's
        # (softmax_threads_*, causal_softmax_*_threads_*), and attention's at its default,
        # packed layout (causal_softmax_*_layout_*), to set the GPU default. The current
        # build sets up only the inputs of the workloads --only selects; the base build
        # knows no lists and sets up every workload's inputs (seconds at GPU shapes) on
        # each invocation.
        goals) step goals 240 bash -c 'k=rms_norm,cross_entropy,attention,add,gelu,adamw,_slots; for b in .dev/moegrad "MOEGRAD_SUBGROUPS=off .dev/moegrad"; do echo "$b"; env $b bench --suite pytorch --only softmax,router --profile; env $b bench --suite kernels --only $k; done; echo "attention at 128x128 tiles"; MOEGRAD_MATMUL_TILES=128x128x8/8x8 .dev/moegrad bench --suite kernels --only attention; echo .dev/moegrad-base; for w in softmax router; do .dev/moegrad-base bench --suite pytorch --only $w --profile; done; for w in rms_norm cross_entropy add gelu _slots; do .dev/moegrad-base bench --suite kernels --only $w; done; .dev/moegrad bench --suite kernels --only _threads_,_layout_' ;;
        profile) step profile 300 bash -c '.dev/moegrad bench --suite pytorch --profile && .dev/moegrad bench --suite kernels --profile' ;;
        torch) step torch 70 python3 benches/pytorch_reference.py --json ;;
        # The MoE layers and LM steps through torch.compile (bf16 autocast for _f16).
        torch_compile) step torch_compile 100 python3 benches/pytorch_reference.py --json --compile default ;;
        table) for t in devices pytorch torch suite kernels torch_compile; do run_step $t; done ;;
        # TopK against the Default MoE on GPT-2 shards of the corpus, one seed each; the
        # runs stay on the machine, their metrics, configs, table and plots come back.
        compare) step compare 330 bash -c '.dev/moegrad data prepare --tokenizer gpt2 --out /tmp/shards data/shakespeare.txt && .dev/moegrad compare --config configs/compare-gpu.toml --seeds 1 --ffn topk,default --set "data.path=\"/tmp/shards\"" --out /tmp/compare-gpu --quiet; rc=$?; mkdir -p "$OUT/compare-gpu" && cd /tmp/compare-gpu && find . \( -name "*.json" -o -name "*.jsonl" -o -name "*.csv" -o -name "*.toml" -o -name "*.png" -o -name "*.svg" \) -print0 | tar --null -cf - -T - | tar -xf - -C "$OUT/compare-gpu"; exit $rc' ;;
        torch_tf32) step torch_tf32 180 python3 benches/pytorch_reference.py --json --tf32 ;;
        *) echo "unknown step $1" ;;
    esac
}

for s in "$@"; do run_step "$s"; done
