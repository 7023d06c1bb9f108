"""Exact float32 decoding of every GGUF tensor type the converter reads, including those the
engine does not run (BF16, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), so they can be re-encoded.

Block layouts are GGUF's (ggml's block_q5_0, block_q5_1, block_q4_K, block_q5_K, block_q6_K with
256-value super-blocks). The arithmetic is ggml's reference dequantization, in float32 and in the
same order (for K types the per-sub-block factors d*scale and dmin*min first), so the values are
bit-identical to llama.cpp's and the `gguf` package's. Every type is decoded over all blocks at
once with numpy.
"""
from __future__ import annotations

import numpy as np

from .quant import TYPES, dequantize

QK_K = 256  # values per K-type super-block

# ggml type id -> (name, values per block, bytes per block) for the types decoded here only
_EXTRA = {30: ("BF16", 1, 2), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 12: ("Q4_K", QK_K, 144),
          13: ("Q5_K", QK_K, 176), 14: ("Q6_K", QK_K, 210)}
DECODABLE: dict[int, str] = {**{tid: name.upper() for name, (tid, _, _) in TYPES.items()},
                             **{tid: name for tid, (name, _, _) in _EXTRA.items()}}


def _f16(b: np.ndarray) -> np.ndarray:
    """(n, 2) bytes -> (n, 1) float32 from little-endian f16."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray, group: int) -> np.ndarray:
    """(n, k) bytes -> (n, 2k) values: each run of `group` bytes gives its low nibbles, then its high ones."""
    n = qs.shape[0]
    q = qs.reshape(n, -1, 1, group) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    return (q & 0x0F).reshape(n, -1)


def _q5(blocks: np.ndarray, with_min: bool) -> np.ndarray:
    d = _f16(blocks[:, 0:2])
    at = 4 if with_min else 2
    qh = np.ascontiguousarray(blocks[:, at:at + 4]).view("<u4")  # (n, 1): bit j = 5th bit of value j
    high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
    q = _nibbles(blocks[:, at + 4:], 16) | (high << 4)
    if with_min:
        return d * q.astype(np.float32) + _f16(blocks[:, 2:4])
    return d * (q.astype(np.int8) - np.int8(16)).astype(np.float32)


def _k_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 packed bytes of Q4_K/Q5_K -> 8 six-bit scales and 8 six-bit mins per super-block."""
    s = s.reshape(-1, 3, 4)
    lo, mid, top = s[:, 0], s[:, 1], s[:, 2]
    scales = np.concatenate([lo & 0x3F, (top & 0x0F) | ((lo >> 2) & 0x30)], axis=-1)
    mins = np.concatenate([mid & 0x3F, (top >> 4) | ((mid >> 2) & 0x30)], axis=-1)
    return scales.astype(np.float32), mins.astype(np.float32)


def _k_affine(blocks: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K: value = (d * scale) * q - (dmin * min), per 32-value sub-block."""
    n = blocks.shape[0]
    scales, mins = _k_scales(blocks[:, 4:16])
    d = (_f16(blocks[:, 0:2]) * scales).reshape(n, 8, 1)
    dm = (_f16(blocks[:, 2:4]) * mins).reshape(n, 8, 1)
    return (d * q.reshape(n, 8, 32).astype(np.float32) - dm).reshape(n, QK_K)


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    ql = _nibbles(blocks[:, 0:128], 64).reshape(n, 8, 32)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    q = (ql | ((qh & 0x03).reshape(n, 8, 32) << 4)).astype(np.int8) - np.int8(32)
    d = _f16(blocks[:, 208:210]) * blocks[:, 192:208].view(np.int8).astype(np.float32)  # (n, 16)
    return (d.reshape(n, 16, 1) * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


def dequantize_gguf(raw: bytes | memoryview | np.ndarray, type_id: int, shape: tuple[int, ...]) -> np.ndarray:
    """Decode a GGUF tensor of ggml type `type_id` and numpy `shape` (last dim contiguous) to float32."""
    if type_id not in DECODABLE:
        raise ValueError(f"ggml type {type_id} cannot be decoded (decodable: {', '.join(DECODABLE.values())})")
    name = DECODABLE[type_id]
    if name.lower() in TYPES:
        return dequantize(raw, name.lower(), tuple(shape))
    data = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.reshape(-1)
    _, block, size = _EXTRA[type_id]
    count = int(np.prod(shape, dtype=np.int64))
    if shape[-1] % block or data.size != count // block * size:
        raise ValueError(f"{data.size} bytes do not hold a {name} tensor of shape {tuple(shape)}")
    if name == "BF16":
        return (data.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    blocks = data.reshape(-1, size)
    if name in ("Q5_0", "Q5_1"):
        out = _q5(blocks, with_min=name == "Q5_1")
    elif name == "Q4_K":
        out = _k_affine(blocks, _nibbles(blocks[:, 16:144], 32))
    elif name == "Q5_K":
        high = blocks[:, 16:48].reshape(-1, 1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)
        q = _nibbles(blocks[:, 48:176], 32) | ((high & 1).reshape(len(blocks), -1) << 4)
        out = _k_affine(blocks, q)
    else:
        out = _q6_k(blocks)
    return out.reshape(shape)
