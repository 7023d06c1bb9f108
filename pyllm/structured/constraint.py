"""A generation held to a grammar, token by token, with llguidance.

llguidance runs an Earley parser over a trie of the vocabulary's token bytes: it checks one token
in microseconds and computes the mask of every allowed token in about 0.1 ms on SmolLM2's 49,152
tokens. The sampler asks first whether the token it drew fits (`allows`), and only when it does not
builds the full mask (`mask`) and draws again; after each token the grammar may force the next few
(fixed keys, punctuation), which the generation appends without sampling (`forced`).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ConstraintError
from ..types import CONTROL
from .spec import ConstraintSpec, llguidance_module

_VOCABULARIES: "weakref.WeakKeyDictionary[Any, dict[tuple, Any]]" = weakref.WeakKeyDictionary()


class TokenizerView:
    """What llguidance reads of a tokenizer: the bytes of every token (control tokens marked as
    special by a leading 0xFF byte, which no text has), the end and begin ids, and bytes -> ids."""

    def __init__(self, tokenizer: Any, n_vocab: int, end_ids: Sequence[int]):
        types = tokenizer.types
        self.tokens = [b"\xff" + t.encode("utf-8") if types and types[i] == CONTROL
                       else tokenizer.token_bytes(i) for i, t in enumerate(tokenizer.tokens)]
        self.tokens += [b""] * (n_vocab - len(self.tokens))  # ids past the tokenizer's: never allowed
        self.eos_token_id = min(end_ids) if end_ids else (tokenizer.eos_id or 0)
        self.bos_token_id = tokenizer.bos_id
        self._tokenizer = tokenizer

    def __call__(self, data: bytes) -> list[int]:
        return self._tokenizer.encode_bytes(data)


def vocabulary(tokenizer: Any, n_vocab: int, end_ids: Sequence[int]) -> Any:
    """llguidance's tokenizer for this vocabulary (built once per tokenizer: it takes ~0.1-0.3 s)."""
    llg = llguidance_module()
    key = (n_vocab, tuple(sorted(end_ids)))
    per_tokenizer = _VOCABULARIES.setdefault(tokenizer, {})
    if key not in per_tokenizer:
        view = TokenizerView(tokenizer, n_vocab, end_ids)
        per_tokenizer[key] = llg.LLTokenizer(llg.TokenizerWrapper(view), n_vocab=n_vocab,
                                             eos_token=sorted(end_ids) or None)
    return per_tokenizer[key]


@dataclass
class ConstraintStats:
    """How the constraint worked on one generation: tokens drawn under it, how many the grammar
    refused (each cost a full mask), tokens it forced, and the seconds spent in each part."""

    sampled: int = 0
    masked: int = 0           # sampled tokens the grammar refused: the full mask was built, then a redraw
    forced: int = 0           # tokens appended without sampling
    check_seconds: float = 0.0   # checking sampled tokens and advancing the parser
    mask_seconds: float = 0.0    # computing and applying full masks
    forced_seconds: float = 0.0  # finding forced tokens

    @property
    def mask_rate(self) -> float:
        """The share of sampled tokens that needed the full mask."""
        return self.masked / self.sampled if self.sampled else 0.0


class Constraint:
    """One generation's parser state for a ConstraintSpec; ConstraintError (before any token) if the
    grammar or schema is invalid or uses a construct llguidance does not support."""

    def __init__(self, spec: ConstraintSpec, tokenizer: Any, n_vocab: int, end_ids: Sequence[int]):
        llg = llguidance_module()
        self.spec, self.tokenizer, self.n_vocab = spec, tokenizer, n_vocab
        self.end_ids = frozenset(end_ids)
        self.matcher = llg.LLMatcher(vocabulary(tokenizer, n_vocab, end_ids), spec.grammar, log_level=0)
        if self.matcher.is_error():
            raise ConstraintError(f"{spec.kind} is not supported: {self.matcher.get_error().strip()}")
        if spec.prefix:  # the prompt ends inside the output: the parser starts after what it holds
            ids = tokenizer.encode_bytes(spec.prefix.encode("utf-8"))
            if self.matcher.validate_tokens(ids) != len(ids):
                raise ConstraintError(f"constraint_prefix {spec.prefix!r} is not the start of any output "
                                      f"of the {spec.kind}")
            self.matcher.consume_tokens(ids)
            self._check()
        self._fill = llg.numpy.fill_next_token_bitmask
        self._bits = llg.numpy.allocate_token_bitmask(1, n_vocab)
        self.stats = ConstraintStats()

    # -- the sampler's side ------------------------------------------------------------------

    def allows(self, token: int) -> bool:
        """Whether the grammar accepts `token` next (an end token: whether the output may end here)."""
        t0 = time.perf_counter()
        ok = self.matcher.validate_tokens([token]) == 1
        self.stats.sampled += 1
        self.stats.check_seconds += time.perf_counter() - t0
        return ok

    def mask(self, logits: np.ndarray) -> None:
        """Set the logits of every token the grammar does not accept next to -inf, in place: the
        packed bitmask (one bit per token) unpacked by numpy, no loop over the vocabulary."""
        t0 = time.perf_counter()
        self._fill(self.matcher, self._bits)
        self._check()
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[:logits.shape[0]]
        logits[allowed == 0] = -np.inf
        self.stats.masked += 1
        self.stats.mask_seconds += time.perf_counter() - t0

    # -- the generation's side ---------------------------------------------------------------

    def accept(self, token: int) -> None:
        """Advance the parser over a token the sampler chose (one it allowed)."""
        t0 = time.perf_counter()
        self.matcher.consume_token(token)
        self._check()
        self.stats.check_seconds += time.perf_counter() - t0

    def forced(self, limit: int) -> list[int]:
        """Up to `limit` tokens the grammar forces next (only one continuation is possible), already
        accepted; the generation appends them without sampling."""
        if limit <= 0:
            return []
        t0 = time.perf_counter()
        tokens = self.matcher.compute_ff_tokens()[:limit]
        if tokens:
            self.matcher.consume_tokens(tokens)
            self._check()
        self.stats.forced += len(tokens)
        self.stats.forced_seconds += time.perf_counter() - t0
        return tokens

    @property
    def done(self) -> bool:
        """The grammar is finished: nothing but an end token can follow."""
        return self.matcher.is_stopped()

    @property
    def complete(self) -> bool:
        """What was accepted so far is a whole output of the grammar."""
        return self.matcher.is_accepting()

    def _check(self) -> None:
        if self.matcher.is_error():  # only a token the sampler was told is refused gets here
            raise ConstraintError(f"{self.spec.kind}: the parser failed: {self.matcher.get_error().strip()}")
