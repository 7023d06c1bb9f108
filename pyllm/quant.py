"""The weight types: one table of every GGUF/ggml type pyllm knows, and their block encodings in numpy.

`TYPES` holds the types the C core multiplies (a weights.bin may hold them); `ALL_TYPES` every type a
GGUF file may name, with `decodable` saying which ones the converter can read. The table is checked
at import against the C core's enum (`PYLLM_TYPE_*`) and its row sizes, so Python and C can never
disagree about a type's number or block layout.

Block layouts are GGUF's byte for byte, so a GGUF tensor of a runnable type imports as a copy.
`quantize` encodes the runnable types and the K types Q4_K, Q5_K and Q6_K as ggml's reference
quantizers do without an importance matrix (quantize_row_*_ref in ggml-quants.c: the same float32
operations in the same order, so the bytes are llama.cpp's); `dequantize` decodes every
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
    WeightType("q5_0", 6, QK, 22, runnable=True, decodable=True),
    WeightType("q5_1", 7, QK, 24, runnable=True, decodable=True),
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
    encode = _ENCODERS.get(type_name)
    if encode is None:
        raise ValueError(f"cannot encode {type_name!r}; the encodable types are {', '.join(ENCODABLE)}")
    size = ALL_TYPES[type_name].block
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % size:
        raise ValueError(f"quantizing {type_name} needs a 2-D array with a multiple of {size} columns, "
                         f"got {x.shape}")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        parts = encode(x.reshape(-1, size))
    return np.concatenate(parts, axis=-1).reshape(x.shape[0], -1)


# ------------------------------------------------------------------------------------------------
# Encoders: (blocks, block values) float32 -> the parts of each block, in its byte order. Every step
# is a float32 operation in the order ggml's C code does it (sums accumulated left to right, as a C
# loop does, not numpy's pairwise sums), so ties round the same way and the bytes match.

F32 = np.float32


def _seq_sum(v: np.ndarray) -> np.ndarray:
    """Float32 sum over the first axis, row by row from the first (a C loop's order; numpy's own
    sums are pairwise). Callers keep a group's values along the first axis, so each step adds two
    contiguous rows."""
    acc = v[0].astype(F32)
    for row in v[1:]:
        acc += row
    return acc


def _signed_absmax(b: np.ndarray) -> np.ndarray:
    """The signed value of the first element of largest magnitude in each row."""
    return np.take_along_axis(b, np.abs(b).argmax(axis=-1)[..., None], axis=-1)[..., 0]


def _inverse(d: np.ndarray) -> np.ndarray:
    return np.where(d != 0, F32(1) / d, F32(0)).astype(F32)


def _q8_0(b: np.ndarray) -> list[np.ndarray]:
    d = (np.abs(b).max(axis=-1) / F32(127)).astype(F32)
    q = round_half_away(b * _inverse(d)[:, None]).astype(np.int8)
    return [_f16_bytes(d), q.view(np.uint8)]


def _q4_0(b: np.ndarray) -> list[np.ndarray]:
    d = (_signed_absmax(b) / F32(-8)).astype(F32)
    q = np.minimum(15, np.trunc(b * _inverse(d)[:, None] + F32(8.5)))
    return [_f16_bytes(d), _pack_nibbles(q)]


def _q4_1(b: np.ndarray) -> list[np.ndarray]:
    lo, hi = b.min(axis=-1), b.max(axis=-1)
    d = ((hi - lo) / F32(15)).astype(F32)
    q = np.clip(np.trunc((b - lo[:, None]) * _inverse(d)[:, None] + F32(0.5)), 0, 15)
    return [_f16_bytes(d), _f16_bytes(lo), _pack_nibbles(q)]


def _fifth_bits(q: np.ndarray) -> np.ndarray:
    """(n, 32) values 0..31 -> (n, 4) bytes: bit j of the little-endian uint32 is bit 4 of value j."""
    bits = ((q.astype(np.uint32) >> 4) & 1) << np.arange(QK, dtype=np.uint32)
    return bits.sum(axis=-1, dtype=np.uint32).astype("<u4")[:, None].view(np.uint8)


def _q5_0(b: np.ndarray) -> list[np.ndarray]:
    d = (_signed_absmax(b) / F32(-16)).astype(F32)
    q = np.minimum(31, np.trunc(b * _inverse(d)[:, None] + F32(16.5))).astype(np.uint8)
    return [_f16_bytes(d), _fifth_bits(q), _pack_nibbles(q & 0x0F)]


def _q5_1(b: np.ndarray) -> list[np.ndarray]:
    lo, hi = b.min(axis=-1), b.max(axis=-1)
    d = ((hi - lo) / F32(31)).astype(F32)
    q = np.clip(np.trunc((b - lo[:, None]) * _inverse(d)[:, None] + F32(0.5)), 0, 31).astype(np.uint8)
    return [_f16_bytes(d), _f16_bytes(lo), _fifth_bits(q), _pack_nibbles(q & 0x0F)]


def _clipped_rint(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """ggml's nearest_int (round half to even) clamped to [lo, hi], as float32."""
    return np.clip(np.rint(v), lo, hi).astype(F32)


