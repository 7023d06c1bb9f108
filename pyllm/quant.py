"""The weight types: one table of every GGUF/ggml type pyllm knows, and their block encodings in numpy.

`TYPES` holds the types the C core multiplies (a weights.bin may hold them); `ALL_TYPES` every type a
GGUF file may name, with `decodable` saying which ones the converter can read. The table is checked
at import against the C core's enum (`PYLLM_TYPE_*`) and its row sizes, so Python and C can never
disagree about a type's number or block layout.

Block layouts are GGUF's byte for byte, so a GGUF tensor of a runnable type imports as a copy.
`quantize` encodes the runnable types with ggml's reference rounding; `dequantize` decodes every
decodable type exactly, in float32 and in ggml's order of operations (for K types the per-sub-block
factors d*scale and dmin*min first), so the values are bit-identical to llama.cpp's and the `gguf`
package's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._native import ffi, lib

CHUNK_VALUES = 1 << 20  # values encoded per slice by quantize()


@dataclass(frozen=True)
class WeightType:
    """One ggml type: its number, its block (values and bytes), what pyllm can do with it."""

    name: str          # lowercase, as weights.bin spells it ("q4_0"); GGUF reports it uppercase
    ggml_id: int       # the GGUF/ggml type number; also the C enum value of a runnable type
    block: int         # values per block (1 for plain floats and integers)
    block_bytes: int   # bytes per block
    runnable: bool = False   # the C core multiplies it
    decodable: bool = False  # dequantize() reads it (the converter can re-encode it)

    def row_bytes(self, cols: int) -> int:
        """Bytes of a row of `cols` values; ValueError if cols does not fill whole blocks."""
        if cols % self.block:
            raise ValueError(f"a row of {self.name} needs a multiple of {self.block} values, not {cols}")
        return cols // self.block * self.block_bytes


QK = 32     # values per block of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1
QK_K = 256  # values per super-block of the K types

ALL_TYPES: dict[str, WeightType] = {t.name: t for t in (
    WeightType("f32", 0, 1, 4, runnable=True, decodable=True),
    WeightType("f16", 1, 1, 2, runnable=True, decodable=True),
    WeightType("q4_0", 2, QK, 18, runnable=True, decodable=True),
    WeightType("q4_1", 3, QK, 20, runnable=True, decodable=True),
    WeightType("q5_0", 6, QK, 22, decodable=True),
    WeightType("q5_1", 7, QK, 24, decodable=True),
    WeightType("q8_0", 8, QK, 34, runnable=True, decodable=True),
    WeightType("q8_1", 9, QK, 36),
    WeightType("q2_k", 10, QK_K, 84),
    WeightType("q3_k", 11, QK_K, 110),
    WeightType("q4_k", 12, QK_K, 144, runnable=True, decodable=True),
    WeightType("q5_k", 13, QK_K, 176, runnable=True, decodable=True),
    WeightType("q6_k", 14, QK_K, 210, runnable=True, decodable=True),
    WeightType("q8_k", 15, QK_K, 292),
    WeightType("i8", 24, 1, 1),
    WeightType("i16", 25, 1, 2),
    WeightType("i32", 26, 1, 4),
    WeightType("i64", 27, 1, 8),
    WeightType("f64", 28, 1, 8),
    WeightType("bf16", 30, 1, 2, decodable=True),
)}
BY_ID: dict[int, WeightType] = {t.ggml_id: t for t in ALL_TYPES.values()}
TYPES: dict[str, WeightType] = {name: t for name, t in ALL_TYPES.items() if t.runnable}


def _check_against_c() -> None:
    """ImportError unless the runnable types are exactly the C core's, with its numbers and row sizes."""
    c_enum = {name[len("PYLLM_TYPE_"):].lower(): value
              for value, name in ffi.typeof("enum pyllm_type").elements.items()}
    ours = {name: t.ggml_id for name, t in TYPES.items()}
    if c_enum != ours:
        raise ImportError(f"pyllm's weight-type table {ours} disagrees with the C core's {c_enum}: rebuild")
    for t in TYPES.values():
        for cols in (t.block, 7 * t.block):
            if lib.pyllm_row_bytes(t.ggml_id, cols) != t.row_bytes(cols):
                raise ImportError(f"the C core's row size for {t.name} disagrees with pyllm's table: rebuild")
        if t.block > 1 and lib.pyllm_row_bytes(t.ggml_id, t.block + 1) != 0:
            raise ImportError(f"the C core accepts rows of {t.name} that do not fill its blocks: rebuild")


_check_against_c()


def weight_type(name: str) -> WeightType:
    """The table entry of a type name; ValueError naming the known ones."""
    t = ALL_TYPES.get(name)
    if t is None:
        raise ValueError(f"unknown weight type {name!r}; known: {', '.join(ALL_TYPES)}")
    return t


def row_bytes(type_name: str, cols: int) -> int:
    """Bytes of one row of `cols` values; ValueError if cols does not fill whole blocks."""
    return weight_type(type_name).row_bytes(cols)

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
            raise ValueError(f"cannot encode {type_name!r}; the encodable types are f32, f16, q8_0, q4_0, q4_1")
    return np.concatenate(parts, axis=-1).reshape(x.shape[0], -1)


def _dequantize_runnable(data: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    cols = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    if data.size != rows * row_bytes(type_name, cols):
        raise ValueError(f"{data.size} bytes do not hold a {type_name} tensor of shape {tuple(shape)}")
    if type_name == "f32":
        return data.view(np.float32).reshape(shape).copy()
    if type_name == "f16":
        return data.view(np.float16).astype(np.float32).reshape(shape)
    size = TYPES[type_name].block_bytes
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


# ------------------------------------------------------------------------------------------------
# Decoders of ggml's block_q5_0, block_q5_1 (which the converter reads but the engine does not run),
# block_q4_K, block_q5_K and block_q6_K

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


def dequantize(raw: np.ndarray | bytes | memoryview, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Decode the bytes of a tensor of `type_name` with numpy `shape` (last dim contiguous) to float32."""
    t = weight_type(type_name)
    if not t.decodable:
        decodable = ", ".join(n for n, d in ALL_TYPES.items() if d.decodable)
        raise ValueError(f"{type_name.upper()} cannot be decoded (decodable: {decodable})")
    data = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.reshape(-1)
    if t.runnable and t.block <= QK:  # the K types share their decoders below
        return _dequantize_runnable(data, type_name, tuple(shape))
    count = int(np.prod(shape, dtype=np.int64))
    if shape[-1] % t.block or data.size != count // t.block * t.block_bytes:
        raise ValueError(f"{data.size} bytes do not hold a {t.name.upper()} tensor of shape {tuple(shape)}")
    if t.name == "bf16":
        return (data.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    blocks = data.reshape(-1, t.block_bytes)
    if t.name in ("q5_0", "q5_1"):
        out = _q5(blocks, with_min=t.name == "q5_1")
    elif t.name == "q4_k":
        out = _k_affine(blocks, _nibbles(blocks[:, 16:144], 32))
    elif t.name == "q5_k":
        high = blocks[:, 16:48].reshape(-1, 1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)
        q = _nibbles(blocks[:, 48:176], 32) | ((high & 1).reshape(len(blocks), -1) << 4)
        out = _k_affine(blocks, q)
    else:
        out = _q6_k(blocks)
    return out.reshape(shape)
