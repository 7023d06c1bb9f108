"""Tokenizers that reproduce Hugging Face `tokenizers` and SentencePiece exactly, in pure Python.

Two algorithms cover the llama family:
- byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen2): the text is split by the family's pre-tokenizer
  regex, each piece's UTF-8 bytes are mapped to printable characters, then merged by merge rank;
- SentencePiece BPE (Llama 2, TinyLlama, Mistral): spaces become "▁", pieces are merged by score,
  characters outside the vocabulary fall back to <0xXX> byte tokens.

Special tokens (control and user-defined) are recognised only when the caller asks (`special=True`),
so user text can never smuggle in "<|im_start|>".
"""
from __future__ import annotations

import codecs
import functools
import heapq
import os
import re
from typing import Iterable, Sequence

from .errors import FormatError
from .format import TokenizerData
from .unicode_tables import LETTER_RANGES, NUMBER_RANGES

# GGUF token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# ------------------------------------------------------------------------------------------------
# Pre-tokenizer regexes. Python's `re` has no \p{..}: the classes are built from unicodedata, and
# \s is spelled out as Unicode White_Space, as the Oniguruma regexes of `tokenizers` define it.

_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


@functools.lru_cache(maxsize=None)
def _category_class(prefix: str) -> str:
    """Character-class body matching every code point of Unicode category L* or N*."""
    table = {"L": LETTER_RANGES, "N": NUMBER_RANGES}[prefix]
    esc = lambda cp: "\\U%08x" % cp  # noqa: E731
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in table)


_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\pL+| ?\pN+| ?[^\s\pL\pN]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\pL\pN]?\pL+|\pN{1,3}| ?[^\s\pL\pN]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\pL\pN]?\pL+|\pN| ?[^\s\pL\pN]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# pre-tokenizer name (GGUF tokenizer.ggml.pre) -> (split digits one by one first, regex)
PRE_TOKENIZERS: dict[str, tuple[bool, str]] = {
    "default": (False, _GPT2),
    "gpt2": (False, _GPT2),
    "smollm": (True, _GPT2),
    "starcoder": (True, _GPT2),
    "llama-bpe": (False, _LLAMA3),
    "llama3": (False, _LLAMA3),
    "qwen2": (False, _QWEN2),
}


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


# ------------------------------------------------------------------------------------------------
# The two algorithms

class _ByteLevelBPE:
    """GPT-2 style BPE over byte-mapped characters, merges applied lowest rank first."""

    def __init__(self, tokens: list[str], merges: list[str], pre: str | None, ignore_merges: bool):
        name = pre or "gpt2"
        if name not in PRE_TOKENIZERS:
            raise FormatError(f"unknown pre-tokenizer {name!r}; pyllm knows {', '.join(sorted(PRE_TOKENIZERS))}")
        self.split_digits, pattern = PRE_TOKENIZERS[name]
        self.ignore_merges = ignore_merges or name in ("llama-bpe", "llama3")
        self.regex = _compiled(pattern)
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(merges):
            a, sep, b = merge.partition(" ")
            if not sep:
                raise FormatError(f"merge {rank} ({merge!r}) is not two tokens separated by a space")
            self.ranks.setdefault((a, b), rank)
        self.cache: dict[str, tuple[int, ...]] = {}

    def _pieces(self, text: str) -> Iterable[str]:
        if not self.split_digits:
            return self.regex.findall(text)
        out = []
        for run in _digit_splitter().findall(text):
            out.extend(self.regex.findall(run) if len(run) > 1 or not run.isnumeric() else [run])
        return out

    def encode(self, text: str, at_start: bool = True) -> list[int]:
        ids: list[int] = []
        cache, translate = self.cache, BYTE_TO_CHAR  # str.translate maps latin-1 code points = bytes
        for piece in self._pieces(text):
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
        try:
            return bytes(CHAR_TO_BYTE[c] for c in token)
        except KeyError:  # not byte-mapped (an added token's literal text)
            return token.encode("utf-8")


class _SentencePieceBPE:
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
            if (not types or types[i] == BYTE) and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                self.byte_ids[int(t[3:5], 16)] = i
        self.unk_id = unk_id
        self.add_space_prefix = add_space_prefix
        self.remove_extra_whitespaces = remove_extra_whitespaces

    def encode(self, text: str, at_start: bool = True) -> list[int]:
        if self.remove_extra_whitespaces:
            text = re.sub(" +", " ", text.strip(" "))
        if not text:
            return []
        text = text.replace(" ", "\u2581")
        if self.add_space_prefix and at_start:
            text = "\u2581" + text
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
            elif self.byte_ids:
                ids.extend(self.byte_ids[b] for b in s.encode("utf-8"))
            elif self.unk_id is not None:
                ids.append(self.unk_id)
            else:
                raise ValueError(f"cannot encode {s!r}: not in the vocabulary and no byte fallback")
        return ids

    def token_bytes(self, token: str) -> bytes:
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            try:
                return bytes([int(token[3:5], 16)])
            except ValueError:
                pass
        return token.replace("\u2581", " ").encode("utf-8")


# ------------------------------------------------------------------------------------------------

