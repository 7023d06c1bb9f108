"""BPE with ranked merges. Byte-level (GPT-2, SmolLM2, Llama 3, Qwen2): each pre-tokenized word's
UTF-8 bytes are mapped to printable characters, then merged by merge rank, lowest first. Raw
(Gemma 4): the word's characters themselves, spaces written "▁", with <0xXX> byte tokens for what
the vocabulary lacks."""
from __future__ import annotations

import heapq
import unicodedata

from ..errors import FormatError
from ..types import BYTE_PIECE
from .pretokenize import BYTE_TO_CHAR, CHAR_TO_BYTE, PreTokenizer


CACHE_WORDS, CACHE_WORD_LENGTH = 200_000, 256  # the word cache's bound: at most ~50 MiB of words


def remember(cache: dict[str, tuple[int, ...]], word: str, ids: tuple[int, ...]) -> tuple[int, ...]:
    """Keep a word's freshly merged ids in the word cache while it is within its bound; the ids."""
    if len(cache) < CACHE_WORDS and len(word) <= CACHE_WORD_LENGTH:
        cache[word] = ids
    return ids


class ByteLevelBPE:
    """GPT-2 style BPE, merges applied lowest rank first, over byte-mapped characters (or, when the
    pre-tokenizer says so, over the raw characters with <0xXX> byte fallback)."""

    def __init__(self, tokens: list[str], merges: list[str], pre: str | None, ignore_merges: bool,
                 nfc: bool = False):
        self.pre_tokenizer = PreTokenizer(pre or "gpt2")
        self.ignore_merges = ignore_merges or self.pre_tokenizer.spec.ignore_merges
        self.byte_level = self.pre_tokenizer.spec.byte_level
        self.nfc = nfc
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(merges):
            a, sep, b = merge.partition(" ")
            if not sep:
                raise FormatError(f"merge {rank} ({merge!r}) is not two tokens separated by a space")
            self.ranks.setdefault((a, b), rank)
        self.cache: dict[str, tuple[int, ...]] = {}
        self.byte_ids = {} if self.byte_level else {int(t[3:5], 16): i for t, i in self.vocab.items()
                                                    if BYTE_PIECE.fullmatch(t)}

    def encode(self, text: str, at_start: bool = True) -> list[int]:
        """Token ids of text (no special tokens); words seen before come from a cache."""
        ids: list[int] = []
        cache, translate = self.cache, BYTE_TO_CHAR  # str.translate maps latin-1 code points = bytes
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        if not self.byte_level:
            text = text.replace(" ", "\u2581")
        for piece in self.pre_tokenizer.split(text):
            word = piece.encode("utf-8").decode("latin-1").translate(translate) if self.byte_level else piece
            hit = cache.get(word)
            ids.extend(remember(cache, word, self._bpe(word)) if hit is None else hit)
        return ids

    def _bpe(self, word: str) -> tuple[int, ...]:
        """The ids of one word: merges applied lowest rank first, leftmost first among equals (as
        Hugging Face `tokenizers` does), through a heap of candidate pairs over a linked list of
        symbols, so a word of n characters costs O(n log n) however long it is. Symbols the
        vocabulary has no token for are dropped."""
        vocab = self.vocab
        if word in vocab and (self.ignore_merges or not self.byte_level and word.strip("\n") == ""):
            return (vocab[word],)  # (Gemma 4 takes a run of newlines whole when it is a token, as llama.cpp does)
        ranks, sym, n = self.ranks, list(word), len(word)
        nxt, prv = list(range(1, n + 1)), list(range(-1, n - 1))  # the linked list over sym
        heap = [(r, i) for i in range(n - 1) if (r := ranks.get((sym[i], sym[i + 1]))) is not None]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = nxt[i]
            # a pair's rank names it (one rank per pair), so an entry whose pair has since changed is stale
            if sym[i] is None or j >= n or ranks.get((sym[i], sym[j])) != rank:
                continue
            sym[i], sym[j] = sym[i] + sym[j], None
            nxt[i] = nxt[j]
            if nxt[i] < n:
                prv[nxt[i]] = i
                r = ranks.get((sym[i], sym[nxt[i]]))
                if r is not None:
                    heapq.heappush(heap, (r, i))
            if prv[i] >= 0:
                r = ranks.get((sym[prv[i]], sym[i]))
                if r is not None:
                    heapq.heappush(heap, (r, prv[i]))
        # A symbol the vocabulary lacks (a byte it has no token for, such as 0x13 in SmolLM2's) is
        # dropped, as Hugging Face tokenizers and llama.cpp do for byte-level BPE without an unknown
        # token; raw BPE falls back to the symbol's <0xXX> byte tokens first.
        if self.byte_level:
            return tuple(i for p in sym if p is not None and (i := vocab.get(p)) is not None)
        out: list[int] = []
        for p in sym:
            if p is not None:
                i = vocab.get(p)
                if i is not None:
                    out.append(i)
                else:
                    out.extend(self.byte_ids[b] for b in p.encode("utf-8") if b in self.byte_ids)
        return tuple(out)

    def token_bytes(self, token: str) -> bytes:
        """The bytes a token's byte-mapped characters (raw BPE: characters, ▁ or <0xXX>) stand for."""
        if not self.byte_level:
            if BYTE_PIECE.fullmatch(token):
                return bytes([int(token[3:5], 16)])
            return token.replace("\u2581", " ").encode("utf-8")
        try:
            return bytes(CHAR_TO_BYTE[c] for c in token)
        except KeyError:  # not byte-mapped (an added token's literal text)
            return token.encode("utf-8")
