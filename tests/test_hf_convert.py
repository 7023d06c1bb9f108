"""Hugging Face directories written by transformers (tests/data/hf/, made by
tools/make_hf_fixtures.py): converted, they must give transformers' float32 logits (as a prompt
and token by token), its token ids and its chat rendering. Llama, Mistral, Qwen2 (q/k/v biases) and
Qwen3 (per-head q/k norms, head_dim apart from hidden / heads, a transformers 4.x config.json),
SmolLM3 (layers without RoPE), Phi-3 (fused projections, partial rotary embeddings, LongRoPE's short
and long tables, a sliding window), Gemma 3 (GELU MLP, (1 + w) and sandwich norms, scaled embeddings, local
sliding-window layers with their own RoPE base; GGUFs by llama.cpp's converter), Mistral and Qwen2
past their sliding window, F32
and BF16, single files and shards, byte-level BPE tokenizer.json and SentencePiece tokenizer.model, templates in
tokenizer_config.json or chat_template.jinja, embedding rows beyond the tokenizer's vocabulary.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyllm import FormatError, Model
from pyllm.chat import render
from pyllm.convert import convert

HF = os.path.join(os.path.dirname(__file__), "data", "hf")
CASES = sorted(d for d in os.listdir(HF) if os.path.exists(os.path.join(HF, d, "reference.npz"))) \
    if os.path.isdir(HF) else []
F32_TOLERANCE = 1e-4  # max abs logit difference from transformers' float32 forward pass


def load_reference(case: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(tokens, transformers' logits for them, reference.json) of one case."""
    with np.load(os.path.join(HF, case, "reference.npz")) as z:
        tokens, logits = z["tokens"], z["logits"]
    with open(os.path.join(HF, case, "reference.json"), encoding="utf-8") as f:
        return tokens, logits, json.load(f)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """convert(case, out_type) -> the weights.bin path; each conversion done once per module."""
    done: dict[tuple[str, str | None], Path] = {}

    def get(case: str, out_type: str | None = None) -> Path:
        key = (case, out_type)
        if key not in done:
            dst = tmp_path_factory.mktemp(case) / "m.bin"
            convert(os.path.join(HF, case), dst, out_type=out_type, progress=False)
            done[key] = dst
        return done[key]
    return get


def describe_difference(got: np.ndarray, want: np.ndarray) -> str:
    """Where logits differ most, for a failure message that points at the cause."""
    err = np.abs(got - want)
    pos, col = np.unravel_index(int(err.argmax()), err.shape)
    first = int(np.flatnonzero(err.max(axis=1) > F32_TOLERANCE)[0])
    return (f"max |diff| {err.max():.3g} at position {pos}, id {col} (got {got[pos, col]:.5f}, "
            f"want {want[pos, col]:.5f}); first position off: {first}, per-position max "
            f"{np.array2string(err.max(axis=1), precision=4, max_line_width=200)}")


def test_fixtures_present():
    assert len(CASES) >= 6, f"expected the Hugging Face fixtures in {HF} (tools/make_hf_fixtures.py)"


def expected_layers(raw: dict[str, Any]) -> tuple[int | None, tuple[int, ...]]:
    """(sliding window, full-attention layers) as transformers reads config.json: Mistral's and
    Phi-3's window on every layer; Qwen2's with use_sliding_window on the layers from max_window_layers (or
    layer_types); Gemma 3's on layer_types, else all but every sliding_window_pattern-th layer."""
    n, window = raw["num_hidden_layers"], raw.get("sliding_window")
    if raw["model_type"] in ("mistral", "phi3"):
        return window, ()
    if raw["model_type"] == "gemma3_text":
        pattern = raw.get("sliding_window_pattern", 6)
        types = raw.get("layer_types") or ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                                           for i in range(n)]
    elif raw.get("use_sliding_window"):
        types = raw.get("layer_types") or ["sliding_attention" if i >= raw.get("max_window_layers", 28)
                                           else "full_attention" for i in range(n)]
    else:
        return None, ()
    full = tuple(i for i, t in enumerate(types) if t == "full_attention")
    return (None, ()) if len(full) == n else (window, full)


