"""Weight types and their block encodings, in numpy: quantize for the converter, dequantize for
checks. Block layouts are GGUF's byte for byte, so a GGUF tensor of these types imports as a copy.
"""
from __future__ import annotations

import numpy as np

QK = 32  # values per block of every quantized type
CHUNK_VALUES = 1 << 20  # values encoded per slice by quantize()

# name -> (GGUF/ggml type id, values per block, bytes per block)
TYPES: dict[str, tuple[int, int, int]] = {
    "f32": (0, 1, 4),
    "f16": (1, 1, 2),
    "q4_0": (2, QK, 18),
    "q4_1": (3, QK, 20),
    "q8_0": (8, QK, 34),
}
TYPE_IDS: dict[int, str] = {tid: name for name, (tid, _, _) in TYPES.items()}


def row_bytes(type_name: str, cols: int) -> int:
    """Bytes of one row of `cols` values; ValueError if cols does not fill whole blocks."""
    _, block, size = TYPES[type_name]
    if cols % block:
        raise ValueError(f"a row of {type_name} needs a multiple of {block} values, not {cols}")
    return cols // block * size


def _blocks(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % QK:
        raise ValueError(f"quantizing needs a 2-D array with a multiple of {QK} columns, got {x.shape}")
    return x.reshape(x.shape[0], -1, QK)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(..., 32) values 0..15 -> (..., 16) bytes: element j in the low nibble of byte j, j+16 in the high one."""
    q = q.astype(np.uint8)
    return q[..., : QK // 2] | (q[..., QK // 2 :] << 4)


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C's roundf (ties away from zero), exact for float32 input."""
    v = np.asarray(v, dtype=np.float64)
    return np.trunc(v + np.copysign(0.5, v))


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16)[..., None].view(np.uint8)


def quantize(x: np.ndarray, type_name: str) -> np.ndarray:
    """Encode a (rows, cols) float array as `type_name`; returns uint8 of shape (rows, row_bytes).

    The rounding follows ggml's reference quantizers, so re-encoding gives the bytes llama.cpp would.
    Large arrays are encoded a slice of rows at a time, so temporaries stay small.
    """
    x = np.asarray(x, dtype=np.float32)
    step = max(1, CHUNK_VALUES // max(x.shape[-1], 1)) if x.ndim == 2 else x.shape[0]
    if x.ndim == 2 and x.shape[0] > step and type_name not in ("f32", "f16"):
        out = np.empty((x.shape[0], row_bytes(type_name, x.shape[1])), dtype=np.uint8)
        for i in range(0, x.shape[0], step):
            out[i:i + step] = _quantize(x[i:i + step], type_name)
        return out
    return _quantize(x, type_name)


def _quantize(x: np.ndarray, type_name: str) -> np.ndarray:
    if type_name == "f32":
        return np.ascontiguousarray(x).view(np.uint8).reshape(x.shape[0], -1)
    if type_name == "f16":
        return np.ascontiguousarray(x.astype(np.float16)).view(np.uint8).reshape(x.shape[0], -1)
    b = _blocks(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        if type_name == "q8_0":
            d = np.abs(b).max(axis=-1) / 127.0
            inv = np.where(d > 0, 1.0 / d, 0.0).astype(np.float32)
            q = round_half_away(b * inv[..., None]).astype(np.int8)
            parts = [_f16_bytes(d), q.view(np.uint8)]
        elif type_name == "q4_0":
            idx = np.abs(b).argmax(axis=-1)
            vmax = np.take_along_axis(b, idx[..., None], axis=-1)[..., 0]  # signed value of max |x|
            d = (vmax / -8.0).astype(np.float32)
            inv = np.where(d != 0, 1.0 / d, 0.0).astype(np.float32)
            q = np.minimum(15, np.trunc(b * inv[..., None] + 8.5)).astype(np.uint8)
            parts = [_f16_bytes(d), _pack_nibbles(q)]
        elif type_name == "q4_1":
            lo, hi = b.min(axis=-1), b.max(axis=-1)
            d = ((hi - lo) / 15.0).astype(np.float32)
            inv = np.where(d != 0, 1.0 / d, 0.0).astype(np.float32)
            q = np.clip(np.trunc((b - lo[..., None]) * inv[..., None] + 0.5), 0, 15).astype(np.uint8)
            parts = [_f16_bytes(d), _f16_bytes(lo), _pack_nibbles(q)]
        else:
            raise ValueError(f"unknown weight type {type_name!r}; known: {', '.join(TYPES)}")
    return np.concatenate(parts, axis=-1).reshape(x.shape[0], -1)


def dequantize(raw: np.ndarray | bytes | memoryview, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Decode the bytes of a tensor of `type_name` with numpy `shape` (last dim contiguous) to float32."""
    data = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.reshape(-1)
    cols = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    if data.size != rows * row_bytes(type_name, cols):
        raise ValueError(f"{data.size} bytes do not hold a {type_name} tensor of shape {tuple(shape)}")
    if type_name == "f32":
        return data.view(np.float32).reshape(shape).copy()
    if type_name == "f16":
        return data.view(np.float16).astype(np.float32).reshape(shape)
    size = TYPES[type_name][2]
    blk = data.reshape(rows, cols // QK, size)
    d = blk[..., 0:2].copy().view(np.float16).astype(np.float32)  # (rows, nb, 1)
    if type_name == "q8_0":
        v = blk[..., 2:].view(np.int8).astype(np.float32) * d
    else:
        qs = blk[..., -QK // 2 :]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
        if type_name == "q4_0":
            v = (q - 8.0) * d
        else:
            m = blk[..., 2:4].copy().view(np.float16).astype(np.float32)
            v = q * d + m
    return v.reshape(shape).astype(np.float32)
