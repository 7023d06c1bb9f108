"""RoPE scaling (Llama 3.1's llama3, linear, YaRN): the frequencies come from config.json or a GGUF, are
stored as the weights.bin tensor rope_freq, and the logits equal transformers' float32 ones over
80 positions, past the small original context where every frequency band matters, as a prompt
and token by token. Fixtures: tests/data/hf/llama3-rope-*, llama-linear-rope
(tools/make_hf_fixtures.py; model.gguf written as llama.cpp's converter writes it). YaRN also
scales cos and sin by its attention factor (config.rope_attn_factor)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from gguf_writer import F32, Typed
from pyllm import FormatError, Model
from pyllm.arch.rope import default_freqs
from pyllm.convert import convert
from pyllm.formats.weights import write_weights
from test_gguf import tiny_gguf
from test_hf_convert import F32_TOLERANCE, HF, describe_difference, load_reference

CASES = {"llama3-rope-scaling": "llama3", "llama3-rope-parameters": "llama3", "llama-linear-rope": "linear",
         "llama-yarn-rope": "yarn"}
GGUF_CASES = [c for c in CASES if os.path.exists(os.path.join(HF, c, "model.gguf"))]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """convert(case, source file) -> the weights.bin path, each conversion done once."""
    done: dict[tuple[str, str], str] = {}

    def get(case: str, source: str = "") -> str:
        if (case, source) not in done:
            dst = tmp_path_factory.mktemp(case) / "m.bin"
            convert(os.path.join(HF, case, source), dst, progress=False)
            done[case, source] = str(dst)
        return done[case, source]
    return get


def token_by_token(path: str, tokens: np.ndarray) -> np.ndarray:
    """Logits of each position, the tokens fed one eval at a time through the KV cache."""
    with Model(path, n_threads=1) as m:
        return np.stack([m.eval([int(t)]) for t in tokens])


def test_fixtures_present():
    assert len(GGUF_CASES) >= 2, "expected model.gguf in the llama3 and linear fixtures (tools/make_hf_fixtures.py)"
    for case in CASES:
        tokens, _, _ = load_reference(case)
        assert len(tokens) >= 64


@pytest.mark.parametrize("source", ["", "model.gguf"], ids=["hf", "gguf"])
@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(converted, case, source):
    if source and case not in GGUF_CASES:
        pytest.skip("no GGUF for this case")
    tokens, want, _ = load_reference(case)
    path = converted(case, source)
    with Model(path, n_threads=2) as m:
        assert m.config.rope_scaling == CASES[case]
        assert m.file.tensors["rope_freq"].shape == (m.config.head_dim // 2,)
        prompt = m.logits(tokens)
    assert np.abs(prompt - want).max() < F32_TOLERANCE, describe_difference(prompt, want)
    steps = token_by_token(path, tokens)
    assert np.abs(steps - want).max() < F32_TOLERANCE, describe_difference(steps, want)


@pytest.mark.parametrize("case", GGUF_CASES)
def test_gguf_and_config_json_give_the_same_frequencies(converted, case):
    """llama.cpp's rope_freqs factors (or scaling factor) divide the plain frequencies into
    transformers' scaled ones, up to float32 rounding of the two computations."""
    with Model(converted(case), n_threads=1) as hf, Model(converted(case, "model.gguf"), n_threads=1) as gg:
        a = np.frombuffer(hf.file.tensor_bytes("rope_freq"), np.float32)
        b = np.frombuffer(gg.file.tensor_bytes("rope_freq"), np.float32)
    np.testing.assert_allclose(a, b, rtol=2e-6)


@pytest.mark.parametrize("case", CASES)
def test_scaling_matters_at_these_positions(tmp_path, case):
    """The same directory with its scaling removed gives logits far from transformers', so the
    match above is a test of the scaled frequencies."""
    root = tmp_path / case
    shutil.copytree(os.path.join(HF, case), root, ignore=shutil.ignore_patterns("*.gguf"))
    cfg = json.loads((root / "config.json").read_text())
    cfg.pop("rope_scaling", None)
    if "rope_parameters" in cfg:
        cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg["rope_parameters"]["rope_theta"]}
    (root / "config.json").write_text(json.dumps(cfg))
    convert(root, tmp_path / "plain.bin", progress=False)
    tokens, want, _ = load_reference(case)
    with Model(tmp_path / "plain.bin", n_threads=2) as m:
        assert m.config.rope_scaling is None and "rope_freq" not in m.file.tensors
        got = m.logits(tokens)
    assert np.abs(got - want).max() > 100 * F32_TOLERANCE


def test_a_table_of_the_plain_frequencies_changes_no_bit(tmp_path, converted):
    """rope_freq holding theta^(-2i/head_dim) as default_freqs computes it gives exactly the logits
    of the C core's own computation: plain models are unchanged by the frequency table."""
    case = "llama-f32"
    src = tmp_path / "plain.bin"
    convert(os.path.join(HF, case), src, progress=False)
    tokens, _, _ = load_reference(case)
    with Model(src, n_threads=1) as m:
        cfg, want = m.config, m.logits(tokens)
        f = m.file
        sources = [(t.name, t.type, t.shape, lambda t=t: f.tensor_bytes(t.name)) for t in f.tensors.values()]
        table = default_freqs(cfg.rope_theta, cfg.head_dim)
        sources.append(("rope_freq", "f32", table.shape, lambda: table))
        write_weights(tmp_path / "table.bin", dataclasses.replace(cfg, rope_scaling="none"), m.tokenizer.data,
                      sources)
    with Model(tmp_path / "table.bin", n_threads=1) as m:
        got = m.logits(tokens)
    np.testing.assert_array_equal(got, want)


GGUF_BAD = {
    "yarn": ({"llama.rope.scaling.type": "yarn"}, [], r"RoPE scaling 'yarn' \(llama.rope.scaling.type\)"),
    "factors of the wrong length": ({}, [("rope_freqs.weight", 0, (3,), np.ones(3, np.float32).tobytes())],
                                    r"rope_freqs.weight is F32 \(3,\); it must be F32 \(\d+,\)"),
    "factor zero": ({}, [("rope_freqs.weight", 0, (8,), np.zeros(8, np.float32).tobytes())],
                    r"rope_freqs.weight holds factors that are not finite and positive"),
    "linear factor infinite": ({"llama.rope.scaling.type": "linear",
                                "llama.rope.scaling.factor": Typed(F32, float("inf"))}, [],
                               r"llama.rope.scaling.factor is inf"),
}


@pytest.mark.parametrize("name", GGUF_BAD)
def test_bad_gguf_scaling_is_refused_by_name(tmp_path, name):
    meta, tensors, match = GGUF_BAD[name]
    tiny_gguf(tmp_path / "m.gguf", extra_meta=meta, extra_tensors=tensors)
    with pytest.raises(FormatError, match=match):
        convert(tmp_path / "m.gguf", tmp_path / "m.bin", progress=False)
    assert not (tmp_path / "m.bin").exists()