@pytest.mark.parametrize("case", CASES)
def test_config_matches_config_json(converted, case):
    with open(os.path.join(HF, case, "config.json"), encoding="utf-8") as f:
        raw = json.load(f)
    rope = raw.get("rope_parameters") or {}
    theta = rope.get("full_attention", rope).get("rope_theta", raw.get("rope_theta"))
    family = {"gemma3_text": "gemma3"}.get(raw["model_type"], raw["model_type"])
    with Model(converted(case), n_threads=1) as m:
        c = m.config
        got = (c.architecture, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim,
               c.vocab_size, c.max_seq_len, c.rope_theta, c.norm_eps, c.tied_embeddings, c.qkv_bias, c.qk_norm)
        want = (family, raw["hidden_size"], raw["intermediate_size"], raw["num_hidden_layers"],
                raw["num_attention_heads"], raw["num_key_value_heads"],
                raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"], raw["vocab_size"],
                raw["max_position_embeddings"], theta, raw["rms_norm_eps"], raw["tie_word_embeddings"],
                raw["model_type"] == "qwen2", raw["model_type"] in ("qwen3", "gemma3_text"))
        assert got == pytest.approx(want)
        assert (c.sliding_window, c.full_attention_layers) == expected_layers(raw)
        assert c.nope_layers == tuple(i for i, rope in enumerate(raw.get("no_rope_layers") or []) if not rope)
        partial = (raw.get("rope_parameters") or {}).get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0))
        assert c.rotary_dim == int(c.head_dim * partial)
        if family == "gemma3":
            local = rope.get("sliding_attention", {}).get("rope_theta", raw.get("rope_local_base_freq"))
            assert (c.activation, c.post_norms, c.rope_theta_swa) == ("gelu_tanh", True, local)
            assert c.attn_scale == raw["query_pre_attn_scalar"] ** -0.5
            assert c.embed_scale == pytest.approx(raw["hidden_size"] ** 0.5)


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(converted, case):
    tokens, want, _ = load_reference(case)
    with Model(converted(case), n_threads=1) as m:
        assert m.config.vocab_size == want.shape[1]
        got = m.logits(tokens)
    assert np.abs(got - want).max() < F32_TOLERANCE, describe_difference(got, want)


@pytest.mark.parametrize("case", CASES)
def test_token_by_token_matches_transformers(converted, case):
    """One token at a time through the KV cache gives the same logits as transformers' whole pass."""
    tokens, want, _ = load_reference(case)
    with Model(converted(case), n_threads=2) as m:
        got = np.stack([m.eval([int(t)]) for t in tokens])
    assert np.abs(got - want).max() < F32_TOLERANCE, describe_difference(got, want)


@pytest.mark.parametrize("case", CASES)
def test_tokenize_matches_transformers(converted, case):
    """Each text's ids with the model's own BOS rule. SentencePiece cases are held to the
    sentencepiece library, which differs from transformers only for text that starts with a space
    (transformers then adds no second "▁"); the files record both."""
    _, _, ref = load_reference(case)
    with Model(converted(case), n_threads=1) as m:
        assert m.tokenizer.add_bos == ref["add_bos"]
        for t in ref["texts"]:
            want = t.get("sentencepiece_ids", t["ids"])
            if not t["text"].startswith(" "):
                assert t["ids"] == want, "transformers and sentencepiece disagree on the fixture"
            assert m.tokenize(t["text"]) == want, t["text"]
            assert m.detokenize(want) == t["text"]


@pytest.mark.parametrize("case", [c for c in CASES if "chat" in load_reference(c)[2]])
def test_chat_prompt_matches_transformers(converted, case):
    """The template (from tokenizer_config.json or chat_template.jinja) renders the same text and
    the prompt's ids equal apply_chat_template(..., add_generation_prompt=True)."""
    chat = load_reference(case)[2]["chat"]
    with Model(converted(case), n_threads=1) as m:
        assert m.chat_template is not None, "the chat template was not carried over"
        tok = m.tokenizer
        bos = tok.tokens[tok.bos_id] if tok.bos_id is not None else ""
        eos = tok.tokens[tok.eos_id] if tok.eos_id is not None else ""
        assert render(m.chat_template, chat["messages"], bos_token=bos, eos_token=eos) == chat["text"]
        assert m.chat_prompt(chat["messages"]) == chat["ids"]


