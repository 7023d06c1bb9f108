"""The C forward pass against the numpy reference on small random models, and Model's contract."""
import dataclasses

import numpy as np
import pytest

from pyllm import Model
from pyllm._native import available_kernels
from pyllm.types import ModelConfig
from pyllm.errors import ContextFullError
from reference import forward, random_model

SHAPES = {
    "gqa": dict(dim=64, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16),
    "mha": dict(dim=48, hidden_dim=80, n_layers=3, n_heads=3, n_kv_heads=3, head_dim=16),
    "mqa-odd": dict(dim=36, hidden_dim=52, n_layers=2, n_heads=6, n_kv_heads=1, head_dim=10),
    "wide-heads": dict(dim=32, hidden_dim=64, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=24),
    "heads-64": dict(dim=64, hidden_dim=64, n_layers=1, n_heads=3, n_kv_heads=1, head_dim=64),
    "heads-128": dict(dim=64, hidden_dim=64, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=128),
    "heads-64-group-4": dict(dim=64, hidden_dim=64, n_layers=1, n_heads=8, n_kv_heads=2, head_dim=64),
    "heads-128-group-3": dict(dim=64, hidden_dim=64, n_layers=1, n_heads=3, n_kv_heads=1, head_dim=128),
    "qwen3": dict(dim=64, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32),
    "heads-96": dict(dim=64, hidden_dim=64, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=96),
    "heads-256-group-4": dict(dim=64, hidden_dim=64, n_layers=1, n_heads=4, n_kv_heads=1, head_dim=256),
}


def config(shape: str, tied: bool = True, bias: bool = False, vocab: int = 97, ctx: int = 64,
           qk_norm: bool = False) -> ModelConfig:
    return ModelConfig(**SHAPES[shape], vocab_size=vocab, max_seq_len=ctx, rope_theta=10000.0,
                       norm_eps=1e-5, tied_embeddings=tied, qkv_bias=bias, qk_norm=qk_norm)


TOKENS = [5, 17, 3, 96, 0, 42, 42, 8, 61, 77, 13, 2, 90, 33, 21, 7, 1, 64, 50]


@pytest.mark.parametrize("kernels", available_kernels())
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("tied,bias", [(True, False), (False, True), (False, False)])
def test_f32_logits_match_reference(tmp_path, kernels, shape, tied, bias):
    cfg = config(shape, tied, bias)
    w = random_model(tmp_path / "m.bin", cfg, seed=hash((shape, tied, bias)) % 1000)
    ref = forward(w, cfg, TOKENS)
    for n_threads in (1, 2):
        with Model(tmp_path / "m.bin", n_threads=n_threads, kernels=kernels) as m:
            batch = m.logits(TOKENS)
            assert batch.shape == (len(TOKENS), cfg.vocab_size) and batch.dtype == np.float32
            assert np.abs(batch - ref).max() < 1e-4
            m.reset()
            steps = np.stack([m.eval([t]) for t in TOKENS])
            assert np.abs(steps - ref).max() < 1e-4


@pytest.mark.parametrize("kernels", available_kernels())
@pytest.mark.parametrize("shape,bias", [("qwen3", False), ("wide-heads", True), ("mqa-odd", False)])
def test_qk_norm_logits_match_reference(tmp_path, kernels, shape, bias):
    """Per-head q/k RMSNorm before RoPE (Qwen3), with heads wider in total than the residual stream
    (q_dim > dim) or narrower, as a prompt and token by token."""
    cfg = config(shape, tied=False, bias=bias, qk_norm=True)
    w = random_model(tmp_path / "m.bin", cfg, seed=7)
    ref = forward(w, cfg, TOKENS)
    for n_threads in (1, 2):
        with Model(tmp_path / "m.bin", n_threads=n_threads, kernels=kernels) as m:
            assert m.config.qk_norm
            assert np.abs(m.logits(TOKENS) - ref).max() < 1e-4
            m.reset()
            assert np.abs(np.stack([m.eval([t]) for t in TOKENS]) - ref).max() < 1e-4