def _fit_scale_min(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
                   nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's make_qkx2_quants on (k, n) arrays, n groups of k values (one group per column):
    value ~ scale * L - the_min with L in 0..nmax.

    Starts from the min/max fit, then tries nstep + 1 other grid spacings; for each, the weighted
    least-squares scale and min of its rounding, kept where the weighted squared error is lower.
    Returns (scale, the_min, L); a constant group gives scale 0 and L 0."""
    mn = np.minimum(x.min(axis=0), F32(0))
    mx = x.max(axis=0)
    sum_w = _seq_sum(w)
    sum_x = _seq_sum(w * x)
    flat = mx == mn
    iscale = (F32(nmax) / (mx - mn)).astype(F32)
    scale = (F32(1) / iscale).astype(F32)
    L = _clipped_rint(iscale * (x - mn), 0, nmax)
    diff = scale * L + mn - x
    best = _seq_sum(w * (diff * diff))
    for step in range(nstep + 1):  # later steps measure from the min an earlier one chose, as in C
        factor = F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)
        l = _clipped_rint((factor / (mx - mn)) * (x - mn), 0, nmax)
        wl = w * l
        sum_l, sum_l2, sum_xl = _seq_sum(wl), _seq_sum(wl * l), _seq_sum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        positive = this_min > 0
        this_min = np.where(positive, F32(0), this_min)
        this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
        diff = this_scale * l + this_min - x
        err = _seq_sum(w * (diff * diff))
        better = (D > 0) & (err < best)
        L = np.where(better, l, L)
        best = np.where(better, err, best)
        scale = np.where(better, this_scale, scale)
        mn = np.where(better, this_min, mn)
    scale = np.where(flat, F32(0), scale).astype(F32)
    L = np.where(flat, F32(0), L)
    return scale, (-mn).astype(F32), L


def _k_scale_bytes(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """8 six-bit scales and 8 six-bit mins per super-block -> Q4_K/Q5_K's 12 packed bytes."""
    out = np.empty((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0x0F) | ((lm[:, 4:] & 0x0F) << 4)
    return out


def _six_bits(v: np.ndarray) -> np.ndarray:
    """nearest_int stored in a uint8_t, then MIN(63, .): as the C code does (a negative wraps)."""
    return np.minimum(63, np.rint(v).astype(np.int64) & 0xFF).astype(np.uint8)


def _k_affine_levels(b: np.ndarray, nmax: int, rmin: float, rdelta: float,
                     nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K/Q5_K (quantize_row_q4_K_ref, _q5_K_ref): (d, dmin, 12 scale bytes, 256 levels) per super-block.

    Each 32-value sub-block gets a scale and min fitted with weights rms(x) + |x|; those are coded as
    6-bit multiples of the super-block's d and dmin, and the levels recomputed with the coded ones."""
    n = b.shape[0]
    x = np.ascontiguousarray(b.reshape(n * 8, 32).T)  # (32, sub-blocks)
    rms = np.sqrt(_seq_sum(x * x) / F32(32)).astype(F32)
    scales, mins, L = _fit_scale_min(x, rms + np.abs(x), nmax, rmin, rdelta, nstep)
    scales, mins, L = scales.reshape(n, 8), mins.reshape(n, 8), L.T.reshape(n, 8, 32)
    max_scale = np.maximum(scales.max(axis=-1), F32(0))
    max_min = np.maximum(mins.max(axis=-1), F32(0))
    inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0)).astype(F32)
    inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0)).astype(F32)
    ls = _six_bits(inv_scale[:, None] * scales)
    lm = _six_bits(inv_min[:, None] * mins)
    d = (max_scale / F32(63)).astype(np.float16)
    dmin = (max_min / F32(63)).astype(np.float16)
    sd = d.astype(F32)[:, None] * ls.astype(F32)      # (n, 8) coded scale of each sub-block
    sm = dmin.astype(F32)[:, None] * lm.astype(F32)   # (n, 8) coded min
    again = _clipped_rint((b.reshape(n, 8, 32) + sm[..., None]) / sd[..., None], 0, nmax)
    L = np.where((sd != 0)[..., None], again, L).astype(np.uint8)
    return d, dmin, _k_scale_bytes(ls, lm), L.reshape(n, QK_K)


