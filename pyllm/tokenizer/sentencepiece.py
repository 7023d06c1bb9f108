"""SentencePiece BPE (Llama 2, TinyLlama, Mistral, Gemma 3): spaces become "▁", adjacent pieces are
merged by the score of their union, characters outside the vocabulary fall back to <0xXX> byte tokens.

Merges never join two pieces across a boundary no vocabulary piece spans, so the text is cut into
words at such boundaries (before a run of "▁", unless some piece holds the character before it
followed by "▁") and each word is merged on its own, the same ids as merging the whole text at
once; words seen before come from a cache."""
from __future__ import annotations

import heapq
import re

from ..types import BYTE, BYTE_PIECE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED
from .bpe import remember


class SentencePieceBPE:
    """SentencePiece BPE: merge the adjacent pair whose union has the best score, leftmost first."""

    def __init__(self, tokens: list[str], scores: list[float], types: list[int], unk_id: int | None,
                 add_space_prefix: bool, remove_extra_whitespaces: bool = False):
        self.tokens, self.scores = tokens, scores
        self.vocab: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if not types or types[i] in (NORMAL, USER_DEFINED, UNKNOWN, CONTROL, BYTE):
                self.vocab.setdefault(t, i)
        self.mergeable = {t: i for t, i in self.vocab.items()
                          if not types or types[i] in (NORMAL, USER_DEFINED)}
        self.byte_ids = {}
        for i, t in enumerate(tokens):
            if (not types or types[i] == BYTE) and BYTE_PIECE.fullmatch(t):
                self.byte_ids[int(t[3:5], 16)] = i
        self.unk_id = unk_id
        self.add_space_prefix = add_space_prefix
        self.remove_extra_whitespaces = remove_extra_whitespaces
        # characters that some piece holds right before a "▁" (Gemma 3's ">▁</"): no word boundary after them
        bridges = sorted({p[k - 1] for p in self.mergeable if "\u2581" in p[1:] for k in range(1, len(p))
                          if p[k] == "\u2581" and p[k - 1] != "\u2581"})
        self._word_start = re.compile("(?<=[^%s])(?=\u2581)" % re.escape("".join(["\u2581"] + bridges)))
        self.cache: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str, at_start: bool = True) -> list[int]:
        """Token ids of text (no special tokens); at_start adds the leading space prefix."""
        if self.remove_extra_whitespaces:
            text = re.sub(" +", " ", text.strip(" "))
        if not text:
            return []
        text = text.replace(" ", "\u2581")
        if self.add_space_prefix and at_start:
            text = "\u2581" + text
        ids: list[int] = []
        cache = self.cache
        for word in self._word_start.split(text):
            hit = cache.get(word)
            ids.extend(remember(cache, word, self._bpe(word)) if hit is None else hit)
        return ids

    def _bpe(self, text: str) -> tuple[int, ...]:
        """The ids of one word: the best-scoring adjacent pair merged first, leftmost among equals."""
        sym = list(text)
        n = len(sym)
        prev, nxt = list(range(-1, n - 1)), list(range(1, n + 1))
        heap: list[tuple[float, int, int, str]] = []
        mergeable, scores = self.mergeable, self.scores

        def push(i: int) -> None:
            j = nxt[i]
            if j < n:
                piece = sym[i] + sym[j]
                tid = mergeable.get(piece)
                if tid is not None:
                    heapq.heappush(heap, (-scores[tid], i, j, piece))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, j, piece = heapq.heappop(heap)
            if sym[i] is None or sym[j] is None or nxt[i] != j or sym[i] + sym[j] != piece:
                continue  # stale entry
            sym[i], sym[j] = piece, None
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prev[nxt[j]] = i
            if prev[i] >= 0:
                push(prev[i])
            push(i)
        ids: list[int] = []
        for s in sym:
            if s is None:
                continue
            tid = self.vocab.get(s)
            if tid is not None:
                ids.append(tid)
                continue
            raw = s.encode("utf-8")
            if all(b in self.byte_ids for b in raw):  # byte fallback
                ids.extend(self.byte_ids[b] for b in raw)
            elif self.unk_id is not None:
                ids.append(self.unk_id)
            # else dropped, as Hugging Face tokenizers drops what neither vocabulary nor bytes cover
        return tuple(ids)

    def token_bytes(self, token: str) -> bytes:
        """The bytes a piece stands for (<0xXX> byte pieces, and ▁ as a space)."""
        if BYTE_PIECE.fullmatch(token):
            return bytes([int(token[3:5], 16)])
        return token.replace("\u2581", " ").encode("utf-8")
