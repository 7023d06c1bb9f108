"""The Sampler: a chain of processors from logits to the next token.

The order is llama.cpp's: logits processors over the whole vocabulary (logit bias, repetition
penalties, then any added later), then top-k and the candidate filters (top-p, min-p) on the
probabilities at temperature 1, then temperature over the survivors and a draw. With top-k off,
top-p, min-p and the draw run in nucleus.py, which sorts only the head of the vocabulary and picks
the same token.

A constraint (a grammar the output must fit) is asked about the drawn token; only if it refuses
that token are the logits masked to the tokens it allows - after the processors, before the
filters - and the draw made again. At temperature 0 that picks the best-scoring allowed token, as
masking first would, without a mask for every token (llama.cpp samples grammars the same way).
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from ..errors import NumericalError
from .nucleus import sample_untruncated
from .options import SamplingParams
from .processors import (CandidateFilter, LogitBias, LogitsProcessor, MinP, RepetitionPenalties, TopP, draw,
                         top_k)


class TokenConstraint(Protocol):
    """A grammar the next token must fit (pyllm.structured.Constraint)."""

    def allows(self, token: int) -> bool: ...

    def mask(self, logits: np.ndarray) -> None: ...


class Sampler:
    """Picks next tokens with one set of parameters and its own random stream (seeded), within an
    optional constraint."""

    def __init__(self, params: SamplingParams, constraint: TokenConstraint | None = None):
        self.params = params
        self.constraint = constraint
        self.rng = np.random.default_rng(params.seed)
        self.processors: list[LogitsProcessor] = []
        if params.logit_bias:
            self.processors.append(LogitBias(params.logit_bias))
        if params.repeat_last_n and (params.repeat_penalty != 1.0 or params.frequency_penalty != 0.0
                                     or params.presence_penalty != 0.0):
            self.processors.append(RepetitionPenalties(params.repeat_last_n, params.repeat_penalty,
                                                       params.frequency_penalty, params.presence_penalty))
        self.filters: list[CandidateFilter] = []
        if params.top_p < 1.0:
            self.filters.append(TopP(params.top_p))
        if params.min_p > 0.0:
            self.filters.append(MinP(params.min_p))

    def add_processor(self, processor: LogitsProcessor) -> None:
        """Run `processor` after the built-in ones on every token (e.g. a constraint's mask)."""
        self.processors.append(processor)

    def __call__(self, logits: np.ndarray, history: Sequence[int]) -> int:
        logits = np.array(logits, dtype=np.float32)  # a copy: the caller's logits stay as they are
        for process in self.processors:
            process(logits, history)
        token = self._pick(logits)
        if self.constraint is not None and not self.constraint.allows(token):
            self.constraint.mask(logits)  # sample first, mask only when the draw does not fit
            token = self._pick(logits)
        return token

    def _pick(self, logits: np.ndarray) -> int:
        """The token drawn from processed logits: greedy at temperature 0, else top-k, filters, draw."""
        top = logits.max()
        if np.isnan(top):  # max is NaN if any is; every comparison below would go wrong
            raise NumericalError(f"logits contain NaN ({int(np.isnan(logits).sum())} of {logits.size}); "
                                 "weights holding NaN or infinity produce this")
        if top == -np.inf:
            raise ValueError("every token is banned (logit_bias of -inf, or logits of -inf): nothing can be sampled")
        if self.params.temperature == 0:
            return int(np.argmax(logits))
        if not 0 < self.params.top_k < logits.size:
            return sample_untruncated(logits, self.params.top_p, self.params.min_p, self.params.temperature,
                                      self.rng)
        ids, cand = top_k(logits, self.params.top_k)
        for narrow in self.filters:
            ids, cand = narrow(ids, cand)
        return draw(ids, cand, self.params.temperature, self.rng)