def _pack_k_nibbles(L: np.ndarray) -> np.ndarray:
    """(n, 256) values -> (n, 128) bytes: each 64 values give 32 bytes, values 0-31 low nibbles, 32-63 high."""
    q = (L & 0x0F).reshape(-1, 4, 2, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(L.shape[0], 128)


def _q4_k(b: np.ndarray) -> list[np.ndarray]:
    d, dmin, sc, L = _k_affine_levels(b, 15, -1.0, 0.1, 20)
    return [d[:, None].view(np.uint8), dmin[:, None].view(np.uint8), sc, _pack_k_nibbles(L)]


def _q5_k(b: np.ndarray) -> list[np.ndarray]:
    d, dmin, sc, L = _k_affine_levels(b, 31, -0.5, 0.1, 15)
    high = (L >> 4).reshape(-1, 8, 32)  # bit k of qh[j]: the 5th bit of value 32k + j
    qh = (high << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8)
    return [d[:, None].view(np.uint8), dmin[:, None].view(np.uint8), sc, qh, _pack_k_nibbles(L)]


GROUP_MAX_EPS = F32(1e-15)  # ggml: a group whose largest magnitude is below this is all zero


def _fit_symmetric(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_qx_quants with rmse_type 1 on (k, n) arrays, n groups of k values (one group per
    column): value ~ scale * (L - nmax), L in 0..2 nmax - 1, fitted by least squares weighted by x^2
    over 19 grid spacings around the max's. Returns (scale, L); a group of zeros gives scale 0, L 0."""
    amax_value = np.take_along_axis(x, np.abs(x).argmax(axis=0)[None, :], axis=0)[0]
    zero = np.abs(amax_value) < GROUP_MAX_EPS
    w = x * x

    def levels(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        l = _clipped_rint(iscale * x, -nmax, nmax - 1)
        return l, _seq_sum((w * x) * l), _seq_sum((w * l) * l)

    l, sumlx, suml2 = levels((F32(-nmax) / amax_value).astype(F32))
    L = l
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        l, sumlx, suml2 = levels((-(F32(nmax) + F32(0.1) * F32(step)) / amax_value).astype(F32))
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = np.where(better, l, L)
        scale = np.where(better, sumlx / suml2, scale).astype(F32)
        best = np.where(better, scale * sumlx, best).astype(F32)
    L = np.where(zero, F32(0), L + F32(nmax))
    return np.where(zero, F32(0), scale).astype(F32), L


def _q6_k(b: np.ndarray) -> list[np.ndarray]:
    """quantize_row_q6_K_ref: 16 groups of 16 with an int8 scale each, a super-block f16 d."""
    n = b.shape[0]
    scales, L = _fit_symmetric(np.ascontiguousarray(b.reshape(n * 16, 16).T), 32)
    scales, L = scales.reshape(n, 16), L.T.reshape(n, 16, 16)
    max_scale = _signed_absmax(scales)
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    iscale = (F32(-128) / max_scale).astype(F32)
    d = (F32(1) / iscale).astype(np.float16)
    sc = (np.minimum(127, np.rint(iscale[:, None] * scales).astype(np.int64)) & 0xFF).astype(np.uint8)
    sd = d.astype(F32)[:, None] * sc.view(np.int8).astype(F32)
    again = _clipped_rint(b.reshape(n, 16, 16) / sd[..., None], -32, 31) + F32(32)
    L = np.where((sd != 0)[..., None], again, L).astype(np.uint8).reshape(n, 2, 4, 32)
    ql = (L[:, :, :2] & 0x0F) | ((L[:, :, 2:] & 0x0F) << 4)            # (n, 2, 2, 32)
    qh = ((L >> 4) << np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]).sum(axis=2, dtype=np.uint8)
    d = np.where(zero, np.float16(0), d)
    ql, qh, sc = (np.where(zero[:, None], 0, a.reshape(n, -1)).astype(np.uint8) for a in (ql, qh, sc))
    return [ql, qh, sc, d[:, None].view(np.uint8)]


_ENCODERS = {"q8_0": _q8_0, "q4_0": _q4_0, "q4_1": _q4_1, "q5_0": _q5_0, "q5_1": _q5_1,
             "q4_k": _q4_k, "q5_k": _q5_k, "q6_k": _q6_k}
ENCODABLE = ("f32", "f16", *_ENCODERS)  # the types quantize() writes


def _dequantize_runnable(data: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    cols = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    if data.size != rows * row_bytes(type_name, cols):
        raise ValueError(f"{data.size} bytes do not hold a {type_name.upper()} tensor of shape {tuple(shape)}")
    if type_name == "f32":
        return data.view(np.float32).reshape(shape).copy()
    if type_name == "f16":
        return data.view(np.float16).astype(np.float32).reshape(shape)
    size = TYPES[type_name].block_bytes
    if type_name in ("q5_0", "q5_1"):
        return _q5(data.reshape(-1, size), with_min=type_name == "q5_1").reshape(shape)
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
# Decoders of the 5-bit types (ggml's block_q5_0, block_q5_1) and of the K types (block_q4_K,
# block_q5_K, block_q6_K)

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
    count = int(np.prod(shape, dtype=np.int64))
    if shape[-1] % t.block or data.size != count // t.block * t.block_bytes:
        raise ValueError(f"{data.size} bytes do not hold a {t.name.upper()} tensor of shape {tuple(shape)}")
    if t.runnable and t.block <= QK:  # the K types have their own decoders below
        return _dequantize_runnable(data, type_name, tuple(shape))
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
