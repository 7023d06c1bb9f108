"""Sampling with top-k off, sorting only the head of the distribution.

With top-k off, the candidate chain (top_k(logits, 0), top_p, min_p, draw in processors.py) sorts
the whole vocabulary: 4 ms a token at 49,152 tokens, 26 ms at 262,144. Yet top-p, min-p and the
draw only ever look at the most likely tokens. `sample_untruncated` picks the same token for the
same random stream while sorting a head of the vocabulary (`SortedHead`, head.py), grown fourfold
until the answer is settled:

- min-p keeps the logits >= max + log(min_p): a threshold, counted without sorting;
- top-p keeps the shortest prefix whose probability reaches top_p: settled once the head's
  cumulative probability (normalised by the whole vocabulary's sum) reaches top_p;
- the draw over the survivors: settled once the head's cumulative probability reaches the random
  number, when the survivors are too many to sort (top-p 1 and min-p 0: the whole vocabulary).

The candidates come in the full sort's order (largest logit first, equal logits by lower token id)
and the probabilities are the chain's to float rounding: the whole vocabulary's sum is added up in
token order rather than in sorted order, and the draw's random number is scaled by 1 rather than by
the rounded sum of the probabilities. So the chosen token can differ from the chain's only when
top_p or the random number falls within a few units of rounding (1e-16) of a cumulative sum.
"""
from __future__ import annotations

import numpy as np

from .head import SortedHead
from .processors import draw, draw_at, top_p as top_p_filter

FIRST_HEAD = 128  # tokens sorted at first; most real distributions settle within them
SORTED_SURVIVORS = 2048  # min-p survivors sorted outright when top-p does not cut; more: grow a head


def exp_sum(logits: np.ndarray, top: float, temperature: float = 1.0, threshold: float | None = None) -> float:
    """Sum of exp(logit / temperature - top / temperature) in float64 over the whole vocabulary (or
    over the logits >= threshold): the softmax's normaliser, computed as softmax() computes its terms."""
    if temperature == 1.0:  # one float64 buffer, rewritten in place: a second one costs more than the exps
        z = np.subtract(logits, np.float64(top), dtype=np.float64)
    else:
        z = np.divide(logits, temperature, dtype=np.float64)
        z -= np.float64(top) / temperature
    np.exp(z, out=z)
    if threshold is not None:
        z[logits < threshold] = 0.0
    return float(z.sum())


def nucleus_size(head: SortedHead, top_p: float, min_p: float) -> int:
    """How many candidates top-p then min-p keep of the full sorted order (extending the head at
    least that far, unless the answer is the whole vocabulary)."""
    logits, top = head.logits, head.top
    threshold, limit = None, logits.size
    if min_p > 0.0:
        threshold = top + np.log(min_p)  # min_p()'s own expression, so the same rounding
        limit = int(np.count_nonzero(logits >= threshold))
    if top_p >= 1.0 or limit == 1:
        if threshold is not None and limit <= SORTED_SURVIVORS:
            head.take_down_to(threshold)
        return limit
    total = exp_sum(logits, top)
    m = FIRST_HEAD
    while True:
        if m >= limit and threshold is not None:
            head.take_down_to(threshold)  # exactly min-p's survivors
        else:
            head.extend(min(m, limit))
        if head.complete:  # the chain itself on the sorted vocabulary
            return min(len(top_p_filter(head.ids, head.values, top_p)[0]), limit)
        covered = min(len(head.ids), limit)
        probs = np.exp(np.asarray(head.values[:covered], dtype=np.float64) - np.float64(top)) / total
        cut = int(np.searchsorted(np.cumsum(probs), top_p))  # top_p()'s rule: first index reaching p
        if cut < covered:
            return cut + 1
        if covered == limit:
            return limit  # min-p cuts before top-p's mass is reached
        m *= 4


def sample_untruncated(logits: np.ndarray, top_p: float, min_p: float, temperature: float,
                       rng: np.random.Generator) -> int:
    """The token that top_k(logits, 0), then top_p, min_p and draw pick (the chain of
    processors.py, one random number from rng), sorting only the head of the vocabulary."""
    head = SortedHead(logits)
    keep = nucleus_size(head, top_p, min_p)
    if keep <= len(head.ids):
        return draw(head.ids[:keep], head.values[:keep], temperature, rng)
    # Too many survivors to sort (top-p 1, min-p 0 or small): the candidates are the `keep` largest
    # logits, min-p's threshold (or nothing) tells which; grow the head until its cumulative
    # probability at this temperature reaches the random number.
    r = rng.random()
    top = head.top
    threshold = top + np.log(min_p) if min_p > 0.0 else None
    total = exp_sum(logits, top, temperature, threshold)
    m = FIRST_HEAD
    while True:
        head.extend(min(m, keep))
        if len(head.ids) >= keep:
            return draw_at(head.ids[:keep], head.values[:keep], temperature, r)
        z = np.asarray(head.values, dtype=np.float64) / temperature
        probs = np.exp(z - np.float64(top) / temperature) / total
        i = int(np.searchsorted(np.cumsum(probs), r))  # draw()'s rule, the probabilities summing to 1
        if i < len(probs):
            return int(head.ids[i])
        m *= 4
