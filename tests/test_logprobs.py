"""Log-probabilities for `logprobs`/`top_logprobs` against a plain numpy log-softmax over the fully
sorted vocabulary: the model's distribution at temperature 1, before any sampling step."""
import numpy as np
import pytest

from pyllm import NumericalError
from pyllm.sampling import Sampler, SamplingParams, log_normalizer, token_logprobs, top_logprobs


def reference(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Token ids by decreasing logit (equal logits: lower id first), every token's log-probability,
    and log(sum(exp(logits)))."""
    z = logits.astype(np.float64)
    lse = z.max() + np.log(np.sum(np.exp(z - z.max())))
    return np.lexsort((np.arange(z.size), -z)), z - lse, lse


@pytest.mark.parametrize("n_vocab", [3, 1000, 49152, 262144])
@pytest.mark.parametrize("kind", ["spread", "tied", "with -inf"])
def test_top_logprobs_match_the_full_log_softmax(n_vocab, kind):
    g = np.random.default_rng(n_vocab)
    x = g.standard_normal(n_vocab) * 4
    if kind == "tied":
        x = np.round(x)  # equal logits across the top 20
    elif kind == "with -inf":
        x[g.random(n_vocab) < 0.2] = -np.inf
        x[np.argmax(x)] = -np.inf
    x = x.astype(np.float32)
    order, logp, lse = reference(x)
    for n in sorted({0, 1, 5, 20, min(n_vocab, 20)}):
        ids, lp = top_logprobs(x, min(n, n_vocab))
        assert list(ids) == list(order[:len(ids)]) and len(ids) == min(n, n_vocab)
        np.testing.assert_allclose(lp, logp[ids], rtol=1e-12, atol=1e-12)
    token = int(order[min(3, n_vocab - 1)])
    got = token_logprobs(x, token, 20 if n_vocab >= 20 else n_vocab)
    assert got.token == token
    np.testing.assert_allclose(got.logprob, logp[token], rtol=1e-12, atol=1e-12)  # -inf for a -inf logit
    assert list(got.top_ids) == list(order[:len(got.top_ids)])
    finite = np.isfinite(logp)
    assert abs(np.exp(logp[finite]).sum() - 1.0) < 1e-12
    assert abs(log_normalizer(x) - lse) <= 1e-12 * max(1.0, abs(lse))


def test_a_banned_token_keeps_its_model_logprob():
    """logit_bias changes what is sampled, not the reported distribution: pass the raw logits."""
    x = np.array([3.0, 1.0, 0.5, -1.0], dtype=np.float32)
    sampler = Sampler(SamplingParams(temperature=0, logit_bias={0: -np.inf}))
    chosen = sampler(x, [])
    assert chosen == 1
    got = token_logprobs(x, chosen, 2)
    _, logp, _ = reference(x)
    assert list(got.top_ids) == [0, 1]  # the banned token is still the model's favourite
    np.testing.assert_allclose([got.logprob, *got.top_logprobs], [logp[1], logp[0], logp[1]], rtol=1e-12)


def test_bad_input_is_named():
    x = np.zeros(10, dtype=np.float32)
    for bad_n in (-1, 11, 2.0, True):
        with pytest.raises(ValueError, match="n \\(the number of top"):
            top_logprobs(x, bad_n)
    for bad_token in (-1, 10, 1.5, None):
        with pytest.raises(ValueError, match="token must be"):
            token_logprobs(x, bad_token, 3)
    for bad in (np.zeros((2, 5), np.float32), np.zeros(0, np.float32), np.arange(5)):
        with pytest.raises(ValueError, match="logits must be"):
            top_logprobs(bad, 1)
    y = x.copy()
    y[4] = np.nan
    with pytest.raises(NumericalError, match="NaN"):
        top_logprobs(y, 1)
    y[4] = np.inf
    with pytest.raises(NumericalError, match="\\+inf"):
        token_logprobs(y, 0)
    with pytest.raises(ValueError, match="every logit is -inf"):
        log_normalizer(np.full(4, -np.inf, dtype=np.float32))