@pytest.mark.parametrize("case", CASES)
def test_q8_0_close_to_transformers(converted, case):
    """Q8_0 weights (and 8-bit activations) stay close. The RMS error is ~0.02 of the logits' std
    here; Q4_0 gives ~0.27 and a wrong q/k row order 0.4-0.8, so 0.05 tells them apart. Top-1
    agreement alone would not: a wrong row order still agrees at up to 90% of these positions."""
    tokens, want, _ = load_reference(case)
    with Model(converted(case, "q8_0"), n_threads=1) as m:
        assert m.file.tensors["blk.0.ffn_down.weight"].type == "q8_0"
        got = m.logits(tokens)
    rms = np.sqrt(np.mean((got - want) ** 2)) / want.std()
    agree = (got.argmax(-1) == want.argmax(-1)).mean()
    assert rms < 0.05 and agree >= 0.85, f"RMS error {rms:.3f} of the logits' std, top-1 agreement {agree:.2f}"


GGUF_CASES = [c for c in CASES if os.path.exists(os.path.join(HF, c, "model.gguf"))]


@pytest.mark.parametrize("case", GGUF_CASES)
def test_gguf_of_the_fixture_matches_transformers(tmp_path, case):
    """model.gguf, written from the directory as llama.cpp writes the family (its tensor names, q/k
    rows and q/k norms in Hugging Face's half-split order), gives transformers' logits, as a prompt and
    token by token, and the same token ids and chat prompt."""
    tokens, want, ref = load_reference(case)
    convert(os.path.join(HF, case, "model.gguf"), tmp_path / "m.bin", progress=False)
    with Model(tmp_path / "m.bin", n_threads=2) as m:
        got = m.logits(tokens)
        assert np.abs(got - want).max() < F32_TOLERANCE, describe_difference(got, want)
        m.reset()
        got = np.stack([m.eval([int(t)]) for t in tokens])
        assert np.abs(got - want).max() < F32_TOLERANCE, describe_difference(got, want)
        for t in ref["texts"]:  # SentencePiece: as the sentencepiece library splits (test_tokenize_...)
            assert m.tokenize(t["text"]) == t.get("sentencepiece_ids", t["ids"]), t["text"]
        if "chat" in ref:
            assert m.chat_prompt(ref["chat"]["messages"]) == ref["chat"]["ids"]


SHORT_CASES = [c for c in CASES if "short_tokens" in np.load(os.path.join(HF, c, "reference.npz"))]


@pytest.mark.parametrize("source", ["", "model.gguf"])
@pytest.mark.parametrize("case", SHORT_CASES)
def test_longrope_short_table_within_the_original_context(converted, tmp_path, case, source):
    """LongRoPE: a session whose context (n_ctx) is within original_max_position_embeddings uses
    the short factors, as transformers does for a sequence that short (the default n_ctx, past it,
    uses the long ones: test_logits_match_transformers). The two references differ far beyond the
    tolerance, so a wrong table fails."""
    with np.load(os.path.join(HF, case, "reference.npz")) as z:
        tokens, want, long_want = z["short_tokens"], z["short_logits"], z["logits"][:len(z["short_tokens"])]
    assert np.abs(want - long_want).max() > 100 * F32_TOLERANCE, "the fixture's short and long tables agree"
    if source:
        path = tmp_path / "m.bin"
        convert(os.path.join(HF, case, source), path, progress=False)
    else:
        path = converted(case)
    original = json.loads(Path(HF, case, "config.json").read_text(encoding="utf-8"))["original_max_position_embeddings"]
    with Model(path, n_threads=2, n_ctx=original) as m:
        assert m.config.rope_long_context == original and m.n_ctx == original
        got = m.logits(tokens)
        assert np.abs(got - want).max() < F32_TOLERANCE, describe_difference(got, want)
        with m.session(n_ctx=original + 1) as longer:  # one position past it: the long table
            got = longer.logits(tokens)
        assert np.abs(got - long_want).max() < F32_TOLERANCE, describe_difference(got, long_want)


