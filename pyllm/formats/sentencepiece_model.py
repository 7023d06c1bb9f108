"""Read a SentencePiece `tokenizer.model` (a protobuf ModelProto) without the protobuf library.

Only the fields a BPE tokenizer needs are read: the pieces (text, score, type), the trainer's
model type and special ids, and the normalizer's whitespace rules. Every length is bounded by the
bytes that remain, and every field read must have its declared wire type: a malformed file is a
FormatError naming the file, the field and the byte offset, never a huge allocation.
"""
from __future__ import annotations

import math
import struct
from typing import Iterator

from ..errors import FormatError
from ..types import BYTE, NORMAL, TokenizerData
from .mapped import read_side_file

BPE = 2  # TrainerSpec.model_type
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5  # protobuf wire types
WIRE_NAMES = {VARINT: "varint", FIXED64: "64-bit", LENGTH: "length-delimited", FIXED32: "32-bit"}

# field number -> (name, wire type) of the fields read, per message
MODEL_FIELDS = {1: ("pieces", LENGTH), 2: ("trainer_spec", LENGTH), 3: ("normalizer_spec", LENGTH)}
PIECE_FIELDS = {1: ("piece", LENGTH), 2: ("score", FIXED32), 3: ("type", VARINT)}
TRAINER_FIELDS = {3: ("model_type", VARINT), 40: ("unk_id", VARINT), 41: ("bos_id", VARINT),
                  42: ("eos_id", VARINT), 43: ("pad_id", VARINT)}
NORMALIZER_FIELDS = {1: ("name", LENGTH), 3: ("add_dummy_prefix", VARINT),
                     4: ("remove_extra_whitespaces", VARINT), 5: ("escape_whitespaces", VARINT)}


def _varint(buf: bytes, pos: int, base: int) -> tuple[int, int]:
    """The varint at buf[pos] and the position after it (base: buf's offset in the file, for messages)."""
    value, shift, start = 0, 0, pos
    while True:
        if pos >= len(buf):
            raise FormatError(f"truncated varint at byte {base + start}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise FormatError(f"varint at byte {base + start} is longer than 64 bits")


def _fields(buf: bytes, base: int = 0) -> Iterator[tuple[int, int, int | bytes, int, int]]:
    """(field number, wire type, value, field's offset in the file, value's offset) for each field
    of a message: ints for varint/fixed, bytes for length-delimited (whose length must fit in what
    remains). base is buf's offset in the file."""
    pos = 0
    while pos < len(buf):
        at = base + pos
        key, pos = _varint(buf, pos, base)
        field, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos, base)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if pos + size > len(buf):
                raise FormatError(f"field {field} at byte {at}: truncated {WIRE_NAMES[wire]} value")
            value, pos = int.from_bytes(buf[pos:pos + size], "little"), pos + size
        elif wire == LENGTH:
            n, pos = _varint(buf, pos, base)
            if n > len(buf) - pos:
                raise FormatError(f"field {field} at byte {at}: length {n} runs past the end of its "
                                  f"message ({len(buf) - pos} bytes remain)")
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise FormatError(f"field {field} at byte {at}: unsupported protobuf wire type {wire}")
        yield field, wire, value, at, base + pos - (len(value) if isinstance(value, bytes) else 0)


def _checked(what: str, known: dict[int, tuple[str, int]], field: int, wire: int, at: int) -> bool:
    """Whether a field is one pyllm reads; FormatError if it is but has another wire type."""
    if field not in known:
        return False
    name, want = known[field]
    if wire != want:
        raise FormatError(f"{what}.{name} (field {field}) at byte {at} has wire type {wire} "
                          f"({WIRE_NAMES.get(wire)}), not {want} ({WIRE_NAMES[want]})")
    return True


def _message(buf: bytes, base: int, what: str, known: dict[int, tuple[str, int]]) -> dict[int, int | bytes]:
    """The known fields of a sub-message, wire types checked (a later field overrides an earlier)."""
    return {f: v for f, wire, v, at, _ in _fields(buf, base) if _checked(what, known, f, wire, at)}


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _parse(buf: bytes) -> tuple[TokenizerData, bool]:
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    trainer: dict[int, int | bytes] = {3: 1, 40: 0, 41: 1, 42: 2, 43: -1}  # proto defaults
    normalizer: dict[int, int | bytes] = {1: b"", 3: 1, 4: 1, 5: 1}
    for field, wire, value, at, value_at in _fields(buf):
        if not _checked("ModelProto", MODEL_FIELDS, field, wire, at):
            continue
        if field == 1:  # SentencePiece piece
            what = f"pieces[{len(tokens)}]"
            piece = {1: b"", 2: 0, 3: NORMAL}
            piece.update(_message(value, value_at, what, PIECE_FIELDS))
            try:
                tokens.append(bytes(piece[1]).decode("utf-8"))
            except UnicodeDecodeError:
                raise FormatError(f"{what} at byte {at}: piece text is not valid UTF-8") from None
            score = struct.unpack("<f", struct.pack("<I", piece[2]))[0]
            if math.isnan(score):
                raise FormatError(f"{what} at byte {at}: score is NaN")
            if not NORMAL <= piece[3] <= BYTE:
                raise FormatError(f"{what} at byte {at}: type {piece[3]} is not a piece type ({NORMAL}..{BYTE})")
            scores.append(score)
            types.append(int(piece[3]))
        elif field == 2:
            trainer.update(_message(value, value_at, "trainer_spec", TRAINER_FIELDS))
        else:
            normalizer.update(_message(value, value_at, "normalizer_spec", NORMALIZER_FIELDS))
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
        v = _signed32(int(trainer[field]))
        return v if 0 <= v < len(tokens) else None

    data = TokenizerData(
        model="llama", tokens=tokens, token_types=types, scores=scores,
        bos_id=special(41), eos_id=special(42), unk_id=special(40), pad_id=special(43),
        add_bos=True, add_eos=False, add_space_prefix=bool(normalizer[3]),
    )
    return data, bool(normalizer[4])


def read_sentencepiece_model(path: str) -> tuple[TokenizerData, bool]:
    """The tokenizer in a SentencePiece model file, and whether it collapses extra whitespace;
    FormatError naming the file (and the field) if it is malformed."""
    buf = read_side_file(path)
    try:
        return _parse(buf)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
