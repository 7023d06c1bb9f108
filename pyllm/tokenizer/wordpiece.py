"""WordPiece (BERT and its embedding models, e.g. BGE): BERT's normaliser (clean the text, space out
CJK characters, strip accents, lowercase), a split on whitespace and punctuation, then the longest
vocabulary match at each position of a word; a word with any part unmatched is one unknown token.

GGUF spells the vocabulary as llama.cpp does: a word-initial piece as "▁piece", a continuation
(Hugging Face's "##piece") as the bare "piece".
"""
from __future__ import annotations

import unicodedata

from ..types import NORMAL

MAX_WORD_CHARS = 100  # longer words are one unknown token (Hugging Face's max_input_chars_per_word)
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))  # the CJK blocks BERT spaces out


def _is_cjk(cp: int) -> bool:
    return any(a <= cp <= b for a, b in _CJK)


def _is_punctuation(c: str) -> bool:
    """ASCII punctuation and symbols, and Unicode punctuation (P*), as BERT splits them."""
    cp = ord(c)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 \
        or unicodedata.category(c).startswith("P")


class WordPiece:
    """BERT's uncased (or cased) WordPiece over a "▁"-spelled vocabulary."""

    def __init__(self, tokens: list[str], types: list[int], unk_id: int | None, lowercase: bool,
                 strip_accents: bool):
        self.initial: dict[str, int] = {}
        self.continuation: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if types and types[i] != NORMAL:
                continue
            if t.startswith("\u2581"):
                self.initial.setdefault(t[1:], i)
            else:
                self.continuation.setdefault(t, i)
        self.longest = max(map(len, tokens), default=1)
        self.unk_id = unk_id
        self.lowercase, self.strip_accents = lowercase, strip_accents

    def normalize(self, text: str) -> str:
        """BERT's normaliser: control characters dropped, whitespace made spaces, CJK characters
        spaced out, then accents stripped (NFD without marks) and lowercased as configured."""
        out = []
        for c in text:
            cp = ord(c)
            if c in "\t\n\r" or unicodedata.category(c) == "Zs":
                out.append(" ")
            elif cp == 0 or cp == 0xFFFD or unicodedata.category(c).startswith("C"):
                continue
            elif _is_cjk(cp):
                out.append(f" {c} ")
            else:
                out.append(c)
        text = "".join(out)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        return text.lower() if self.lowercase else text

    def words(self, text: str) -> list[str]:
        """The normalised text split on whitespace, each punctuation character a word of its own."""
        words: list[str] = []
        for chunk in self.normalize(text).split():
            start = 0
            for i, c in enumerate(chunk):
                if _is_punctuation(c):
                    if i > start:
                        words.append(chunk[start:i])
                    words.append(c)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def encode(self, text: str, at_start: bool = True) -> list[int]:
        """Token ids of text: each word as its longest-first pieces, or the unknown token."""
        ids: list[int] = []
        for word in self.words(text):
            pieces = self._word(word)
            if pieces is None:
                if self.unk_id is not None:
                    ids.append(self.unk_id)
            else:
                ids.extend(pieces)
        return ids

    def _word(self, word: str) -> list[int] | None:
        """The ids of one word, longest match first at each position; None if a part has no match."""
        if len(word) > MAX_WORD_CHARS:
            return None
        out, start = [], 0
        while start < len(word):
            table = self.initial if start == 0 else self.continuation
            for end in range(min(len(word), start + self.longest), start, -1):
                tid = table.get(word[start:end])
                if tid is not None:
                    out.append(tid)
                    start = end
                    break
            else:
                return None
        return out

    def token_bytes(self, token: str) -> bytes:
        """The bytes a piece stands for: a word-initial piece with its space, a continuation bare."""
        return token.replace("\u2581", " ").encode("utf-8")
