"""Read a SentencePiece `tokenizer.model` (a protobuf ModelProto) without the protobuf library.

Only the fields a BPE tokenizer needs are read: the pieces (text, score, type), the trainer's
model type and special ids, and the normalizer's whitespace rules.
"""
from __future__ import annotations

import struct
from typing import Iterator

from ..errors import FormatError
from ..types import TokenizerData

BPE = 2  # TrainerSpec.model_type


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise FormatError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise FormatError("varint longer than 64 bits")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each field of a message: ints for varint/fixed, bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise FormatError("truncated 64-bit field")
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise FormatError(f"field {field} runs past the end of its message")
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise FormatError("truncated 32-bit field")
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise FormatError(f"unsupported protobuf wire type {wire}")
        yield field, value


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def read_sentencepiece_model(path: str) -> tuple[TokenizerData, bool]:
    """The tokenizer in a SentencePiece model file, and whether it collapses extra whitespace."""
    with open(path, "rb") as f:
        buf = f.read()
    tokens, scores, types = [], [], []
    trainer: dict[int, int] = {3: 1, 35: 0, 40: 0, 41: 1, 42: 2, 43: -1}  # proto defaults
    normalizer: dict[int, int | bytes] = {1: b"", 3: 1, 4: 1, 5: 1}
    for field, value in _fields(buf):
        if field == 1 and isinstance(value, bytes):  # SentencePiece piece
            piece = {1: b"", 2: 0, 3: 1}
            piece.update(_fields(value))
            try:
                tokens.append(bytes(piece[1]).decode("utf-8"))
            except UnicodeDecodeError:
                raise FormatError(f"piece {len(tokens)} is not valid UTF-8") from None
            scores.append(struct.unpack("<f", struct.pack("<I", piece[2]))[0])
            types.append(int(piece[3]))
        elif field == 2 and isinstance(value, bytes):
            trainer.update((k, v) for k, v in _fields(value) if isinstance(v, int))
        elif field == 3 and isinstance(value, bytes):
            normalizer.update(_fields(value))
    if not tokens:
        raise FormatError("not a SentencePiece model (no pieces)")
    if trainer[3] != BPE:
        raise FormatError(f"SentencePiece model type {trainer[3]} is not supported (only BPE, type 2)")
    name = bytes(normalizer[1]).decode("utf-8", "replace")
    if name not in ("", "identity"):
        raise FormatError(f"SentencePiece normalizer {name!r} is not supported (only identity)")
    if not normalizer[5]:
        raise FormatError("SentencePiece models without whitespace escaping are not supported")

    def special(field: int) -> int | None:
        v = _signed32(trainer[field])
        return v if 0 <= v < len(tokens) else None

    data = TokenizerData(
        model="llama", tokens=tokens, token_types=types, scores=scores,
        bos_id=special(41), eos_id=special(42), unk_id=special(40), pad_id=special(43),
        add_bos=True, add_eos=False, add_space_prefix=bool(normalizer[3]),
    )
    return data, bool(normalizer[4])
