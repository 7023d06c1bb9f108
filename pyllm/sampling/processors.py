"""The steps of sampling, each a small function over logits, and the processor objects the
Sampler chains them as.

Two kinds of step: a `LogitsProcessor` rewrites the whole vocabulary's logits in place (logit bias,
repetition penalties; later, a constraint's mask), a `CandidateFilter` narrows a sorted list of
candidates (top-k, top-p, min-p). Top-k sorts only the head of the vocabulary (head.py), so a token
costs O(vocab), not a sort of the vocabulary; equal logits go by lower token id, at the k-th place
too. With top-k off, these functions on the fully sorted vocabulary are the reference that
nucleus.py reproduces while sorting only its head.
"""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import numpy as np

from .head import SortedHead


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
    """The k largest logits and their token ids, largest first, equal logits by lower token id
    (k <= 0 keeps all)."""
    n = logits.shape[0]
    k = k if 0 < k < n else n
    head = SortedHead(logits)
    head.extend(k)
    return head.ids[:k], head.values[:k]


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
    """Sample one of the candidates from softmax(logits / temperature), with one number from rng."""
    return draw_at(ids, logits, temperature, rng.random())


def draw_at(ids: np.ndarray, logits: np.ndarray, temperature: float, r: float) -> int:
    """The candidate at which the cumulative softmax(logits / temperature) reaches r (uniform in [0, 1))."""
    probs = softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return int(ids[min(int(np.searchsorted(np.cumsum(probs), r * probs.sum())), len(ids) - 1)])


# ------------------------------------------------------------------------------------------------
# The steps as processor objects, for Sampler's chain

class LogitsProcessor(Protocol):
    """Rewrites the full vocabulary's logits in place, given the tokens so far."""

    def __call__(self, logits: np.ndarray, history: Sequence[int]) -> None: ...


class CandidateFilter(Protocol):
    """Narrows candidates (ids with their logits, largest first) to a prefix or subset."""

    def __call__(self, ids: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class LogitBias:
    """Adds a fixed bias to chosen tokens (-inf bans them)."""

    def __init__(self, bias: Mapping[int, float]):
        self.bias = dict(bias)

    def __call__(self, logits: np.ndarray, history: Sequence[int]) -> None:
        apply_logit_bias(logits, self.bias)


class RepetitionPenalties:
    """CTRL's repeat penalty and OpenAI's frequency/presence penalties over the last `last_n` tokens."""

    def __init__(self, last_n: int, repeat: float, frequency: float, presence: float):
        self.last_n, self.repeat, self.frequency, self.presence = last_n, repeat, frequency, presence

    def __call__(self, logits: np.ndarray, history: Sequence[int]) -> None:
        apply_penalties(logits, history[-self.last_n:], self.repeat, self.frequency, self.presence)


class TopP:
    """Keeps the smallest prefix of candidates whose probability reaches p."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, ids: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return top_p(ids, logits, self.p)


class MinP:
    """Drops candidates less likely than p times the most likely one."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, ids: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return min_p(ids, logits, self.p)
