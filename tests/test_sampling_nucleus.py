"""Sampling that sorts only a head of the vocabulary (head.py; nucleus.py with top-k off) against a
full-sort reference written here in plain numpy, and against the processors' chain it replaces:
the same candidates in the same order, the same count kept, the same token for the same random
stream, over random logits of several sizes and shapes, ties, and -inf logits (logit_bias bans).
Top-k too, against the argpartition selection it replaces."""
import numpy as np
import pytest

from pyllm.sampling import Sampler, SamplingParams, draw, min_p, top_k, top_p
from pyllm.sampling.head import SortedHead
from pyllm.sampling.nucleus import nucleus_size, sample_untruncated

TOP_P = [0.1, 0.5, 0.9, 0.95, 0.999, 1.0]
MIN_P = [0.0, 0.01, 0.05, 0.3, 1.0]
TEMPERATURES = [0.25, 0.8, 1.0, 2.0]


class FullSort:
    """The straightforward reference: sort the whole vocabulary (largest first, equal logits by
    lower id), cut by top-p then min-p on the temperature-1 probabilities, draw at temperature."""

    def __init__(self, logits: np.ndarray):
        self.order = np.lexsort((np.arange(logits.size), -logits.astype(np.float64)))
        self.values = logits[self.order]
        z = self.values.astype(np.float64)
        e = np.exp(z - z[0])
        self.cum = np.cumsum(e / e.sum())

    def kept(self, p_top: float, p_min: float) -> int:
        n = self.values.size
        keep = n if p_top >= 1.0 else min(int(np.searchsorted(self.cum, p_top)) + 1, n)
        if p_min > 0.0:
            keep = min(keep, int(np.count_nonzero(self.values[:keep] >= self.values[0] + np.log(p_min))))
        return keep

    def token(self, p_top: float, p_min: float, temperature: float, r: float) -> int:
        keep = self.kept(p_top, p_min)
        z = self.values[:keep].astype(np.float64) / temperature
        e = np.exp(z - z[0])
        probs = e / e.sum()
        return int(self.order[min(int(np.searchsorted(np.cumsum(probs), r * probs.sum())), keep - 1)])


def chain_token(logits: np.ndarray, p_top: float, p_min: float, temperature: float, rng) -> int:
    """The processors' chain as the Sampler ran it with top-k off before nucleus.py."""
    ids, cand = top_k(logits, 0)
    if p_top < 1.0:
        ids, cand = top_p(ids, cand, p_top)
    if p_min > 0.0:
        ids, cand = min_p(ids, cand, p_min)
    return draw(ids, cand, temperature, rng)


def make_logits(kind: str, n: int, seed: int) -> np.ndarray:
    """Random logits: flat, peaked (one to a few leaders), tied (rounded to halves), with bans."""
    g = np.random.default_rng(seed)
    x = g.standard_normal(n)
    if kind == "flat":
        x = x * 1.0
    elif kind == "spread":
        x = x * 4.0
    elif kind == "peaked":
        x = x * 2.0
        x[g.integers(0, n, size=3)] += [14.0, 12.5, 11.0]
    elif kind == "tied":
        x = np.round(x * 6.0) / 2.0  # many equal logits everywhere, at every cut
    elif kind == "banned":
        x = x * 3.0
        x[g.random(n) < 0.3] = -np.inf
        x[np.argmax(x)] = -np.inf  # the top token banned as well
    return x.astype(np.float32)


def check_same_draws(logits: np.ndarray, ref: FullSort, p_top: float, p_min: float, temperature: float,
                     seed: int, draws: int) -> None:
    """Sampler (top-k off), sample_untruncated, the old chain and the reference pick the same tokens
    from the same random stream, and leave it in the same state."""
    g_ref, g_new, g_chain = (np.random.default_rng(seed) for _ in range(3))
    sampler = Sampler(SamplingParams(top_k=0, top_p=p_top, min_p=p_min, temperature=temperature, seed=seed))
    expected = [ref.token(p_top, p_min, temperature, g_ref.random()) for _ in range(draws)]
    assert [sampler(logits, []) for _ in range(draws)] == expected
    assert [sample_untruncated(logits, p_top, p_min, temperature, g_new) for _ in range(draws)] == expected
    assert [chain_token(logits, p_top, p_min, temperature, g_chain) for _ in range(draws)] == expected
    assert g_new.random() == g_ref.random() == sampler.rng.random()  # one number per token, as before


@pytest.mark.parametrize("n", [7, 1000, 49152])
@pytest.mark.parametrize("kind", ["flat", "spread", "peaked", "tied", "banned"])
def test_same_tokens_as_the_full_sort(n, kind):
    logits = make_logits(kind, n, seed=n + len(kind))
    ref = FullSort(logits)
    for i, p_top in enumerate(TOP_P):
        for j, p_min in enumerate(MIN_P):
            head = SortedHead(logits)
            assert nucleus_size(head, p_top, p_min) == ref.kept(p_top, p_min), (p_top, p_min)
            temperature = TEMPERATURES[(i + j) % len(TEMPERATURES)]
            check_same_draws(logits, ref, p_top, p_min, temperature, seed=100 * i + j, draws=6)


@pytest.mark.parametrize("kind", ["spread", "peaked", "tied", "banned"])
def test_same_tokens_at_gemma3_vocabulary(kind):
    logits = make_logits(kind, 262144, seed=7)
    ref = FullSort(logits)
    for i, (p_top, p_min) in enumerate([(0.9, 0.0), (0.95, 0.0), (1.0, 0.0), (1.0, 0.05), (0.95, 0.05), (0.5, 0.3)]):
        assert nucleus_size(SortedHead(logits), p_top, p_min) == ref.kept(p_top, p_min)
        check_same_draws(logits, ref, p_top, p_min, TEMPERATURES[i % len(TEMPERATURES)], seed=i, draws=4)