@pytest.mark.parametrize("kernels", available_kernels())
@pytest.mark.parametrize("rope_dim", [2, 24])
def test_partial_rotary_matches_reference(tmp_path, kernels, rope_dim):
    """RoPE over only each head's first rope_dim dimensions (Phi-4-mini rotates 3/4), at
    theta^(-2i / rope_dim), the rest passed through, as a prompt and token by token; rotating the
    whole head instead differs."""
    cfg = dataclasses.replace(config("qwen3", tied=True), rope_dim=rope_dim)
    assert cfg.head_dim == 32
    w = random_model(tmp_path / "m.bin", cfg, seed=12)
    ref = forward(w, cfg, TOKENS)
    assert np.abs(forward(w, dataclasses.replace(cfg, rope_dim=None), TOKENS) - ref).max() > 1e-2
    for n_threads in (1, 2):
        with Model(tmp_path / "m.bin", n_threads=n_threads, kernels=kernels) as m:
            assert m.config.rotary_dim == rope_dim
            assert np.abs(m.logits(TOKENS) - ref).max() < 1e-4
            m.reset()
            assert np.abs(np.stack([m.eval([t]) for t in TOKENS]) - ref).max() < 1e-4


@pytest.mark.parametrize("kernels", available_kernels())
@pytest.mark.parametrize("nope", [(1,), (0, 1)])
def test_nope_layers_match_reference(tmp_path, kernels, nope):
    """Layers without RoPE (SmolLM3's NoPE) skip the rotation of q and k, and only those layers,
    as a prompt and token by token; the same model with every layer rotated differs."""
    cfg = dataclasses.replace(config("qwen3", tied=True), nope_layers=nope)
    w = random_model(tmp_path / "m.bin", cfg, seed=11)
    ref = forward(w, cfg, TOKENS)
    assert np.abs(forward(w, dataclasses.replace(cfg, nope_layers=()), TOKENS) - ref).max() > 1e-2
    for n_threads in (1, 2):
        with Model(tmp_path / "m.bin", n_threads=n_threads, kernels=kernels) as m:
            assert m.config.nope_layers == nope
            assert np.abs(m.logits(TOKENS) - ref).max() < 1e-4
            m.reset()
            assert np.abs(np.stack([m.eval([t]) for t in TOKENS]) - ref).max() < 1e-4


def gemma_like(window: int | None = 5, ctx: int = 64, **changes) -> ModelConfig:
    """A Gemma 3-shaped config: GELU-gated MLP, sandwich norms, scaled embeddings, q/k norms, an
    attention scale apart from head_dim, and sliding layers with their own RoPE base around a global one."""
    cfg = dataclasses.replace(config("mqa-odd", tied=True, ctx=ctx, qk_norm=True), n_layers=3,
                              sliding_window=window, full_attention_layers=(1,) if window else (),
                              rope_theta_swa=100.0 if window else None, activation="gelu_tanh",
                              embed_scale=6.0, attn_scale=0.2, post_norms=True)
    return dataclasses.replace(cfg, **changes)


@pytest.mark.parametrize("kernels", available_kernels())
def test_gemma_features_match_reference(tmp_path, kernels):
    """GELU gate, post-attention and post-MLP norms, embedding and attention scales, and sliding
    layers (window 5: a query sees itself and the 4 before) with their own RoPE base beside a
    global layer, as a prompt and token by token, past the window; each feature changes the logits."""
    cfg = gemma_like()
    w = random_model(tmp_path / "m.bin", cfg, seed=13)
    ref = forward(w, cfg, TOKENS)
    for change in ({"sliding_window": None, "full_attention_layers": ()}, {"full_attention_layers": (0, 1)},
                   {"rope_theta_swa": None}, {"activation": "silu"}, {"embed_scale": None}, {"attn_scale": None}):
        assert np.abs(forward(w, dataclasses.replace(cfg, **change), TOKENS) - ref).max() > 1e-2, change
    for n_threads in (1, 2):
        with Model(tmp_path / "m.bin", n_threads=n_threads, kernels=kernels) as m:
            assert m.config == cfg
            assert np.abs(m.logits(TOKENS) - ref).max() < 1e-4
            m.reset()
            assert np.abs(np.stack([m.eval([t]) for t in TOKENS]) - ref).max() < 1e-4


