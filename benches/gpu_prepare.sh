#!/usr/bin/env bash
# Prepares, on this machine (no GPU needed), everything one call of benches/gpu_run.sh
# carries: the Vulkan loader .debs in .gl/ (the GPU machine has no loader) and release
# builds in .dev/ of the CLI and of the test binaries gpu_run.sh runs, stripped and packed
# into .dev.tgz (about 40 MB: the device tool carries 64 MiB at most, which the binaries
# alone pass). All three are git-excluded. Then, through the device tool, carrying .gl and
# .dev.tgz, one call for the
# whole table (at most 470 s), and a second for the TopK / Default comparison where 6
# minutes of the window remain:
#
#   bash benches/gpu_run.sh table
#   bash benches/gpu_run.sh compare
#
# and back here, the README's table from the first call's reports:
#
#   moegrad bench --report <files>/pytorch.log --against <files>/torch.log \
#       --against <files>/torch_compile.log
#
# Commit the files under benches/results/h200-<date>/ (the H100's stay as history).
# .dev/moegrad-base, a build of an earlier commit for before/after timings, is left as it
# is (build it with `git worktree` at that commit and copy its target/release/moegrad).
set -eu
cd "$(git rev-parse --show-toplevel)"
for d in .gl .dev .dev.tgz; do grep -qx "/$d" .git/info/exclude 2>/dev/null || echo "/$d" >>.git/info/exclude; done
mkdir -p .gl .dev
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    mkdir -p /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
cargo build --release
cp target/release/moegrad .dev/moegrad
# The test executables, found from what cargo reports building: the suite and the unit
# tests of core and models.
cargo test --release --workspace --no-run --message-format=json | python3 -c '
import json, shutil, sys
names = {("suite", "test"): "suite", ("moegrad_core", "lib"): "core_tests",
         ("moegrad_models", "lib"): "models_tests"}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    name = names.get((m["target"]["name"], m["target"]["kind"][0]))
    if name:
        shutil.copy(m["executable"], ".dev/" + name)
        print(".dev/" + name)
'
strip .dev/*
tar -czf .dev.tgz -C .dev .
ls -l .dev .dev.tgz
