"""Samplers: small functions from logits to the next token, composed by `Sampler`.

The order is llama.cpp's: logit bias, repetition penalties, then top-k, top-p and min-p on the
probabilities at temperature 1, then temperature over the survivors, then a draw. Top-k uses a
partial selection (argpartition), so a token costs O(vocab), not a sort of the vocabulary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


def apply_logit_bias(logits: np.ndarray, bias: Mapping[int, float]) -> None:
    """Add bias[token] to logits[token] in place (-inf bans a token)."""
    for token, b in bias.items():
        logits[int(token)] += b


def apply_penalties(logits: np.ndarray, recent: Sequence[int], repeat_penalty: float = 1.0,
                    frequency_penalty: float = 0.0, presence_penalty: float = 0.0) -> None:
    """Penalise tokens that occur in `recent`, in place: positive logits are divided by
    repeat_penalty and negative ones multiplied (CTRL's rule), then count * frequency_penalty +
    presence_penalty is subtracted (OpenAI's rule)."""
    if len(recent) == 0 or (repeat_penalty == 1.0 and frequency_penalty == 0.0 and presence_penalty == 0.0):
        return
    tokens, counts = np.unique(np.asarray(recent, dtype=np.int64), return_counts=True)
    v = logits[tokens]
    if repeat_penalty != 1.0:
        v = np.where(v > 0, v / repeat_penalty, v * repeat_penalty)
    logits[tokens] = v - counts * frequency_penalty - presence_penalty


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits and their token ids, largest first (k <= 0 keeps all)."""
    n = logits.shape[0]
    if 0 < k < n:
        ids = np.argpartition(logits, n - k)[n - k:]
    else:
        ids = np.arange(n)
    order = np.argsort(-logits[ids], kind="stable")
    return ids[order], logits[ids[order]]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits (float64 for stable sums)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def top_p(ids: np.ndarray, logits: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep the smallest prefix of candidates (sorted, largest first) whose probability reaches p."""
    if p >= 1.0:
        return ids, logits
    cum = np.cumsum(softmax(logits))
    keep = int(np.searchsorted(cum, p)) + 1  # first index where the mass reaches p, inclusive
    return ids[:keep], logits[:keep]


def min_p(ids: np.ndarray, logits: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop candidates whose probability is below p times the most likely one's."""
    if p <= 0.0:
        return ids, logits
    keep = logits >= logits.max() + np.log(p)  # prob_i >= p * prob_max, in log space
    return ids[keep], logits[keep]


def draw(ids: np.ndarray, logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Sample one of the candidates from softmax(logits / temperature)."""
    probs = softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return int(ids[min(int(np.searchsorted(np.cumsum(probs), rng.random() * probs.sum())), len(ids) - 1)])


@dataclass
class SamplingParams:
    """Everything that decides the next token; defaults follow llama.cpp."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    logit_bias: Mapping[int, float] | None = None

    def check(self, vocab_size: int) -> None:
        """ValueError naming the first parameter out of range."""
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.repeat_penalty < math.inf:
            raise ValueError(f"repeat_penalty must be > 0 and finite, got {self.repeat_penalty}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if self.repeat_last_n < 0:
            raise ValueError(f"repeat_last_n must be >= 0, got {self.repeat_last_n}")
        for token, bias in (self.logit_bias or {}).items():
            if not 0 <= int(token) < vocab_size:
                raise ValueError(f"logit_bias token {token} is outside the vocabulary")
            if not (math.isfinite(bias) or bias == -math.inf):
                raise ValueError(f"logit_bias of token {token} must be finite or -inf (a ban), got {bias}")


class Sampler:
    """Picks next tokens with one set of parameters and its own random stream (seeded)."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history: Sequence[int]) -> int:
        p = self.params
        logits = np.array(logits, dtype=np.float32)  # a copy: the caller's logits stay as they are
        if p.logit_bias:
            apply_logit_bias(logits, p.logit_bias)
        if p.repeat_last_n:
            apply_penalties(logits, history[-p.repeat_last_n:], p.repeat_penalty,
                            p.frequency_penalty, p.presence_penalty)
        if np.isnan(logits.max()):  # max is NaN if any is; every comparison below would go wrong
            raise ValueError(f"logits contain NaN ({int(np.isnan(logits).sum())} of {logits.size}); "
                             "weights holding NaN or infinity produce this")
        if p.temperature == 0:
            return int(np.argmax(logits))
        ids, cand = top_k(logits, p.top_k)
        ids, cand = top_p(ids, cand, p.top_p)
        ids, cand = min_p(ids, cand, p.min_p)
        return draw(ids, cand, p.temperature, self.rng)
