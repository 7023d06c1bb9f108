"""Tokenizers that reproduce Hugging Face `tokenizers` and SentencePiece exactly, in pure Python.

Three algorithms: BPE with ranked merges (bpe.py: byte-level, or raw text for Gemma 4),
SentencePiece BPE (sentencepiece.py) and WordPiece (wordpiece.py). Control tokens are recognised
only when the caller asks (`special=True`), so user text can never smuggle in "<|im_start|>";
user-defined tokens (Gemma's whitespace runs, MPT's runs of spaces) are always matched whole, as
Hugging Face and llama.cpp match them.
"""
from __future__ import annotations

import codecs
import os
import re
from typing import Iterator, Sequence

import numpy as np

from ..errors import FormatError
from ..formats.gguf import GGUFFile
from ..formats.mapped import read_head
from ..formats.sentencepiece_model import read_sentencepiece_model
from ..formats.tokenizer_json import read_tokenizer_json
from ..formats.weights import WeightsFile
from ..types import CONTROL, NORMAL, USER_DEFINED, TokenizerData, check_tokenizer_data
from .bpe import ByteLevelBPE
from .sentencepiece import SentencePieceBPE
from .wordpiece import WordPiece


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
        if data.model in ("gpt2", "gemma4"):
            pre = "gemma4" if data.model == "gemma4" else data.pre
            self._algo: ByteLevelBPE | SentencePieceBPE | WordPiece = ByteLevelBPE(data.tokens, data.merges, pre,
                                                                                 ignore_merges, data.nfc)
        elif data.model == "bert":
            strip = data.lowercase if data.strip_accents is None else data.strip_accents
            self._algo = WordPiece(data.tokens, types, data.unk_id, data.lowercase, strip)
        elif data.model == "llama":
            if data.scores is None:
                raise FormatError("a SentencePiece tokenizer needs scores")
            self._algo = SentencePieceBPE(data.tokens, data.scores, types, data.unk_id,
                                           data.add_space_prefix, remove_extra_whitespaces)
        else:
            raise FormatError(f"tokenizer model {data.model!r} is not supported (gpt2, llama, gemma4 or bert)")
        # control and user-defined tokens: all matched in text when special=True
        self.special = {t: i for i, t in enumerate(data.tokens) if types and types[i] in (CONTROL, USER_DEFINED) and t}
        self._special_re = self._alternatives(self.special)
        # user-defined tokens alone: matched whole in any text
        self._user_re = self._alternatives([t for t, i in self.special.items() if types[i] == USER_DEFINED])
        # control tokens alone (not user-defined ones): the text a chat message must not turn into tokens
        controls = sorted((t for t, i in self.special.items() if types[i] == CONTROL), key=len, reverse=True)
        self.control_pattern = re.compile("|".join(map(re.escape, controls))) if controls else None
        self._bytes_cache: dict[int, bytes] = {}

    @staticmethod
    def _alternatives(texts: Sequence[str]) -> re.Pattern[str] | None:
        """A regex matching any of texts, the longest first where several match; None for none."""
        return re.compile("|".join(map(re.escape, sorted(texts, key=len, reverse=True)))) if texts else None

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read the tokenizer of a weights.bin, a GGUF, a Hugging Face tokenizer.json or a
        SentencePiece tokenizer.model; each passes the one tokenizer check (types.check_tokenizer_data)
        that the model file readers run, else FormatError naming the file and the field."""
        path = os.fspath(path)
        head = read_head(path)
        try:
            if head == b"PYLM":
                with WeightsFile(path) as w:
                    if w.tokenizer is None:
                        raise FormatError(f"{path}: this model file has no tokenizer")
                    return cls(w.tokenizer)
            if head == b"GGUF":
                with GGUFFile(path) as g:
                    return cls(g.tokenizer())
            if head.lstrip()[:1] == b"{":
                data, ignore_merges = read_tokenizer_json(path)
                options = {"ignore_merges": ignore_merges}
            else:
                data, remove_ws = read_sentencepiece_model(path)
                options = {"remove_extra_whitespaces": remove_ws}
            try:
                check_tokenizer_data(data)
            except ValueError as exc:
                raise FormatError(str(exc)) from None
            return cls(data, **options)
        except FormatError as exc:
            if str(exc).startswith(path):
                raise
            raise FormatError(f"{path}: {exc}") from None

    # -- encoding ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Tokens in the vocabulary."""
        return len(self.tokens)

    def encode(self, text: str, add_bos: bool | None = None, special: bool = False,
               plain_spans: Sequence[tuple[int, int]] = ()) -> list[int]:
        """Token ids of text. add_bos defaults to the model's rule; special=True lets control
        tokens written in the text (e.g. "<|im_start|>") become their ids, except where a match
        overlaps one of plain_spans, (start, end) character ranges that are read as plain text
        (a chat prompt passes the spans its messages' control-token text landed in)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        ids: list[int] = []
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids.append(self.bos_id)
        pattern = self._special_re if special else self._user_re
        if pattern is not None:
            pos = 0
            for m in self._special_matches(pattern, text, plain_spans):
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

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids whose bytes join to exactly `data` (no BOS, no space prefix, control-token text
        kept plain): how a grammar engine tokenizes text it forces in the middle of an output.
        Bytes that are not UTF-8 become single-byte tokens."""
        text = data.decode("utf-8", errors="surrogateescape")
        ids: list[int] = []
        for run in re.split(r"([\udc80-\udcff]+)", text):
            if not run:
                continue
            if "\udc80" <= run[0] <= "\udcff":  # undecodable bytes, escaped as lone surrogates
                ids.extend(self._byte_token(b) for b in run.encode("utf-8", errors="surrogateescape"))
                continue
            pos = 0
            for m in self._user_re.finditer(run) if self._user_re is not None else ():
                if m.start() > pos:
                    ids.extend(self._algo.encode(run[pos:m.start()], False))
                ids.append(self.special[m.group()])
                pos = m.end()
            if pos < len(run):
                ids.extend(self._algo.encode(run[pos:], False))
        return ids

    def _byte_token(self, byte: int) -> int:
        """The token that stands for one byte (byte-level BPE's byte symbols, SentencePiece's <0xXX>)."""
        if not hasattr(self, "_byte_tokens"):
            found: dict[int, int] = {}
            for i in range(len(self.tokens)):
                if not (self.types and self.types[i] in (CONTROL, USER_DEFINED)):
                    b = self.token_bytes(i)
                    if len(b) == 1:
                        found.setdefault(b[0], i)
            self._byte_tokens = found
        if byte not in self._byte_tokens:
            raise ValueError(f"the vocabulary has no token for the byte 0x{byte:02x}")
        return self._byte_tokens[byte]

    def _special_matches(self, pattern: re.Pattern[str], text: str,
                         plain_spans: Sequence[tuple[int, int]]) -> Iterator[re.Match[str]]:
        """The matches of pattern (special tokens) in text, but for control tokens that overlap one
        of plain_spans; the text of a skipped match stays in the plain text around it, so BPE sees
        it in context. User-defined tokens are matched inside the spans too, as in any text."""
        spans = sorted(plain_spans)
        k, start = 0, 0
        while (m := pattern.search(text, start)) is not None:
            while k < len(spans) and spans[k][1] <= m.start():
                k += 1  # spans that end before this match, and so before every later one
            if (k < len(spans) and spans[k][0] < m.end()  # (an empty span counts inside a match only)
                    and self.types[self.special[m.group()]] == CONTROL):
                start = m.start() + 1  # inside a plain span: look for a control token further on
                continue
            yield m
            start = m.end()

    # -- decoding ----------------------------------------------------------------------------

    def check_id(self, token_id: object) -> int:
        """token_id as an int if it is an integer id of the vocabulary, else ValueError naming it
        (floats, bools and out-of-range ids, negative ones included, are refused alike)."""
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
            raise ValueError(f"token ids must be integers, got {token_id!r}")
        if not 0 <= token_id < len(self.tokens):
            raise ValueError(f"token id {token_id} is outside the vocabulary (0..{len(self.tokens) - 1})")
        return int(token_id)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (control tokens: their text)."""
        b = self._bytes_cache.get(token_id)
        if b is None:
            token_id = self.check_id(token_id)
            t = self.tokens[token_id]
            kind = self.types[token_id] if self.types else NORMAL
            b = t.encode("utf-8") if kind in (CONTROL, USER_DEFINED) else self._algo.token_bytes(t)
            self._bytes_cache[token_id] = b
        return b

    def is_skipped(self, token_id: int, special: bool) -> bool:
        """Whether decoding leaves this (checked) token out: control tokens, unless special=True."""
        return not special and bool(self.types) and self.types[token_id] == CONTROL

    def decode(self, ids: Sequence[int], special: bool = False) -> str:
        """Text of token ids; control tokens (BOS, EOS, <|im_start|>) are left out unless special=True."""
        checked = [self.check_id(i) for i in ids]
        data = b"".join(self.token_bytes(i) for i in checked if not self.is_skipped(i, special))
        text = data.decode("utf-8", errors="replace")
        if (self.kind == "llama" and self.data.add_space_prefix or self.kind == "bert") and text.startswith(" "):
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
        self._strip_space = tokenizer.kind == "llama" and tokenizer.data.add_space_prefix or tokenizer.kind == "bert"
        self._started = False

    def feed(self, token_id: int) -> str:
        """Text completed by this token ('' while a multi-byte character is still incomplete)."""
        token_id = self.tokenizer.check_id(token_id)
        if self.tokenizer.is_skipped(token_id, self.special):
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
