#!/usr/bin/env python3
"""Python's side of `moegrad bench --suite data`: the bundled corpus, repeated 8 times as
the Rust suite does, tokenized with PyPI tiktoken and written as uint16 with numpy, the
way nanoGPT's prepare scripts do it (encode_ordinary, then the end-of-text token).

Run by hand: `python3 benches/tiktoken_prepare.py [--rank-file r50k_base.tiktoken]`.
PyPI tiktoken downloads its rank file on first use; offline, point --rank-file at the
file the Rust crate embeds, decompressed:
    zstd -d ~/.cargo/registry/src/*/tiktoken-3.1.4/src/encodings/r50k_base.tiktoken.zst -o r50k_base.tiktoken
Without tiktoken or a rank file it says so and exits 0.
"""
import argparse
import os
import sys
import tempfile
import time

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def encoding(rank_file):
    import tiktoken

    if rank_file is None:
        return tiktoken.get_encoding("gpt2")
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(rank_file)
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank-file", help="a GPT-2 (r50k_base) .tiktoken rank file, for offline use")
    ap.add_argument("--iters", type=int, default=3, help="timed runs; the best is reported")
    args = ap.parse_args()
    try:
        import numpy as np

        enc = encoding(args.rank_file)
    except Exception as e:  # no tiktoken, no numpy, or no network for the rank file
        print(f"skipped: Python tiktoken is not usable here ({type(e).__name__}: {e}); see --rank-file")
        return 0
    with open(os.path.join(here, "..", "data", "shakespeare.txt"), encoding="utf-8") as f:
        text = f.read() * 8
    mb = len(text.encode("utf-8")) / 1e6
    best_encode, best_prepare = float("inf"), float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.iters):
            t = time.perf_counter()
            ids = enc.encode_ordinary(text)
            best_encode = min(best_encode, time.perf_counter() - t)
            t = time.perf_counter()
            tokens = np.array([enc.eot_token] + enc.encode_ordinary(text), dtype=np.uint16)
            tokens.tofile(os.path.join(tmp, "train.bin"))
            best_prepare = min(best_prepare, time.perf_counter() - t)
    print(f"tiktoken {tiktoken_version()} on {mb:.1f} MB ({len(ids)} tokens), best of {args.iters}")
    print(f"  tokenize/gpt2/1 thread   {mb / best_encode:8.1f} MB/s")
    print(f"  prepare/gpt2 (numpy)     {mb / best_prepare:8.1f} MB/s")
    return 0


def tiktoken_version():
    import tiktoken

    return getattr(tiktoken, "__version__", "?")


if __name__ == "__main__":
    sys.exit(main())
