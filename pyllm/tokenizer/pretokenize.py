"""Pre-tokenization for BPE: the named pre-tokenizers' regex chains (types.PRE_TOKENIZERS) compiled
for Python's `re`, and GPT-2's reversible byte-to-character map.

Python's `re` has no \\p{..}: the classes are built from the Unicode tables (unicode_tables.py), and
\\s is spelled out as Unicode White_Space, as the Oniguruma regexes of `tokenizers` define it.
"""
from __future__ import annotations

import functools
import re

from ..errors import FormatError
from ..types import PRE_TOKENIZERS
from .unicode_tables import LETTER_RANGES, MARK_RANGES, NUMBER_RANGES, PUNCTUATION_RANGES, SYMBOL_RANGES

_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TABLES = {"L": LETTER_RANGES, "N": NUMBER_RANGES, "M": MARK_RANGES, "P": PUNCTUATION_RANGES, "S": SYMBOL_RANGES}
_PROPERTY = re.compile(r"\\p(?:\{([LNMPS])\}|([LNMPS]))")


@functools.lru_cache(maxsize=None)
def _category_class(prefix: str) -> str:
    """Character-class body matching every code point of Unicode category L*, N*, M*, P* or S*."""
    esc = lambda cp: "\\U%08x" % cp  # noqa: E731
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in _TABLES[prefix])


def _expand(pattern: str) -> str:
    """The pattern in Python's `re` syntax: \\p{L} (or \\pL) and its kin, \\s and \\S become
    explicit classes that match Oniguruma's, and $ matches only at the very end."""
    out, i, inside = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            m = _PROPERTY.match(pattern, i)
            if m:
                body = _category_class(m.group(1) or m.group(2))
                out.append(body if inside else f"[{body}]")
                i = m.end()
                continue
            two = pattern[i:i + 2]
            if two == "\\s":
                out.append(_WS if inside else f"[{_WS}]")
            elif two == "\\S" and not inside:
                out.append(f"[^{_WS}]")
            elif two == "\\S":
                raise ValueError(f"\\S inside a character class is not supported: {pattern!r}")
            else:
                out.append(two)
            i += 2
            continue
        if c == "[" and not inside:
            inside = True
            out.append(c)
            if pattern[i + 1:i + 2] == "^":  # a leading ^ negates; a ] right after it is literal
                out.append("^")
                i += 1
        elif c == "]" and inside and out[-1] not in ("[", "^"):
            inside = False
            out.append(c)
        elif c == "$" and not inside:
            out.append(r"\Z")
        else:
            out.append(c)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=None)
def _compiled(pattern: str) -> re.Pattern:
    """The pattern as one capturing group, so re.split keeps the matches between the gaps."""
    rx = re.compile(f"({_expand(pattern)})")
    if rx.groups != 1:
        raise ValueError(f"pre-tokenizer pattern {pattern!r} has capturing groups")
    return rx


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
    """Splits text into the words BPE merges within, as the named pre-tokenizer does."""

    def __init__(self, name: str):
        if name not in PRE_TOKENIZERS:
            raise FormatError(f"unknown pre-tokenizer {name!r}; pyllm knows {', '.join(sorted(PRE_TOKENIZERS))}")
        self.name = name
        self.spec = PRE_TOKENIZERS[name]
        self.regexes = [_compiled(p) for p in self.spec.patterns]

    def split(self, text: str) -> list[str]:
        """The words of text, in order; joined they give text back. Each regex splits every piece
        into its matches and the text between them (re.split with one group returns both)."""
        pieces = [text] if text else []
        for rx in self.regexes:
            out: list[str] = []
            for piece in pieces:
                out.extend(p for p in rx.split(piece) if p)
            pieces = out
        return pieces