class Tokenizer:
    """Text <-> token ids for one model; `from_file` reads it from any file that carries it."""

    def __init__(self, data: TokenizerData, ignore_merges: bool = False, remove_extra_whitespaces: bool = False):
        self.data = data
        self.tokens = data.tokens
        types = data.token_types or []
        self.types = types
        self.bos_id, self.eos_id = data.bos_id, data.eos_id
        self.add_bos, self.add_eos = data.add_bos, data.add_eos
        self.kind = data.model
        if data.model == "gpt2":
            self._algo: _ByteLevelBPE | _SentencePieceBPE = _ByteLevelBPE(data.tokens, data.merges, data.pre, ignore_merges)
        elif data.model == "llama":
            if data.scores is None:
                raise FormatError("a SentencePiece tokenizer needs scores")
            self._algo = _SentencePieceBPE(data.tokens, data.scores, types, data.unk_id,
                                           data.add_space_prefix, remove_extra_whitespaces)
        else:
            raise FormatError(f"tokenizer model {data.model!r} is not supported (gpt2 or llama)")
        # control and user-defined tokens: matched in text only when special=True
        self.special = {t: i for i, t in enumerate(data.tokens) if types and types[i] in (CONTROL, USER_DEFINED) and t}
        self._special_re = (re.compile("|".join(re.escape(t) for t in sorted(self.special, key=len, reverse=True)))
                            if self.special else None)
        self._bytes_cache: dict[int, bytes] = {}

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read the tokenizer of a weights.bin, a GGUF, a Hugging Face tokenizer.json or a
        SentencePiece tokenizer.model."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError as exc:
            raise FormatError(f"{path}: cannot open: {exc.strerror}") from None
        try:
            if head == b"PYLM":
                from .format import WeightsFile
                with WeightsFile(path) as w:
                    if w.tokenizer is None:
                        raise FormatError(f"{path}: this model file has no tokenizer")
                    return cls(w.tokenizer)
            if head == b"GGUF":
                from .convert import gguf_tokenizer
                from .gguf import GGUFFile
                with GGUFFile(path) as g:
                    return cls(gguf_tokenizer(g))
            if head.lstrip()[:1] == b"{":
                from .hf_tokenizer import read_tokenizer_json
                data, ignore_merges = read_tokenizer_json(path)
                return cls(data, ignore_merges=ignore_merges)
            from .sentencepiece_model import read_sentencepiece_model
            data, remove_ws = read_sentencepiece_model(path)
            return cls(data, remove_extra_whitespaces=remove_ws)
        except FormatError as exc:
            if str(exc).startswith(path):
                raise
            raise FormatError(f"{path}: {exc}") from None

    # -- encoding ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Token ids of text. add_bos defaults to the model's rule; special=True lets control
        tokens written in the text (e.g. "<|im_start|>") become their ids."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        ids: list[int] = []
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids.append(self.bos_id)
        if special and self._special_re is not None:
            pos = 0
            for m in self._special_re.finditer(text):
                if m.start() > pos:
                    ids.extend(self._algo.encode(text[pos:m.start()], pos == 0))
                ids.append(self.special[m.group()])
                pos = m.end()
            if pos < len(text):
                ids.extend(self._algo.encode(text[pos:], pos == 0))
        else:
            ids.extend(self._algo.encode(text))
        if self.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    # -- decoding ----------------------------------------------------------------------------

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (control tokens: their text)."""
        b = self._bytes_cache.get(token_id)
        if b is None:
            if not 0 <= token_id < len(self.tokens):
                raise ValueError(f"token id {token_id} is outside the vocabulary (0..{len(self.tokens) - 1})")
            t = self.tokens[token_id]
            kind = self.types[token_id] if self.types else NORMAL
            b = t.encode("utf-8") if kind in (CONTROL, USER_DEFINED) else self._algo.token_bytes(t)
            self._bytes_cache[token_id] = b
        return b

    def _skip(self, token_id: int, special: bool) -> bool:
        return not special and bool(self.types) and self.types[token_id] == CONTROL

    def decode(self, ids: Sequence[int], special: bool = False) -> str:
        """Text of token ids; control tokens (BOS, EOS, <|im_start|>) are left out unless special=True."""
        data = b"".join(self.token_bytes(int(i)) for i in ids if not self._skip(int(i), special))
        text = data.decode("utf-8", errors="replace")
        if self.kind == "llama" and self.data.add_space_prefix and text.startswith(" "):
            text = text[1:]
        return text

    def decoder(self, special: bool = False) -> "StreamDecoder":
        """A decoder for streaming: feed ids one at a time, get text that never splits a character."""
        return StreamDecoder(self, special)


class StreamDecoder:
    """Turns a stream of token ids into text pieces; joined, they equal Tokenizer.decode(ids)."""

    def __init__(self, tokenizer: Tokenizer, special: bool = False):
        self.tokenizer, self.special = tokenizer, special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip_space = tokenizer.kind == "llama" and tokenizer.data.add_space_prefix
        self._started = False

    def feed(self, token_id: int) -> str:
        """Text completed by this token ('' while a multi-byte character is still incomplete)."""
        if self.tokenizer._skip(token_id, self.special):
            return ""
        return self._emit(self._utf8.decode(self.tokenizer.token_bytes(token_id)))

    def flush(self) -> str:
        """Whatever is left at the end of the stream (an incomplete character becomes U+FFFD)."""
        return self._emit(self._utf8.decode(b"", final=True))

    def _emit(self, text: str) -> str:
        if text and not self._started:
            self._started = True
            if self._strip_space and text.startswith(" "):
                text = text[1:]
        return text
