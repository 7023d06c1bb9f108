"""A GGUF reader in pure Python + numpy (versions 2 and 3, little-endian), validating as it parses.

Every length, count and offset is checked against the file size before it is used, so a
truncated or corrupt file raises FormatError naming the file and the problem, never struct.error,
a huge allocation or an out-of-range read. Tensor data is not read: `tensor_bytes` returns a view
into the read-only mapping.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError
from ..quant import BY_ID
from ..types import PRE_TOKENIZERS, TokenizerData, check_tokenizer_data
from .jsontext import short_repr
from .mapped import MappedFile, check_no_overlap

# metadata value type -> (struct format, numpy dtype) for fixed-size scalars
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"), 1: ("<b", "<i1"), 2: ("<H", "<u2"), 3: ("<h", "<i2"), 4: ("<I", "<u4"),
    5: ("<i", "<i4"), 6: ("<f", "<f4"), 7: ("<?", "<u1"), 10: ("<Q", "<u8"), 11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
STRING, ARRAY = 8, 9
MAX_ELEMENTS = 1 << 62
# TokenizerData field -> the GGUF metadata key that holds it
TOKENIZER_KEYS = {
    "model": "tokenizer.ggml.model", "tokens": "tokenizer.ggml.tokens",
    "token_types": "tokenizer.ggml.token_type", "scores": "tokenizer.ggml.scores",
    "merges": "tokenizer.ggml.merges", "pre": "tokenizer.ggml.pre",
    "bos_id": "tokenizer.ggml.bos_token_id", "eos_id": "tokenizer.ggml.eos_token_id",
    "unk_id": "tokenizer.ggml.unknown_token_id", "pad_id": "tokenizer.ggml.padding_token_id",
    "add_bos": "tokenizer.ggml.add_bos_token", "add_eos": "tokenizer.ggml.add_eos_token",
    "add_space_prefix": "tokenizer.ggml.add_space_prefix",
    "lowercase": "tokenizer.ggml.normalizer.lowercase", "strip_accents": "tokenizer.ggml.normalizer.strip_accents",
}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor's entry: numpy-order shape (GGUF's dims reversed), absolute offset, size."""

    name: str
    type: int
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def type_name(self) -> str:
        """GGUF's name of the tensor's type ("Q4_K")."""
        return BY_ID[self.type].name.upper()


