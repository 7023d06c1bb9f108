"""Each sampler alone against a direct numpy computation, then the composed Sampler."""
import numpy as np
import pytest

from pyllm import NumericalError
from pyllm.sampling import (Sampler, SamplingParams, apply_logit_bias, apply_penalties, draw, min_p,
                            softmax, top_k, top_p)

rng = np.random.default_rng(0)
LOGITS = rng.standard_normal(1000).astype(np.float32) * 3


def test_top_k_is_the_k_largest_sorted():
    ids, vals = top_k(LOGITS, 40)
    expected = np.argsort(-LOGITS)[:40]
    assert list(ids) == list(expected) and np.all(np.diff(vals) <= 0)
    assert len(top_k(LOGITS, 0)[0]) == 1000 and len(top_k(LOGITS, 5000)[0]) == 1000


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.95, 0.999])
def test_top_p_keeps_smallest_set_reaching_p(p):
    ids, vals = top_k(LOGITS, 0)
    kept, _ = top_p(ids, vals, p)
    probs = np.sort(np.exp(LOGITS - LOGITS.max()) / np.exp(LOGITS - LOGITS.max()).sum())[::-1]
    n = len(kept)
    assert probs[:n].sum() >= p - 1e-12          # reaches p ...
    assert n == 1 or probs[:n - 1].sum() < p     # ... and one fewer would not
    assert set(kept) == set(np.argsort(-LOGITS)[:n])
    assert len(top_p(ids, vals, 1.0)[0]) == 1000


@pytest.mark.parametrize("p", [0.0, 0.01, 0.05, 0.5, 1.0])
def test_min_p_drops_tokens_below_fraction_of_top(p):
    ids, vals = top_k(LOGITS, 0)
    kept, _ = min_p(ids, vals, p)
    probs = softmax(LOGITS)
    expected = np.flatnonzero(probs >= p * probs.max() * (1 - 1e-6))
    assert set(kept) == set(expected)


def test_penalties_follow_ctrl_and_openai_rules():
    logits = np.array([2.0, -2.0, 1.0, 0.5], dtype=np.float32)
    apply_penalties(logits, [0, 1, 1, 3], repeat_penalty=2.0, frequency_penalty=0.1, presence_penalty=0.25)
    np.testing.assert_allclose(logits, [2.0 / 2 - 0.1 - 0.25, -2.0 * 2 - 0.2 - 0.25, 1.0, 0.5 / 2 - 0.1 - 0.25])


def test_logit_bias_and_ban():
    logits = np.zeros(5, dtype=np.float32)
    apply_logit_bias(logits, {1: 2.5, 3: -np.inf})
    assert logits[1] == 2.5 and logits[3] == -np.inf


def test_draw_matches_the_distribution():
    ids = np.array([7, 3, 9])
    logits = np.log(np.array([0.6, 0.3, 0.1]))
    g = np.random.default_rng(1)
    counts = {i: 0 for i in ids}
    for _ in range(20000):
        counts[draw(ids, logits, 1.0, g)] += 1
    assert abs(counts[7] / 20000 - 0.6) < 0.02 and abs(counts[9] / 20000 - 0.1) < 0.01
    hot = [draw(ids, logits, 0.05, g) for _ in range(200)]  # low temperature: nearly greedy
    assert hot.count(7) >= 198


def test_sampler_greedy_seeded_and_restricted():
    greedy = Sampler(SamplingParams(temperature=0, repeat_penalty=1.0))
    assert greedy(LOGITS, []) == int(np.argmax(LOGITS))
    a = [Sampler(SamplingParams(seed=5))(LOGITS, []) for _ in range(3)]
    s1, s2 = Sampler(SamplingParams(seed=5)), Sampler(SamplingParams(seed=5))
    assert [s1(LOGITS, []) for _ in range(50)] == [s2(LOGITS, []) for _ in range(50)]
    assert len(set(a)) == 1
    allowed = set(np.argsort(-LOGITS)[:3])
    s = Sampler(SamplingParams(top_k=3, top_p=1.0, min_p=0.0, temperature=5.0, seed=0))
    assert {s(LOGITS, []) for _ in range(300)} == allowed
    banned = Sampler(SamplingParams(temperature=0, logit_bias={int(np.argmax(LOGITS)): -np.inf}))
    assert banned(LOGITS, []) == int(np.argsort(-LOGITS)[1])


def test_bad_parameters_are_named():
    for kw, name in [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                     ({"min_p": 2}, "min_p"), ({"top_k": -1}, "top_k"), ({"logit_bias": {5000: 1}}, "logit_bias"),
                     ({"logit_bias": {5: float("nan")}}, "logit_bias"), ({"logit_bias": {5: float("inf")}}, "logit_bias"),
                     ({"repeat_penalty": float("inf")}, "repeat_penalty"),
                     ({"frequency_penalty": float("nan")}, "frequency_penalty"),
                     ({"presence_penalty": float("-inf")}, "presence_penalty")]:
        with pytest.raises(ValueError, match=name):
            SamplingParams(**kw).check(1000)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_nan_logits_are_an_error_not_a_token(temperature):
    logits = LOGITS.copy()
    logits[[3, 17]] = np.nan
    for params in (SamplingParams(temperature=temperature, seed=0),
                   SamplingParams(temperature=temperature, top_k=0, top_p=1.0, min_p=0.0, seed=0)):
        with pytest.raises(NumericalError, match="NaN \\(2 of"):
            Sampler(params)(logits, [])
    with pytest.raises(NumericalError, match=f"NaN \\({LOGITS.size} of"):
        Sampler(SamplingParams(temperature=temperature))(np.full_like(LOGITS, np.nan), [])
    SamplingParams(logit_bias={5: float("-inf")}).check(LOGITS.size)  # a ban stays allowed


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_banning_every_token_raises(temperature):
    ban_all = {i: -np.inf for i in range(LOGITS.size)}
    with pytest.raises(ValueError, match="every token is banned"):
        Sampler(SamplingParams(temperature=temperature, logit_bias=ban_all))(LOGITS, [])
