"""Pre-tokenization for byte-level BPE: the named pre-tokenizers' regexes (types.PRE_TOKENIZERS)
compiled for Python's `re`, digit splitting, and GPT-2's reversible byte-to-character map.

Python's `re` has no \\p{..}: the classes are built from the Unicode tables (unicode_tables.py), and
\\s is spelled out as Unicode White_Space, as the Oniguruma regexes of `tokenizers` define it.
"""
from __future__ import annotations

import functools
import re
from typing import Iterable

from ..errors import FormatError
from ..types import PRE_TOKENIZERS
from .unicode_tables import LETTER_RANGES, NUMBER_RANGES

_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


@functools.lru_cache(maxsize=None)
def _category_class(prefix: str) -> str:
    """Character-class body matching every code point of Unicode category L* or N*."""
    table = {"L": LETTER_RANGES, "N": NUMBER_RANGES}[prefix]
    esc = lambda cp: "\\U%08x" % cp  # noqa: E731
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in table)


def _expand(pattern: str) -> str:
    """Replace \\pL, \\pN, \\s and \\S with explicit classes that match Oniguruma's."""
    L, N = _category_class("L"), _category_class("N")
    out, i = [], 0
    while i < len(pattern):
        two = pattern[i:i + 3]
        if two in ("\\pL", "\\pN"):
            body = L if two[2] == "L" else N
            inside = pattern[:i].count("[") > pattern[:i].count("]")
            out.append(body if inside else f"[{body}]")
            i += 3
            continue
        two = pattern[i:i + 2]
        if two in ("\\s", "\\S"):
            inside = pattern[:i].count("[") > pattern[:i].count("]")
            if two == "\\s":
                out.append(_WS if inside else f"[{_WS}]")
            else:  # \S only appears outside classes in these patterns
                out.append(f"[^{_WS}]")
            i += 2
            continue
        out.append(pattern[i])
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=None)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(_expand(pattern))


@functools.lru_cache(maxsize=None)
def _digit_splitter() -> re.Pattern:
    """Splits text into single numeric characters and the runs between them."""
    return re.compile(f"[{_category_class('N')}]|[^{_category_class('N')}]+")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


class PreTokenizer:
    """Splits text into the words byte-level BPE merges within, as the named pre-tokenizer does."""

    def __init__(self, name: str):
        if name not in PRE_TOKENIZERS:
            raise FormatError(f"unknown pre-tokenizer {name!r}; pyllm knows {', '.join(sorted(PRE_TOKENIZERS))}")
        self.name = name
        self.split_digits, pattern = PRE_TOKENIZERS[name]
        self.regex = _compiled(pattern)

    def split(self, text: str) -> Iterable[str]:
        """The words of text, in order; joined they give text back."""
        if not self.split_digits:
            return self.regex.findall(text)
        out = []
        for run in _digit_splitter().findall(text):
            out.extend(self.regex.findall(run) if len(run) > 1 or not run.isnumeric() else [run])
        return out
