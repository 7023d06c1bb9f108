#!/usr/bin/env python3
"""Make tests/data/gguf_decode_fixtures.npz: random blocks of the GGUF types pyllm decodes but does
not run (BF16, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and their values as decoded by llama.cpp's `gguf`
Python package, the reference for tests/test_gguf_decode.py. Needs `gguf` (a reference tool, not
a pyllm dependency):

    python tools/make_dequant_fixtures.py
"""
import os

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "gguf_decode_fixtures.npz")
# type -> (values per block, bytes per block, byte offsets of f16 scale fields, rows, blocks per row)
LAYOUT = {
    GGMLQuantizationType.Q5_0: (32, 22, [0], 3, 40),
    GGMLQuantizationType.Q5_1: (32, 24, [0, 2], 3, 40),
    GGMLQuantizationType.Q4_K: (256, 144, [0, 2], 3, 12),
    GGMLQuantizationType.Q5_K: (256, 176, [0, 2], 3, 12),
    GGMLQuantizationType.Q6_K: (256, 210, [208], 3, 12),
}


def main() -> None:
    rng = np.random.default_rng(2026)
    out = {}
    for t, (values, size, scales, rows, per_row) in LAYOUT.items():
        blocks = rng.integers(0, 256, (rows * per_row, size), dtype=np.uint8)
        for at in scales:  # finite scales of both signs and some zeros; random bytes elsewhere
            s = rng.standard_normal((len(blocks), 1)) * 0.05
            s[rng.random(len(blocks)) < 0.05] = 0.0
            blocks[:, at:at + 2] = s.astype(np.float16).view(np.uint8)
        raw = blocks.reshape(rows, -1)
        out[f"{t.name}_raw"] = raw
        out[f"{t.name}_values"] = dequantize(raw, t).astype(np.float32)
    x = (rng.standard_normal((3, 64)) * 10.0 ** rng.integers(-30, 30, (3, 64))).astype(np.float32)
    raw = (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    out["BF16_raw"] = raw
    out["BF16_values"] = dequantize(raw, GGMLQuantizationType.BF16).astype(np.float32)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