def test_smollm3_gguf_runs_every_fourth_layer_without_rope(tmp_path):
    """llama.cpp's converter writes no NoPE layer list for smollm3; pyllm runs every 4th layer
    without RoPE, as llama.cpp does (the fixture's 4 layers: layer 3)."""
    convert(os.path.join(HF, "smollm3-gguf", "model.gguf"), tmp_path / "m.bin", progress=False)
    with Model(tmp_path / "m.bin", n_threads=1) as m:
        assert m.config.architecture == "smollm3" and m.config.nope_layers == (3,)


def phi3_copy(tmp_path: Path, change: dict[str, Any], case: str = "phi3-longrope") -> Path:
    """A copy of a Phi-3 fixture with config.json changed (keys set; None deletes a key)."""
    src = tmp_path / case
    shutil.copytree(os.path.join(HF, case), src)
    raw = json.loads((src / "config.json").read_text(encoding="utf-8"))
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        elif value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    (src / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    return src


@pytest.mark.parametrize("change,message", [
    ({"rope_parameters": {"short_factor": [1.0, 2.0]}}, r"rope_parameters.short_factor must be a list of 3 numbers"),
    ({"rope_parameters": {"long_factor": [1.0, 2.0, "3"]}}, r"long_factor must be a list of 3"),
    ({"rope_parameters": {"long_factor": [1.0, 2.0, 0.0]}}, r"not finite positive"),
    ({"rope_parameters": {"partial_rotary_factor": 0.7}}, r"partial_rotary_factor 0.7 rotates 5 of each head's 8"),
    ({"rope_parameters": {"rope_type": "dynamic"}}, r"RoPE scaling 'dynamic' \(pyllm implements longrope, su, yarn\)"),
])
def test_phi3_bad_rope_parameters_are_refused(tmp_path, change, message):
    """LongRoPE factors and the rotary part are checked against the heads, naming the key."""
    with pytest.raises(FormatError, match=message):
        convert(phi3_copy(tmp_path, change), tmp_path / "m.bin", progress=False)


def test_phi3_longrope_attention_factor_and_original_context(converted, tmp_path):
    """The attention factor is transformers' sqrt(1 + ln(128 / 32) / ln 32) unless config.json gives
    one; without a top-level original_max_position_embeddings Phi3Config's 4096 applies (then the
    128-position context never reaches the long table)."""
    with Model(converted("phi3-longrope"), n_threads=1) as m:
        assert m.config.rope_attn_factor == pytest.approx(np.sqrt(1 + np.log(4) / np.log(32)))
        assert m.config.rope_long_context == 32 and m.config.rotary_dim == 6
    src = phi3_copy(tmp_path, {"original_max_position_embeddings": None,
                               "rope_parameters": {"attention_factor": 1.25}})
    convert(src, tmp_path / "m.bin", progress=False)
    with Model(tmp_path / "m.bin", n_threads=1) as m:
        assert m.config.rope_attn_factor == 1.25 and m.config.rope_long_context == 4096


@pytest.mark.parametrize("change,message", [
    ({"attention_bias": True}, r"Qwen3ForCausalLM with attention biases"),
    ({"rope_parameters": {"rope_type": "longrope", "factor": 4.0, "rope_theta": 1e6}}, r"RoPE scaling .longrope."),
])
def test_qwen3_features_pyllm_lacks_are_refused(tmp_path, change, message):
    """What the decoder lacks is refused by name, not run wrong: Qwen3's attention_bias also biases
    o_proj, and LongRoPE scaling is not implemented."""
    src = tmp_path / "qwen3"
    shutil.copytree(os.path.join(HF, "qwen3-f32"), src)
    raw = json.loads((src / "config.json").read_text(encoding="utf-8"))
    raw.update(change)
    (src / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(FormatError, match=message):
        convert(src, tmp_path / "m.bin", progress=False)


def rewrite_gguf(src: str, dst: Path, meta: dict[str, Any], drop: tuple[str, ...] = (),
                 replace: dict[str, np.ndarray] | None = None) -> Path:
    """A copy of a GGUF with metadata keys set (None deletes), tensors dropped or replaced (F32)."""
    from gguf_writer import write_gguf
    from pyllm.formats.gguf import GGUFFile
    with GGUFFile(src) as g:
        metadata = {k: v.tolist() if isinstance(v, np.ndarray) else v  # arrays as lists for the writer
                    for k, v in g.metadata.items() if k not in meta or meta[k] is not None}
        metadata.update({k: v for k, v in meta.items() if v is not None})
        tensors = [(t.name, t.type, t.shape, g.tensor_bytes(t.name)) for t in g.tensors.values() if t.name not in drop]
    for name, values in (replace or {}).items():
        tensors = [t for t in tensors if t[0] != name] + [(name, 0, values.shape, values.astype(np.float32).tobytes())]
    write_gguf(dst, metadata, tensors)
    return dst


@pytest.mark.parametrize("meta,drop,replace,message", [
    ({}, ("rope_factors_long.weight",), None, r"rope_factors_short.weight is present without its pair"),
    ({"phi3.rope.scaling.original_context_length": None}, (), None, r"original_context_length is missing; LongRoPE's"),
    ({"phi3.rope.scaling.original_context_length": -4}, (), None, r"original_context_length is -4, not a positive"),
    ({"phi3.rope.scaling.attn_factor": -1.0}, (), None, r"attn_factor is -1.0, not a finite positive"),
    ({}, (), {"rope_factors_long.weight": np.ones(5)}, r"rope_factors_long.weight is F32 \(5,\); it must be F32 \(3,\)"),
    ({}, (), {"rope_factors_short.weight": np.zeros(3)}, r"rope_factors_short.weight holds factors that are not"),
    ({"phi3.rope.dimension_count": 7}, (), None, r"partial rotary embeddings \(rope.dimension_count 7"),
    ({}, ("blk.1.attn_qkv.weight",), None, r"tensor blk.1.attn_qkv.weight is missing"),
])
def test_phi3_gguf_bad_rope_or_tensors_are_refused(tmp_path, meta, drop, replace, message):
    """A phi3 GGUF's LongRoPE tables, attention factor, original context, rotary part and fused
    tensors are checked, naming the file and the key or tensor."""
    src = rewrite_gguf(os.path.join(HF, "phi3-longrope", "model.gguf"), tmp_path / "bad.gguf", meta, drop, replace)
    with pytest.raises(FormatError, match=message) as info:
        convert(src, tmp_path / "m.bin", progress=False)
    assert str(src) in str(info.value)


def test_phi3_su_is_longrope(tmp_path):
    """rope_scaling type "su", LongRoPE's older name (Phi3Config reads it as longrope; transformers
    5 itself fails to load such a file), gives the same model as "longrope"."""
    src = phi3_copy(tmp_path, {"rope_scaling": {"type": "su"}}, case="phi3-longrope-legacy-config")
    tokens, want, _ = load_reference("phi3-longrope-legacy-config")
    convert(src, tmp_path / "m.bin", progress=False)
    with Model(tmp_path / "m.bin", n_threads=1) as m:
        assert m.config.rope_scaling == "longrope"
        got = m.logits(tokens)
    assert np.abs(got - want).max() < F32_TOLERANCE, describe_difference(got, want)


@pytest.mark.parametrize("change,message", [
    ({"final_logit_softcapping": 30.0}, r"Gemma3ForCausalLM with final_logit_softcapping 30.0"),
    ({"attn_logit_softcapping": 50.0}, r"Gemma3ForCausalLM with attn_logit_softcapping"),
    ({"use_bidirectional_attention": True}, r"Gemma3ForCausalLM with bidirectional attention"),
    ({"hidden_activation": "silu"}, r"Gemma3ForCausalLM with activation 'silu'"),
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}},
     r"RoPE scaling 'yarn' on the global layers"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e4},
                          "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0}}},
     r"RoPE scaling 'linear' on the sliding-window layers"),
    ({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"},
     r"Gemma3ForConditionalGeneration .model_type 'gemma3'. is not supported: it needs a vision tower"),
])
def test_gemma3_features_pyllm_lacks_are_refused(tmp_path, change, message):
    """Gemma 2-style soft-capping, bidirectional attention, other activations, RoPE scalings beyond
    frequency tables on the global layers or any on the local ones, and the multimodal class are
    refused by name."""
    src = tmp_path / "gemma3"
    shutil.copytree(os.path.join(HF, "gemma3-f32"), src)
    raw = json.loads((src / "config.json").read_text(encoding="utf-8"))
    raw.update(change)
    (src / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(FormatError, match=message):
        convert(src, tmp_path / "m.bin", progress=False)

