#!/usr/bin/env python3
"""Write the seed corpora of the fuzzers: valid messages, under several steering bytes.

Usage: make_corpus.py OUTDIR   (writes OUTDIR/decoder/ and OUTDIR/encoder/)
Deterministic; safe to re-run (files are named by content).
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import sys

# The repository's root: the seeds are tests/wirebytes.py's examples of every response.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.wirebytes import response_examples, servers_message  # noqa: E402

# Steering bytes (see fuzz_decoder.py): fresh, single feed / persistent / skip_rows /
# wrong reader / 3-byte chunks with end_result+reset / 1-byte chunks / SERVERS format 0.
DECODER_FLAGS = [(0x00, 0x00), (0x02, 0x01), (0x01, 0x00), (0x04, 0x02), (0x08, 0x05),
                 (0xA2, 0x03), (0x30, 0x02), (0x40, 0x00), (0x10, 0x03)]


def write(directory: str, data: bytes) -> None:
    os.makedirs(directory, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    seeds = response_examples()
    for name, data in seeds.items():
        for flags, knob in DECODER_FLAGS:
            if name != "servers1" and flags == 0x40:
                continue
            write(os.path.join(out, "decoder"), bytes([flags, knob]) + data)
    servers0 = servers_message([(1, "127.0.0.1:9001")])  # format 0: no roles
    write(os.path.join(out, "decoder"), bytes([0x40, 0]) + servers0)
    # The encoder fuzzer reads its input through atheris.FuzzedDataProvider:
    # any bytes are valid, seeds just start it in different places.
    rng = random.Random(6)
    for size in (0, 4, 16, 64, 256, 1024, 4096):
        for _ in range(4):
            write(os.path.join(out, "encoder"), bytes(rng.getrandbits(8) for _ in range(size)))
    for word in (0, 1, 255, 256, 300, 0xFFFFFFFF):
        write(os.path.join(out, "encoder"), struct.pack("<I", word) * 64)
    n_dec = len(os.listdir(os.path.join(out, "decoder")))
    n_enc = len(os.listdir(os.path.join(out, "encoder")))
    print(f"seed corpus: {n_dec} decoder inputs, {n_enc} encoder inputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
