"""Byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen2): each pre-tokenized word's UTF-8 bytes are
mapped to printable characters, then merged by merge rank, lowest first."""
from __future__ import annotations

from ..errors import FormatError
from ..types import IGNORE_MERGES
from .pretokenize import BYTE_TO_CHAR, CHAR_TO_BYTE, PreTokenizer


class ByteLevelBPE:
    """GPT-2 style BPE over byte-mapped characters, merges applied lowest rank first."""

    def __init__(self, tokens: list[str], merges: list[str], pre: str | None, ignore_merges: bool):
        self.pre_tokenizer = PreTokenizer(pre or "gpt2")
        self.ignore_merges = ignore_merges or self.pre_tokenizer.name in IGNORE_MERGES
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(merges):
            a, sep, b = merge.partition(" ")
            if not sep:
                raise FormatError(f"merge {rank} ({merge!r}) is not two tokens separated by a space")
            self.ranks.setdefault((a, b), rank)
        self.cache: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str, at_start: bool = True) -> list[int]:
        """Token ids of text (no special tokens); words seen before come from a cache."""
        ids: list[int] = []
        cache, translate = self.cache, BYTE_TO_CHAR  # str.translate maps latin-1 code points = bytes
        for piece in self.pre_tokenizer.split(text):
            word = piece.encode("utf-8").decode("latin-1").translate(translate)
            hit = cache.get(word)
            if hit is None:
                hit = self._bpe(word)
                if len(cache) < 200_000:
                    cache[word] = hit
            ids.extend(hit)
        return ids

    def _bpe(self, word: str) -> tuple[int, ...]:
        vocab = self.vocab
        if self.ignore_merges and word in vocab:
            return (vocab[word],)
        parts = list(word)
        ranks = self.ranks
        while len(parts) > 1:
            best, best_rank = None, None
            for i in range(len(parts) - 1):
                r = ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = (parts[i], parts[i + 1]), r
            if best is None:
                break
            a, b = best
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        try:
            return tuple(vocab[p] for p in parts)
        except KeyError as exc:
            raise FormatError(f"byte-level BPE produced {exc.args[0]!r}, which is not in the vocabulary") from None

    def token_bytes(self, token: str) -> bytes:
        """The bytes a token's byte-mapped characters stand for."""
        try:
            return bytes(CHAR_TO_BYTE[c] for c in token)
        except KeyError:  # not byte-mapped (an added token's literal text)
            return token.encode("utf-8")