@pytest.mark.parametrize("window", [7, 40, 600])
def test_sliding_window_past_the_cache_it_keeps(tmp_path, window):
    """Far past the window (its cache holds window - 1 positions and a batch, then moves what is
    still seen to its start): 1300 tokens as one prompt (in 512-token chunks) and token by token
    equal the reference."""
    cfg = gemma_like(window, ctx=1400, dim=32, hidden_dim=32, n_heads=2, n_kv_heads=1, head_dim=16)
    w = random_model(tmp_path / "m.bin", cfg, seed=window)
    tokens = np.random.default_rng(window).integers(0, cfg.vocab_size, 1300).tolist()
    ref = forward(w, cfg, tokens)
    with Model(tmp_path / "m.bin", n_threads=2) as m:
        assert np.abs(m.logits(tokens) - ref).max() < 1e-4
        m.reset()
        steps = np.stack([m.eval([t]) for t in tokens])
    assert np.abs(steps - ref).max() < 1e-4


def test_rewinding_past_dropped_keys_replays(tmp_path):
    """A sequence rewound to before what the sliding layers still hold is replayed from the start
    (the C core refuses the position; the session knows the tokens), and one rewound within
    them continues where it is: both give the reference's logits."""
    cfg = gemma_like(6, ctx=1400, dim=32, hidden_dim=32, n_heads=2, n_kv_heads=1, head_dim=16)
    w = random_model(tmp_path / "m.bin", cfg, seed=21)
    tokens = np.random.default_rng(3).integers(0, cfg.vocab_size, 1200).tolist()
    ref = forward(w, cfg, tokens)
    with Model(tmp_path / "m.bin", n_threads=2) as m:
        m.eval(tokens[:1100])
        before = m._session().n_evaluated
        m.truncate(1098)  # within the last window: continues in place
        np.testing.assert_allclose(m.eval(tokens[1098:1100]), ref[1099], atol=1e-4)
        assert m._session().n_evaluated == before + 2
        m.truncate(300)  # long dropped by the sliding layers: replayed from position 0
        np.testing.assert_allclose(m.eval(tokens[300:310]), ref[309], atol=1e-4)
        assert m._session().n_evaluated == before + 2 + 310 and m.n_past == 310
        out = m.prefill(tokens[:1200])  # the cache holds a prefix: only the rest runs
        np.testing.assert_allclose(out, ref[1199], atol=1e-4)
        m.truncate(250)
        np.testing.assert_allclose(m.prefill(tokens[:260]), ref[259], atol=1e-4)


@pytest.mark.parametrize("kernels", available_kernels())
@pytest.mark.parametrize("type_name", ["f16", "q8_0", "q4_0", "q4_1"])
def test_quantized_model_close_to_reference(tmp_path, kernels, type_name):
    """Same weights (after encoding) in the reference: only 8-bit activations differ."""
    cfg = config("gqa", tied=False, bias=True)
    w = random_model(tmp_path / "m.bin", cfg, type_name, seed=3)
    ref = forward(w, cfg, TOKENS)
    with Model(tmp_path / "m.bin", n_threads=2, kernels=kernels) as m:
        out = m.logits(TOKENS)
    bound = 1e-4 if type_name == "f16" else 0.03 * np.abs(ref).max()
    assert np.abs(out - ref).max() < bound
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_chunks_longer_than_a_batch(tmp_path):
    """More tokens than one pass's batch (512) go through in chunks with the same result."""
    cfg = config("gqa", ctx=700)
    w = random_model(tmp_path / "m.bin", cfg, seed=5)
    tokens = list(np.random.default_rng(0).integers(0, cfg.vocab_size, 600))
    ref = forward(w, cfg, tokens)
    with Model(tmp_path / "m.bin", n_threads=2) as m:
        assert np.abs(m.logits(tokens) - ref).max() < 1e-4
        m.reset()
        assert np.abs(m.eval(tokens) - ref[-1]).max() < 1e-4


@pytest.mark.parametrize("kernels", available_kernels())
@pytest.mark.parametrize("shape", list(SHAPES))
def test_token_by_token_equals_prompt_exactly(tmp_path, kernels, shape):
    """Bit for bit: a token's logits do not depend on whether it arrived in a prompt or alone, so a
    seeded generation reproduces whether or not its prompt was reused from the cache."""
    cfg = config(shape)
    random_model(tmp_path / "m.bin", cfg, seed=3)
    with Model(tmp_path / "m.bin", n_threads=2, kernels=kernels) as m:
        batch = m.logits(TOKENS)
        m.reset()
        alone = np.stack([m.eval(TOKENS[i:i + 1]) for i in range(len(TOKENS))])
    np.testing.assert_array_equal(alone, batch)