@pytest.mark.parametrize("kind", ["flat", "peaked", "tied", "banned"])
def test_sorted_head_is_a_prefix_of_the_full_sort(kind):
    logits = make_logits(kind, 49152, seed=3)
    ref = FullSort(logits)
    for m in [1, 20, 128, 1000, 12000, 49152]:
        head = SortedHead(logits)
        head.extend(m)
        k = len(head.ids)
        assert k >= m
        assert list(head.ids) == list(ref.order[:k]) and np.array_equal(head.values, ref.values[:k])
        # equal logits are never split: the head ends where the logit changes (or at the vocabulary's end)
        assert k == logits.size or ref.values[k] < ref.values[k - 1]


def test_ties_go_to_the_lower_token_id():
    """The tie rule: equal logits are ordered by token id, at the top-p cut and in the draw."""
    logits = np.zeros(5000, dtype=np.float32)
    logits[[4000, 17, 2500, 300]] = 10.0  # four equal leaders, not in id order
    head = SortedHead(logits)
    assert nucleus_size(head, 0.3, 0.0) == 2  # each leader holds ~0.24: top-p 0.3 keeps two of them
    assert list(head.ids[:2]) == [17, 300]
    g = np.random.default_rng(0)
    picked = {sample_untruncated(logits, 0.3, 0.0, 1.0, g) for _ in range(200)}
    assert picked == {17, 300}
    # min-p 0.5 keeps the four leaders: r in the first quarter picks the lowest id, and so on up
    ids = np.array([sample_untruncated(logits, 1.0, 0.5, 1.0, np.random.default_rng(s)) for s in range(400)])
    rs = np.array([np.random.default_rng(s).random() for s in range(400)])
    np.testing.assert_array_equal(ids, np.array([17, 300, 2500, 4000])[np.minimum((rs * 4).astype(int), 3)])


def test_sampler_with_top_k_at_least_the_vocabulary_takes_the_same_path():
    logits = make_logits("spread", 1000, seed=11)
    ref = FullSort(logits)
    for k in (0, 1000, 5000):
        s = Sampler(SamplingParams(top_k=k, top_p=0.9, min_p=0.01, temperature=0.7, seed=4))
        g = np.random.default_rng(4)
        assert [s(logits, []) for _ in range(20)] == [ref.token(0.9, 0.01, 0.7, g.random()) for _ in range(20)]


def test_logit_bias_bans_are_never_drawn():
    logits = make_logits("spread", 49152, seed=5)
    leaders = [int(i) for i in np.argsort(-logits)[:50]]
    params = SamplingParams(top_k=0, top_p=1.0, min_p=0.0, temperature=1.5, seed=9,
                            logit_bias={t: -np.inf for t in leaders})
    biased = logits.copy()
    biased[leaders] = -np.inf
    ref, g, s = FullSort(biased), np.random.default_rng(9), Sampler(params)
    got = [s(logits, []) for _ in range(300)]
    assert not set(got) & set(leaders)
    assert got == [ref.token(1.0, 0.0, 1.5, g.random()) for _ in range(300)]


def test_the_draw_reaches_deep_into_a_flat_tail():
    """Top-p 1 on a nearly uniform distribution: most draws land far beyond the first head."""
    logits = make_logits("flat", 49152, seed=2) * np.float32(0.01)
    ref = FullSort(logits)
    g, g_ref = np.random.default_rng(3), np.random.default_rng(3)
    got = [sample_untruncated(logits, 1.0, 0.0, 1.0, g) for _ in range(30)]
    assert got == [ref.token(1.0, 0.0, 1.0, g_ref.random()) for _ in range(30)]
    ranks = [int(np.flatnonzero(ref.order == t)[0]) for t in got]
    assert max(ranks) > 10000  # the growth, not only the first head, was exercised


def argpartition_top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k as it was: argpartition, then a stable sort of the k (ties: argpartition's order)."""
    n = logits.size
    ids = np.argpartition(logits, n - k)[n - k:]
    order = np.argsort(-logits[ids], kind="stable")
    return ids[order], logits[ids[order]]


@pytest.mark.parametrize("n", [50, 49152, 262144])
@pytest.mark.parametrize("kind", ["spread", "peaked", "tied", "banned"])
def test_top_k_is_the_head_of_the_full_sort(n, kind):
    logits = make_logits(kind, n, seed=n + 1)
    ref = FullSort(logits)
    for k in (1, 5, 40, 49):
        ids, values = top_k(logits, k)
        assert list(ids) == list(ref.order[:k]) and np.array_equal(values, ref.values[:k])
        if kind != "tied" and len(set(ref.values[:k + 1].tolist())) == k + 1:  # no equal logits: as before
            old_ids, old_values = argpartition_top_k(logits, k)
            assert list(ids) == list(old_ids) and np.array_equal(values, old_values)


def test_top_k_ties_at_the_cut_go_to_the_lower_token_id():
    logits = np.zeros(1000, dtype=np.float32)
    logits[[900, 5, 640, 77, 300]] = 2.0
    logits[[10, 20]] = 3.0
    ids, _ = top_k(logits, 4)
    assert list(ids) == [10, 20, 5, 77]
    s = Sampler(SamplingParams(top_k=3, top_p=1.0, min_p=0.0, temperature=100.0, seed=0))
    assert {s(logits, []) for _ in range(200)} == {10, 20, 5}