class _Reader:
    """Bounds-checked little-endian reads from a buffer."""

    def __init__(self, buf: Any, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise ValueError(f"truncated: {what} at byte {self.pos} needs {n} bytes, the file has {self.size}")

    def scalar(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def string(self, what: str) -> str:
        n = self.scalar("<Q", what + " length")
        self.need(n, what)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} at byte {self.pos - n} is not valid UTF-8") from None

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            v = self.scalar(_SCALARS[vtype][0], what)
            return bool(v) if vtype == 7 else v
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            if depth > 4:
                raise ValueError(f"{what}: arrays nested too deeply")
            etype = self.scalar("<I", what + " element type")
            count = self.scalar("<Q", what + " length")
            if etype in _SCALARS:
                fmt, dtype = _SCALARS[etype]
                self.need(count * struct.calcsize(fmt), what)
                arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
                self.pos += arr.nbytes
                return arr.astype(bool) if etype == 7 else arr
            if etype not in (STRING, ARRAY):
                raise ValueError(f"{what}: unknown array element type {etype}")
            self.need(count * 8, what)  # each element takes at least 8 bytes
            return [self.value(etype, what, depth + 1) for _ in range(count)]
        raise ValueError(f"{what}: unknown metadata value type {vtype}")


class GGUFFile(MappedFile):
    """A GGUF file mapped read-only, its metadata parsed and every tensor entry validated."""

    KIND = "GGUF file"
    MIN_SIZE = 24

    def _parse(self, size: int) -> None:
        r = _Reader(self._mmap, size)
        magic = bytes(self._mmap[0:4])
        r.pos = 4
        if magic != b"GGUF":
            raise ValueError(f"not a GGUF file (magic {magic!r})")
        self.version = r.scalar("<I", "version")
        if self.version not in (2, 3):
            hint = " (big-endian files are not supported)" if self.version > 0xFFFF else ""
            raise ValueError(f"GGUF version {self.version} is not supported (2 or 3){hint}")
        n_tensors = r.scalar("<Q", "tensor count")
        n_kv = r.scalar("<Q", "metadata count")
        if n_kv > (size - r.pos) // 12:
            raise ValueError(f"metadata count {n_kv} cannot fit in a file of {size} bytes")
        if n_tensors > (size - r.pos) // 24:
            raise ValueError(f"tensor count {n_tensors} cannot fit in a file of {size} bytes")

        self.metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = r.string(f"metadata key {i}")
            if key in self.metadata:
                raise ValueError(f"duplicate metadata key {key!r}")
            vtype = r.scalar("<I", f"type of {key}")
            self.metadata[key] = r.value(vtype, f"metadata {key}")

        self.alignment = self.metadata.get("general.alignment", 32)
        if (isinstance(self.alignment, bool) or not isinstance(self.alignment, int) or self.alignment < 1
                or self.alignment & (self.alignment - 1)):
            raise ValueError(f"general.alignment {self.alignment!r} is not a power of two")

        entries = []
        for i in range(n_tensors):
            name = r.string(f"tensor {i} name")
            n_dims = r.scalar("<I", f"tensor {name} dimension count")
            if not 1 <= n_dims <= 4:
                raise ValueError(f"tensor {name}: {n_dims} dimensions (1 to 4 allowed)")
            dims = [r.scalar("<Q", f"tensor {name} dimensions") for _ in range(n_dims)]
            ttype = r.scalar("<I", f"tensor {name} type")
            offset = r.scalar("<Q", f"tensor {name} offset")
            entries.append((name, dims, ttype, offset))
        self.data_offset = (r.pos + self.alignment - 1) // self.alignment * self.alignment

        self.tensors: dict[str, GGUFTensor] = {}
        for name, dims, ttype, offset in entries:
            if name in self.tensors:
                raise ValueError(f"duplicate tensor name {name!r}")
            if ttype not in BY_ID:
                raise ValueError(f"tensor {name}: unknown type {ttype}")
            tname, block, bsize = BY_ID[ttype].name.upper(), BY_ID[ttype].block, BY_ID[ttype].block_bytes
            count = 1
            for d in dims:
                if d < 1:
                    raise ValueError(f"tensor {name}: dimension {d} in {dims}")
                count *= d
                if count > MAX_ELEMENTS:
                    raise ValueError(f"tensor {name}: dimensions {dims} overflow")
            if dims[0] % block:
                raise ValueError(f"tensor {name}: rows of {dims[0]} values do not fill {tname} blocks of {block}")
            if offset % self.alignment:
                raise ValueError(f"tensor {name}: offset {offset} is not aligned to {self.alignment}")
            nbytes = count // block * bsize
            start = self.data_offset + offset
            if start + nbytes > size:
                raise ValueError(f"tensor {name}: data [{start}, {start + nbytes}) runs past the end "
                                 f"of the file ({size} bytes); truncated?")
            self.tensors[name] = GGUFTensor(name, ttype, tuple(reversed(dims)), start, nbytes)
        check_no_overlap(self.tensors.values())

    def meta(self, key: str, default: Any = None, kind: type | tuple[type, ...] = object) -> Any:
        """A metadata value (arrays as lists), checked against `kind`; FormatError naming the file
        and key if it is missing (with no default) or of another kind."""
        value = self.metadata.get(key, default)
        if value is None:
            if default is None and kind is not object:
                raise FormatError(f"{self.path}: metadata key {key} is missing")
            return default
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if kind is not object and (not isinstance(value, kind) or isinstance(value, bool) and kind is int):
            raise FormatError(f"{self.path}: metadata {key} has an unexpected value {short_repr(value)}")
        return value

    def tokenizer(self) -> TokenizerData:
        """The tokenizer stored in the tokenizer.ggml.* metadata, validated as every reader's is;
        FormatError naming the file and the key of anything pyllm cannot run."""
        model = self.meta(TOKENIZER_KEYS["model"], kind=str)
        spm = model == "llama"
        defaults = {"token_types": [], "scores": None, "merges": [], "add_bos": spm, "add_space_prefix": spm,
                    "add_eos": False, "lowercase": True}
        fields = {name: self.meta(key, defaults.get(name)) for name, key in TOKENIZER_KEYS.items()}
        pad, tokens = fields["pad_id"], fields["tokens"]
        if type(pad) is int and isinstance(tokens, list) and pad >= len(tokens):
            # Llama 2 fine-tunes often name a padding token (32000) their vocabulary lacks; pyllm
            # never pads, and llama.cpp ignores such an id too
            fields["pad_id"] = None
        data = TokenizerData(**fields)
        if model == "gpt2" and fields["pre"] in PRE_TOKENIZERS:
            data.nfc = PRE_TOKENIZERS[fields["pre"]].nfc  # the name stands for its models' Hugging Face tokenizer
        try:
            check_tokenizer_data(data, names={name: "metadata " + key for name, key in TOKENIZER_KEYS.items()})
        except ValueError as exc:
            raise FormatError(f"{self.path}: {exc}") from None
        return data
