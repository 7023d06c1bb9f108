"""The paged KV cache and the batched multi-sequence forward pass: batches of many sequences give
exactly what each sequence gives alone (float32 and quantized weights), against the numpy
reference too; shared prefixes, forks with copy on write, sliding windows far past the window with
their blocks returned, a full pool, and block tables that point outside the cache."""
import dataclasses

import numpy as np
import pytest

from pyllm import ContextFullError, EngineError, Model
from pyllm.paged import BLOCK_ROWS, PagedCache
from reference import forward, random_model
from test_model import available_kernels, config, gemma_like


def lengths_tokens(vocab: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, n).tolist() for n in lengths]


@pytest.mark.parametrize("kernels", available_kernels())
@pytest.mark.parametrize("type_name", ["f32", "q8_0", "q4_0"])
def test_batch_of_sequences_equals_each_alone(tmp_path, kernels, type_name):
    """Seven sequences of different lengths, prompts in one batch then decoding together, token by
    token: every logit row equals the same sequence run alone in a session, bit for bit (each
    token's result depends on its own row and sequence only), and the f32 ones the reference."""
    cfg = dataclasses.replace(config("gqa", ctx=96), dim=64)
    w = random_model(tmp_path / "m.bin", cfg, type_name=type_name, seed=5)
    prompts = lengths_tokens(cfg.vocab_size, [1, 3, 15, 16, 17, 33, 40], seed=1)
    follow = lengths_tokens(cfg.vocab_size, [12] * len(prompts), seed=2)
    with Model(tmp_path / "m.bin", n_threads=2, kernels=kernels) as m:
        alone = [m.logits(p + f) for p, f in zip(prompts, follow)]
        cache = PagedCache(m, 64, n_ctx=96, max_seqs=8, n_batch=160)
        seqs = [cache.open(p)[0] for p in prompts]
        got = [[row] for row in cache.forward([(s, p, True) for s, p in zip(seqs, prompts)])]
        for i in range(12):
            for g, row in zip(got, cache.forward([(s, [f[i]], True) for s, f in zip(seqs, follow)])):
                g.append(row)
    for p, a, g in zip(prompts, alone, got):
        assert np.array_equal(np.stack(g), a[len(p) - 1:])
    if type_name == "f32":
        for p, f, a in zip(prompts, follow, alone):
            assert np.abs(a - forward(w, cfg, p + f)).max() < 1e-4


def test_shared_prefix_reuses_blocks_and_gives_the_same_logits(tmp_path):
    cfg = config("gqa", ctx=128)
    random_model(tmp_path / "m.bin", cfg, seed=6)
    (prefix,) = lengths_tokens(cfg.vocab_size, [40], seed=3)
    a, b = prefix + [1, 2, 3], prefix + [4, 5]
    with Model(tmp_path / "m.bin", n_threads=2) as m:
        cache = PagedCache(m, 32, n_ctx=128, max_seqs=4)
        first, held = cache.open(a)
        assert held == 0
        cache.forward([(first, a, True)])
        second, held = cache.open(b)
        assert held == 32 and second.blocks[:2] == first.blocks[:2]  # two whole blocks of the prefix
        out = cache.forward([(second, b[held:], True)])[0]
        assert np.array_equal(out, m.logits(b)[-1])
        # the prompt's last token is always computed, even when all of it is registered
        third, held = cache.open(a[:32])
        assert held == 16
        cache.close(first)
        cache.close(second)
        cache.close(third)
        assert cache.available() == 32


def test_fork_copies_a_shared_block_before_writing(tmp_path):
    cfg = config("gqa", ctx=128)
    random_model(tmp_path / "m.bin", cfg, seed=7)
    (prompt,) = lengths_tokens(cfg.vocab_size, [21], seed=4)  # the last block is partly full
    with Model(tmp_path / "m.bin", n_threads=2) as m:
        cache = PagedCache(m, 16, n_ctx=128, max_seqs=4)
        parent, _ = cache.open(prompt)
        cache.forward([(parent, prompt, True)])
        child = cache.fork(parent)
        assert child.blocks == parent.blocks
        shared = parent.blocks[1]
        out = cache.forward([(child, [9, 8], True), (parent, [3], True)])
        assert child.blocks[1] != shared or parent.blocks[1] != shared  # one of them got a copy
        assert child.blocks[0] == parent.blocks[0]  # the full first block stays shared
        assert np.array_equal(out[0], m.logits(prompt + [9, 8])[-1])
        assert np.array_equal(out[1], m.logits(prompt + [3])[-1])


