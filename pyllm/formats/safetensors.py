"""A safetensors reader in pure Python + numpy, validating as the format's own library does.

Layout: an 8-byte little-endian header length N, N bytes of JSON (an object mapping tensor names
to {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional "__metadata__" of strings),
then the data buffer. The rules checked here are the reference implementation's: the header
length is bounded and inside the file, the header is a JSON object starting with "{", dtypes are
known, each tensor's byte range equals its shape times its dtype size, the ranges are contiguous
from 0 in offset order (no gaps, no overlaps) and together cover the whole buffer.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .jsontext import parse_json, short_repr
from .mapped import MappedFile

MAX_HEADER = 100_000_000  # the reference implementation's bound

# dtype name -> bytes per element
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
FLOAT_DTYPES = ("F32", "F16", "BF16")  # what model weights may be stored as


@dataclass(frozen=True)
class SafeTensor:
    """One tensor's entry: dtype name, shape, absolute offset and size in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


class SafetensorsFile(MappedFile):
    """A .safetensors file mapped read-only with its header validated; tensors read as views."""

    KIND = "safetensors file"
    MIN_SIZE = 8

    def _parse(self, size: int) -> None:
        (n,) = struct.unpack("<Q", self._mmap[:8])
        if n > MAX_HEADER:
            raise ValueError(f"header length {n} exceeds the format's limit of {MAX_HEADER} bytes")
        if 8 + n > size:
            raise ValueError(f"header length {n} runs past the end of the file ({size} bytes); truncated?")
        raw = bytes(self._mmap[8:8 + n])
        if not raw.startswith(b"{"):
            raise ValueError("header does not start with '{'; not a safetensors file?")
        try:
            header = parse_json(raw)
        except ValueError as exc:
            raise ValueError(f"header is {exc}") from None
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("__metadata__ must map strings to strings")
        self.metadata: dict[str, str] = meta

        data_start, buffer_size = 8 + n, size - 8 - n
        entries = []
        for name, info in header.items():
            if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
                raise ValueError(f"tensor {name}: entry must have exactly dtype, shape and data_offsets")
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
                raise ValueError(f"tensor {name}: unknown dtype {dtype!r}")
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                raise ValueError(f"tensor {name}: shape {shape!r} is not a list of non-negative integers")
            if (not isinstance(offsets, list) or len(offsets) != 2
                    or not all(type(o) is int and o >= 0 for o in offsets) or offsets[1] < offsets[0]):
                raise ValueError(f"tensor {name}: data_offsets {offsets!r} are not [begin, end]")
            nbytes = 0 if 0 in shape else DTYPE_SIZES[dtype]
            for d in shape:  # stop once past the data: a product of a million huge dims would not end
                nbytes *= d
                if nbytes > buffer_size:
                    raise ValueError(f"tensor {name}: {dtype} {short_repr(shape)} needs more than the "
                                     f"{buffer_size} bytes of tensor data the file holds")
            if nbytes != offsets[1] - offsets[0]:
                raise ValueError(f"tensor {name}: {dtype} {shape} needs {nbytes} bytes "
                                 f"but data_offsets {offsets} hold {offsets[1] - offsets[0]}")
            entries.append((offsets[0], offsets[1], name, dtype, tuple(shape)))

        entries.sort()
        end = 0
        for begin, stop, name, dtype, shape in entries:
            if begin != end:
                what = "overlaps the previous tensor" if begin < end else f"leaves a gap after byte {end}"
                raise ValueError(f"tensor {name}: data_offsets begin at {begin}, which {what}")
            end = stop
            self.tensors[name] = SafeTensor(name, dtype, shape, data_start + begin, stop - begin)
        if end != buffer_size:
            if end > buffer_size:
                raise ValueError(f"tensor data needs {end} bytes but the file holds {buffer_size} after "
                                 "the header; truncated?")
            raise ValueError(f"{buffer_size - end} bytes after the last tensor belong to no tensor")

    def array(self, name: str) -> np.ndarray:
        """A float tensor as float32 (a copy for F16/BF16, a read-only view for F32)."""
        t = self.tensors[name]
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{self.path}: tensor {name} is {t.dtype}; weights must be {', '.join(FLOAT_DTYPES)}")
        raw = self.tensor_bytes(name)
        if t.dtype == "F32":
            return np.frombuffer(raw, dtype="<f4").reshape(t.shape)
        if t.dtype == "F16":
            return np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(t.shape)
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16  # bfloat16 = top half of a float32
        return bits.view(np.float32).reshape(t.shape)
