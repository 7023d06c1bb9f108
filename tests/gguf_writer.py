"""A minimal GGUF v2/v3 writer, from the format's description, for making test files."""
from __future__ import annotations

import struct


# value type ids
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
        U64: "<Q", I64: "<q", F64: "<d"}


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _infer(value) -> int:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return U32 if 0 <= value < 2**32 else I64
    if isinstance(value, float):
        return F32
    if isinstance(value, str):
        return STRING
    if isinstance(value, (list, tuple)):
        return ARRAY
    raise TypeError(f"cannot store {value!r}")


def _value(vtype: int, value) -> bytes:
    if vtype == STRING:
        return _string(value)
    if vtype == ARRAY:
        items = list(value)
        etype = _infer(items[0]) if items else U32
        if etype == U32 and any(isinstance(v, int) and v < 0 for v in items):
            etype = I32
        return struct.pack("<IQ", etype, len(items)) + b"".join(_value(etype, v) for v in items)
    return struct.pack(_FMT[vtype], value)


class Typed:
    """A metadata value with an explicit GGUF value type."""

    def __init__(self, vtype: int, value):
        self.vtype, self.value = vtype, value


def write_gguf(path, metadata: dict, tensors: list, alignment: int = 32, version: int = 3) -> None:
    """metadata: key -> value (or Typed); tensors: (name, ggml type, numpy shape, raw bytes)."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, value in metadata.items():
        vtype, value = (value.vtype, value.value) if isinstance(value, Typed) else (_infer(value), value)
        out += _string(key) + struct.pack("<I", vtype) + _value(vtype, value)
    offset, blobs = 0, []
    for name, ttype, shape, raw in tensors:
        dims = list(reversed(shape))
        out += _string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ttype, offset)
        blobs.append((offset, bytes(raw)))
        offset = (offset + len(raw) + alignment - 1) // alignment * alignment
    start = (len(out) + alignment - 1) // alignment * alignment
    out += b"\0" * (start - len(out))
    for off, raw in blobs:
        out += b"\0" * (start + off - len(out)) + raw
    with open(path, "wb") as f:
        f.write(out)
