"""Log-probabilities of the chosen token and its most likely alternatives (OpenAI's `logprobs` and
`top_logprobs`), without sorting the vocabulary.

They are the model's own distribution: log-softmax of the logits as the forward pass returns them,
at temperature 1, before logit bias, repetition penalties, temperature and truncation. That is
what llama.cpp's server reports by default (`post_sampling_probs` off) and what vLLM reports by
default (`raw_logprobs`); OpenAI documents them as the model's log-probabilities. So a token that
logit_bias banned can still appear among the alternatives, with the probability the model gave it.
Pass the logits the sampler was given, not a copy it rewrote.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import NumericalError
from .head import SortedHead
from .nucleus import exp_sum


class TokenLogprobs(NamedTuple):
    """The chosen token's log-probability and the top alternatives (most likely first)."""

    token: int
    logprob: float
    top_ids: np.ndarray  # (n,) token ids; equal logits: lower id first
    top_logprobs: np.ndarray  # (n,) float64


def _checked(logits: np.ndarray) -> np.ndarray:
    """The logits as a 1-D float array, or an error naming what is wrong with them."""
    x = np.asarray(logits)
    if x.ndim != 1 or x.size == 0 or x.dtype.kind != "f":
        raise ValueError(f"logits must be a non-empty 1-D float array, got shape {x.shape} of {x.dtype}")
    top = x.max()
    if np.isnan(top):
        raise NumericalError(f"logits contain NaN ({int(np.isnan(x).sum())} of {x.size}): no log-probabilities")
    if top == np.inf:
        raise NumericalError(f"logits contain +inf ({int(np.isposinf(x).sum())} of {x.size}): no log-probabilities")
    if top == -np.inf:
        raise ValueError("every logit is -inf: no log-probabilities")
    return x


def log_normalizer(logits: np.ndarray) -> float:
    """log(sum(exp(logits))) in float64, computed stably (max + log of the shifted sum)."""
    return _log_normalizer(_checked(logits))


def _log_normalizer(x: np.ndarray) -> float:
    """log_normalizer of logits already checked."""
    top = x.max()
    return float(np.float64(top) + np.log(exp_sum(x, top)))


def _check_n(n: int, vocab_size: int) -> None:
    """ValueError unless n is a count of top log-probabilities the vocabulary can give."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= vocab_size:
        raise ValueError(f"n (the number of top log-probabilities) must be an integer in [0, {vocab_size}], got {n!r}")


def _top(x: np.ndarray, n: int, lse: float) -> tuple[np.ndarray, np.ndarray]:
    """The n largest logits' ids (largest first, equal logits by lower id) and log-probabilities."""
    head = SortedHead(x)
    head.extend(n)
    return head.ids[:n], np.asarray(head.values[:n], dtype=np.float64) - lse


def top_logprobs(logits: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n most likely token ids (largest first, equal logits by lower id) and their log-probabilities."""
    x = _checked(logits)
    _check_n(n, x.size)
    return _top(x, n, _log_normalizer(x))


def token_logprobs(logits: np.ndarray, token: int, n: int = 0) -> TokenLogprobs:
    """The log-probability of the chosen token and the n most likely tokens with theirs."""
    x = _checked(logits)
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < x.size:
        raise ValueError(f"token must be a token id in [0, {x.size}), got {token!r}")
    _check_n(n, x.size)
    lse = _log_normalizer(x)
    ids, logprobs = _top(x, n, lse)
    return TokenLogprobs(int(token), float(np.float64(x[token]) - lse), ids, logprobs)
