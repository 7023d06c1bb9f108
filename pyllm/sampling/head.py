"""The head of the distribution: the largest logits in sorted order, without sorting the rest.

Top-k, top-p, min-p, the draw and `top_logprobs` only look at the most likely tokens. A strided
sample of the logits (sorted once, 2,048 values) guesses a threshold that leaves about twice the
wanted count above it; one pass collects the logits at or above it, and only those are sorted. The
order is that of a full stable sort: largest first, equal logits by lower token id, and equal logits
are never split at the head's end.
"""
from __future__ import annotations

import numpy as np

SAMPLE_SIZE = 2048  # logits sampled (strided) to guess the threshold that keeps a head of a given size


class SortedHead:
    """The largest logits in the order of a full stable sort (largest first, equal logits by lower
    token id), sorted only as far as asked: `ids` and `values` are a prefix of that order."""

    def __init__(self, logits: np.ndarray):
        self.logits = logits
        self.top = logits.max()
        self.ids = np.empty(0, dtype=np.int64)
        self.values = logits[:0]
        self._sample: np.ndarray | None = None

    @property
    def complete(self) -> bool:
        """Whether the whole vocabulary is sorted."""
        return len(self.ids) == self.logits.size

    def extend(self, m: int) -> None:
        """Sort at least the m largest logits (more when equal logits straddle the m-th)."""
        n = self.logits.size
        if len(self.ids) >= min(m, n):
            return
        if 4 * m < n:
            sample = self._sorted_sample()
            rank = 2 * m * sample.size // n + 2  # sample[-rank] leaves about 2m logits above it
            while rank <= sample.size:
                ids = np.flatnonzero(self.logits >= sample[-rank])
                if ids.size >= m:
                    self._keep(ids)
                    return
                rank *= 2
        self._keep(np.arange(n))  # most of the vocabulary (or a sample that misled): sort it all

    def take_down_to(self, threshold: float) -> None:
        """Sort every logit >= threshold (a prefix of the full order: equal logits stay together)."""
        if self.ids.size == 0 or self.values[-1] > threshold:
            self._keep(np.flatnonzero(self.logits >= threshold))

    def _keep(self, ids: np.ndarray) -> None:
        """Make the head the given ids (ascending, a prefix of the full order as a set), sorted."""
        order = np.argsort(-self.logits[ids], kind="stable")  # stable: equal logits keep the lower id first
        self.ids = ids[order]
        self.values = self.logits[self.ids]

    def _sorted_sample(self) -> np.ndarray:
        """Every (n // SAMPLE_SIZE)-th logit, sorted ascending; computed once per head."""
        if self._sample is None:
            self._sample = np.sort(self.logits[::max(1, self.logits.size // SAMPLE_SIZE)])
        return self._sample
