"""A small safetensors writer for tests, written from the format's description (8-byte header
length, JSON header, data), so the reader is checked against an independent producer."""
import json
import struct

import numpy as np


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """bfloat16 encoding by truncation (exact for values with at most 8 significant bits)."""
    return (np.ascontiguousarray(a, dtype="<f4").view("<u4") >> 16).astype("<u2")


def encode(a: np.ndarray, dtype: str) -> bytes:
    if dtype == "F32":
        return np.ascontiguousarray(a, dtype="<f4").tobytes()
    if dtype == "F16":
        return np.ascontiguousarray(a, dtype="<f2").tobytes()
    if dtype == "BF16":
        return bf16_bits(a).tobytes()
    if dtype == "I8":
        return np.ascontiguousarray(a, dtype="i1").tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors: dict, dtype: str = "F32", metadata: dict | None = None) -> None:
    """Write {name: array} (or {name: (array, dtype)}) as one safetensors file."""
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, a in tensors.items():
        a, t = a if isinstance(a, tuple) else (a, dtype)
        data = encode(a, t)
        header[name] = {"dtype": t, "shape": list(np.shape(a)), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for data in chunks:
            f.write(data)