@pytest.mark.parametrize("window", [5, 20])
def test_sliding_window_layers_return_their_blocks(tmp_path, window):
    """A Gemma-shaped model far past its window, two sequences decoding together: the logits equal
    the reference, and the sliding layers hold only the blocks over the window."""
    cfg = gemma_like(window, ctx=400, dim=32, hidden_dim=32, n_heads=2, n_kv_heads=1, head_dim=16)
    w = random_model(tmp_path / "m.bin", cfg, seed=window)
    a, b = lengths_tokens(cfg.vocab_size, [300, 250], seed=window)
    ref_a, ref_b = forward(w, cfg, a), forward(w, cfg, b)
    with Model(tmp_path / "m.bin", n_threads=2) as m:
        cache = PagedCache(m, 64, n_ctx=400, max_seqs=2, n_batch=40)
        sa, sb = cache.open(a[:30])[0], cache.open(b[:10])[0]
        got_a = list(cache.forward([(sa, a[:30], True)], hidden=False))
        out = cache.forward([(sb, b[:10], True)])
        got_b = [out[0]]
        for i in range(240):
            ra, rb = cache.forward([(sa, [a[30 + i]], True), (sb, [b[10 + i]], True)])
            got_a.append(ra)
            got_b.append(rb)
            live = sum(1 for blk in sa.swa_blocks if blk >= 0)
            assert live <= cache.swa_per_seq
        assert sum(1 for blk in sa.swa_blocks if blk >= 0) <= -(-window // BLOCK_ROWS) + 1
    assert np.abs(np.stack(got_a) - ref_a[29:270]).max() < 1e-4
    assert np.abs(np.stack(got_b) - ref_b[9:250]).max() < 1e-4


@pytest.mark.parametrize("kernels", available_kernels())
def test_paged_cache_past_the_window_equals_a_session_bit_for_bit(tmp_path, kernels):
    """Past the window a session's sliding cache and a paged one cut the visible positions into
    different runs (the session's slides, the paged one's blocks of 16, each starting anywhere in
    the window); attention gives every key the same arithmetic wherever its run starts, so the
    logits are identical, token by token, in every kernel family."""
    cfg = gemma_like(37, ctx=256, dim=64, hidden_dim=64, n_heads=4, n_kv_heads=2, head_dim=32)
    random_model(tmp_path / "m.bin", cfg, seed=5)
    tokens = lengths_tokens(cfg.vocab_size, [200], seed=5)[0]
    with Model(tmp_path / "m.bin", n_threads=2, kernels=kernels) as m:
        expected = m.logits(tokens)
        cache = PagedCache(m, 32, n_ctx=256, max_seqs=1, n_batch=16)
        seq = cache.open(tokens[:1])[0]
        got = [cache.forward([(seq, tokens[:9], True)])[0]]
        got += [cache.forward([(seq, [t], True)])[0] for t in tokens[9:]]
    np.testing.assert_array_equal(np.stack(got), expected[8:])


def test_full_pool_and_bad_tables_are_errors(tmp_path):
    cfg = config("gqa", ctx=128)
    random_model(tmp_path / "m.bin", cfg, seed=8)
    with Model(tmp_path / "m.bin", n_threads=2) as m:
        cache = PagedCache(m, 2, n_ctx=128, max_seqs=2)
        seq, _ = cache.open(list(range(20)))
        cache.forward([(seq, list(range(20)), True)])
        other, _ = cache.open([5] * 20)
        with pytest.raises(ContextFullError):
            cache.forward([(other, [5] * 20, True)])
        with pytest.raises(ValueError):
            cache.forward([])
        seq.blocks[0] = 99  # a table naming a block outside the pool: refused by the C core
        with pytest.raises(EngineError, match="block"):
            cache.forward([(seq, [1], True)])


def test_hidden_states_are_the_final_normed_rows(tmp_path):
    cfg = config("gqa", tied=False, ctx=64)
    random_model(tmp_path / "m.bin", cfg, seed=9)
    (tokens,) = lengths_tokens(cfg.vocab_size, [10], seed=5)
    with Model(tmp_path / "m.bin", n_threads=2) as m:
        cache = PagedCache(m, 8, n_ctx=64, max_seqs=1)
        hidden = cache.forward([(cache.open(tokens)[0], tokens, True)], hidden=True)[0]
        out = m.file.tensors["output.weight"]
        head = np.frombuffer(m.file.buffer(), dtype=np.float32, count=out.shape[0] * out.shape[1],
                             offset=out.offset).reshape(out.shape)
        assert hidden.shape == (10, cfg.dim)
        assert np.abs(hidden @ head.T - m.logits(tokens)).max() < 1e-4


def test_f16_cache_is_close_to_f32_and_the_same_batched(tmp_path):
    """Keys and values stored as halves: the logits stay within rounding of the float32 reference,
    and a batch of sequences still gives bit for bit what each gives alone."""
    cfg = config("gqa", ctx=96)
    w = random_model(tmp_path / "m.bin", cfg, seed=10)
    prompts = lengths_tokens(cfg.vocab_size, [5, 23, 40], seed=6)
    with Model(tmp_path / "m.bin", n_threads=2, kv_type="f16") as m:
        alone = [m.logits(p) for p in prompts]
        cache = PagedCache(m, 16, n_ctx=96, max_seqs=3, n_batch=96)
        assert cache.kv_type == "f16"
        batched = cache.forward([(cache.open(p)[0], p, True) for p in prompts])
    for p, a, b in zip(prompts, alone, batched):
        assert np.array_equal(a[-1], b)
        ref = forward(w, cfg, p)
        assert 0 < np.abs(a - ref).max() < 2e-2


def test_embeddings_are_unit_mean_hidden_states():
    from pyllm.fetch import default_model
    with Model(default_model(quiet=True), n_threads=2, n_ctx=128) as m:
        texts = ["The cat sat on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today."]
        vectors = m.embed(texts, max_batch=20)  # more than one batch
        assert vectors.shape == (3, m.config.dim)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
        for text, vec in zip(texts, vectors):
            ids = m.tokenize(text)
            cache = PagedCache(m, 8, n_ctx=64, max_seqs=1)
            hidden = cache.forward([(cache.open(ids)[0], ids, True)], hidden=True)[0].astype(np.float64)
            mean = hidden.mean(axis=0)
            assert np.abs(vec - mean / np.linalg.norm(mean)).max() < 1e-6
            cache.free()
        assert np.array_equal(m.embed(texts[1])[0], vectors[1])
        with pytest.raises(ValueError):
            m.embed([])
