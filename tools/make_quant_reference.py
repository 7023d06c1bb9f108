#!/usr/bin/env python3
"""Make tests/data/quant_reference.npz: float32 test tensors and the SHA-256 digests of their encodings
by llama.cpp's reference quantizers (quantize_row_<type>_ref in ggml-quants.c, what llama-quantize runs
for these types without an importance matrix), the reference for tests/test_quantize.py.

The quantizers are called through ctypes in llama.cpp's libggml-base (a reference build, not a pyllm
dependency):

    python tools/make_quant_reference.py [path/to/libggml-base.so]

(default: ~/.cache/llama.cpp-ref/build/bin/libggml-base.so).
"""
import ctypes
import hashlib
import os
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quant_reference.npz")
DEFAULT_LIB = os.path.expanduser("~/.cache/llama.cpp-ref/build/bin/libggml-base.so")
# type -> (values per block, bytes per block), ggml's block_<type>
TYPES = {"q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
         "q4_K": (256, 144), "q5_K": (256, 176), "q6_K": (256, 210)}
COLS = 512


def cases() -> dict[str, np.ndarray]:
    """Tensors of (rows, 512) float32 that reach every branch of the quantizers."""
    rng = np.random.default_rng(2027)
    out = {}
    out["normal"] = (rng.standard_normal((6, COLS)) * 0.05).astype(np.float32)
    w = rng.standard_normal((6, COLS)) * 0.02
    w[:, : COLS // 3] += 0.03  # offsets: sub-blocks whose min is above zero
    w[1] = np.abs(w[1])        # all positive
    w[2] = -np.abs(w[2])       # all negative
    out["offset"] = w.astype(np.float32)
    out["heavy_tails"] = (rng.standard_t(2.5, (6, COLS)) * 0.01).astype(np.float32)
    e = np.zeros((12, COLS), dtype=np.float32)
    e[1] = 0.5                                            # constant
    e[2] = -0.25                                          # constant negative
    e[3, 7] = 1.0                                         # one nonzero value
    e[4] = rng.standard_normal(COLS) * 1e-20              # tiny (below f16's range)
    e[5] = rng.standard_normal(COLS) * 1e4                # large
    e[6] = np.tile(np.arange(-16, 16), COLS // 32) * 0.125  # a grid: rounding ties everywhere
    e[7] = rng.integers(-8, 9, COLS) * 0.25               # small multiples: more ties
    e[8] = np.linspace(-1.0, 1.0, COLS)                   # a ramp
    e[9, ::2] = rng.standard_normal(COLS // 2)            # half zeros
    e[10] = rng.standard_normal(COLS) * 0.05
    e[10, 256:] = 0.0                                     # one zero super-block beside a normal one
    e[11] = rng.standard_normal(COLS) * np.repeat(10.0 ** rng.integers(-6, 3, COLS // 16), 16)  # scales by group
    out["edges"] = e
    return out


def quantizer(lib: ctypes.CDLL, name: str):
    f = getattr(lib, f"quantize_row_{name}_ref")
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    f.restype = None
    return f


def encode(lib: ctypes.CDLL, x: np.ndarray, name: str) -> bytes:
    values, size = TYPES[name]
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros(x.size // values * size, dtype=np.uint8)
    quantizer(lib, name)(x.ctypes.data, out.ctypes.data, x.size)
    return out.tobytes()


def main() -> None:
    lib = ctypes.CDLL(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_LIB)
    arrays = {}
    for case, x in cases().items():
        arrays[f"input_{case}"] = x
        for name in TYPES:
            arrays[f"sha256_{case}_{name.lower()}"] = np.array(hashlib.sha256(encode(lib, x, name)).hexdigest())
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}: {len(cases())} tensors x {len(TYPES)} types")


if __name__ == "__main__":
    main()