@pytest.mark.parametrize("kernels", available_kernels())
@pytest.mark.parametrize("type_name", ["q8_0", "q4_k"])
def test_thread_count_does_not_change_a_bit(tmp_path, kernels, type_name):
    """Logits bit for bit with 1, 2 and 3 threads, as a prompt and token by token. A single token's
    norms and gated activation are split by columns, and the rows of its larger matmuls (over 2 MiB
    here: gate/up and the classifier) go to whichever thread claims them first."""
    cfg = ModelConfig(dim=512, hidden_dim=4096, n_layers=2, n_heads=8, n_kv_heads=2, head_dim=64,
                      vocab_size=4096, max_seq_len=64, rope_theta=10000.0, norm_eps=1e-5,
                      tied_embeddings=False, qkv_bias=False, qk_norm=False)
    random_model(tmp_path / "m.bin", cfg, type_name, seed=11)
    runs = []
    for n_threads in (1, 2, 3):
        with Model(tmp_path / "m.bin", n_threads=n_threads, kernels=kernels) as m:
            batch = m.logits(TOKENS[:8])
            m.reset()
            alone = np.stack([m.eval([t]) for t in TOKENS[:8]])
        runs.append((batch, alone))
    np.testing.assert_array_equal(runs[0][1], runs[0][0])
    for batch, alone in runs[1:]:
        np.testing.assert_array_equal(batch, runs[0][0])
        np.testing.assert_array_equal(alone, runs[0][1])


def test_eval_appends_to_cache(tmp_path):
    cfg = config("mha")
    w = random_model(tmp_path / "m.bin", cfg, seed=1)
    ref = forward(w, cfg, TOKENS)
    with Model(tmp_path / "m.bin", n_threads=2) as m:
        m.logits(TOKENS[:5])
        assert m.n_past == 5
        np.testing.assert_allclose(m.eval(TOKENS[5:9]), ref[8], atol=1e-4)
        np.testing.assert_allclose(m.eval(np.array(TOKENS[9:10])), ref[9], atol=1e-4)
        assert m.n_past == 10


def test_several_models_in_one_process(tmp_path):
    cfg_a, cfg_b = config("gqa"), config("mha", tied=False)
    wa = random_model(tmp_path / "a.bin", cfg_a, seed=1)
    wb = random_model(tmp_path / "b.bin", cfg_b, seed=2)
    with Model(tmp_path / "a.bin") as a, Model(tmp_path / "b.bin") as b:
        for t in range(len(TOKENS)):  # interleaved use
            la, lb = a.eval([TOKENS[t]]), b.eval([TOKENS[t]])
        np.testing.assert_allclose(la, forward(wa, cfg_a, TOKENS)[-1], atol=1e-4)
        np.testing.assert_allclose(lb, forward(wb, cfg_b, TOKENS)[-1], atol=1e-4)


def test_context_and_token_errors(tmp_path):
    cfg = config("gqa", ctx=16)
    random_model(tmp_path / "m.bin", cfg)
    with Model(tmp_path / "m.bin", n_ctx=8) as m:
        assert m.n_ctx == 8
        with pytest.raises(ContextFullError, match="do not fit"):
            m.logits(list(range(9)))
        m.eval(list(range(6)))
        with pytest.raises(ContextFullError, match="6 of 8"):
            m.eval([1, 2, 3])
        assert m.n_past == 6
        m.reset()
        m.eval(list(range(8)))
        with pytest.raises(ValueError, match="token id 97 at position 1"):
            m.logits([1, 97])
        with pytest.raises(ValueError, match="token id -1"):
            m.eval([-1])
        with pytest.raises(ValueError, match="non-empty"):
            m.eval([])
        with pytest.raises(ValueError, match="integers"):
            m.eval([1.5])
    with pytest.raises(ValueError, match="n_threads"):
        Model(tmp_path / "m.bin", n_threads=0)
    with pytest.raises(ValueError, match="n_ctx"):
        Model(tmp_path / "m.bin", n_ctx=0)
    with pytest.raises(ValueError, match="unknown kernels"):
        Model(tmp_path / "m.bin", kernels="sse9")


def test_closed_model_refuses_work(tmp_path):
    random_model(tmp_path / "m.bin", config("gqa"))
    m = Model(tmp_path / "m.bin")
    m.close()
    m.close()  # twice is fine
    with pytest.raises(Exception, match="closed"):
        m.eval([1])
    assert m.config.n_layers == 2
