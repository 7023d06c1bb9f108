"""The safetensors reader against an independent writer, corrupt safetensors files, and Hugging
Face directories the converter must refuse with a clear error and no output file."""
import json
import os
import pickle
import struct

import numpy as np
import pytest

from pyllm import Model
from pyllm.convert import convert
from pyllm.errors import FormatError
from pyllm.formats.safetensors import SafetensorsFile
from safetensors_writer import bf16_bits, write_safetensors


def test_reads_f32_f16_bf16(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float16)
    c = (rng.integers(-128, 128, (4, 2)) / 8).astype(np.float32)  # exact in bfloat16
    write_safetensors(tmp_path / "t.safetensors", {"a": a, "b": (b, "F16"), "c": (c, "BF16")},
                      metadata={"format": "pt"})
    with SafetensorsFile(tmp_path / "t.safetensors") as f:
        assert f.metadata == {"format": "pt"}
        assert {n: (t.dtype, t.shape) for n, t in f.tensors.items()} == {
            "a": ("F32", (3, 5)), "b": ("F16", (7,)), "c": ("BF16", (4, 2))}
        assert np.array_equal(f.array("a"), a)
        assert np.array_equal(f.array("b"), b.astype(np.float32))
        assert np.array_equal(f.array("c"), c)
        assert np.array_equal(bf16_bits(f.array("c")), bf16_bits(c))


def _valid(path):
    write_safetensors(path, {"x": np.arange(6, dtype=np.float32).reshape(2, 3),
                             "y": np.ones(4, dtype=np.float32)})


def _rewrite_header(path, edit):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n:])


CORRUPT = {
    "truncated data": (lambda p: p.write_bytes(p.read_bytes()[:-3]), r"truncated"),
    "trailing bytes": (lambda p: p.write_bytes(p.read_bytes() + b"\0" * 8), r"belong to no tensor"),
    "huge header length": (lambda p: p.write_bytes(struct.pack("<Q", 1 << 40) + p.read_bytes()[8:]),
                           r"exceeds the format's limit"),
    "header past the end": (lambda p: p.write_bytes(struct.pack("<Q", 5000) + p.read_bytes()[8:]),
                            r"runs past the end of the file"),
    "shorter than 8 bytes": (lambda p: p.write_bytes(b"\1\0\0"), r"too short"),
    "not json": (lambda p: p.write_bytes(struct.pack("<Q", 4) + b"{abc"), r"not valid JSON"),
    "not an object": (lambda p: p.write_bytes(struct.pack("<Q", 2) + b"[]"), r"does not start with"),
    "unknown dtype": (lambda p: _rewrite_header(p, lambda h: h["x"].update(dtype="F17")), r"unknown dtype"),
    "dtype not a string": (lambda p: _rewrite_header(p, lambda h: h["x"].update(dtype=[])), r"unknown dtype"),
    "negative dimension": (lambda p: _rewrite_header(p, lambda h: h["x"].update(shape=[-2, 3])),
                           r"not a list of non-negative"),
    "size mismatch": (lambda p: _rewrite_header(p, lambda h: h["x"].update(shape=[3, 3])), r"needs 36 bytes"),
    "reversed offsets": (lambda p: _rewrite_header(p, lambda h: h["x"].update(data_offsets=[24, 0])),
                         r"are not \[begin, end\]"),
    "overlap": (lambda p: _rewrite_header(p, lambda h: h["y"].update(data_offsets=[20, 36])), r"overlaps"),
    "gap": (lambda p: _rewrite_header(p, lambda h: h["x"].update(data_offsets=[4, 28])), r"leaves a gap"),
    "missing key": (lambda p: _rewrite_header(p, lambda h: h["x"].pop("shape")), r"exactly dtype, shape"),
    "100,000 huge dimensions": (lambda p: _rewrite_header(p, lambda h: h["x"].update(shape=[2**62] * 100_000)),
                                r"needs more than the 40 bytes of tensor data"),  # the product took minutes
    "bad metadata": (lambda p: _rewrite_header(p, lambda h: h.update(__metadata__={"n": 1})),
                     r"__metadata__ must map strings"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_safetensors_raise(tmp_path, case):
    path = tmp_path / "t.safetensors"
    _valid(path)
    fn, message = CORRUPT[case]
    fn(path)
    with pytest.raises(FormatError, match=message) as info:
        SafetensorsFile(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------------------
# Hugging Face directories

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
    "vocab_size": 40, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": True, "hidden_act": "silu",
}


def hf_tensors(cfg: dict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    d, h, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["hidden_size"] // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], d), "model.norm.weight": (d,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                       p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                       p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                       p + "mlp.gate_proj.weight": (h, d), p + "mlp.up_proj.weight": (h, d),
                       p + "mlp.down_proj.weight": (d, h)})
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


def make_dir(root, config=None, tensors=None):
    root.mkdir(exist_ok=True)
    config = dict(CONFIG, **(config or {}))
    (root / "config.json").write_text(json.dumps(config))
    write_safetensors(root / "model.safetensors", hf_tensors(config) if tensors is None else tensors)
    return root


def test_minimal_directory_converts(tmp_path):
    make_dir(tmp_path / "m")
    convert(tmp_path / "m", tmp_path / "out.bin", progress=False)
    with Model(tmp_path / "out.bin") as m:
        assert m.config.n_kv_heads == 2 and m.file.tokenizer is None
        assert np.isfinite(m.logits([1, 2, 3])).all()


def test_mistral_sliding_window_is_recorded_and_does_not_limit_the_context(tmp_path):
    make_dir(tmp_path / "m", {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                              "sliding_window": 8})
    convert(tmp_path / "m", tmp_path / "out.bin", progress=False)
    with Model(tmp_path / "out.bin", n_threads=1) as m:
        assert m.config.architecture == "mistral" and m.config.max_seq_len == 64
        assert m.config.sliding_window == 8 and m.config.full_attention_layers == () and m.n_ctx == 64
        assert np.isfinite(m.logits(list(range(20)))).all()


@pytest.mark.parametrize("extra,full", [
    ({"max_window_layers": 1}, (0,)),       # layers from max_window_layers on slide
    ({"max_window_layers": 0}, ()),
    ({"layer_types": ["sliding_attention", "full_attention"]}, (1,)),  # layer_types wins
])
def test_qwen2_use_sliding_window_picks_its_layers(tmp_path, extra, full):
    """Qwen2 with use_sliding_window: the layers layer_types marks, else those from max_window_layers on."""
    config = dict(CONFIG, architectures=["Qwen2ForCausalLM"], model_type="qwen2", num_hidden_layers=2,
                  sliding_window=8, use_sliding_window=True, **extra)
    tensors = hf_tensors(config)
    for i in range(2):
        for name, rows in (("q", 32), ("k", 16), ("v", 16)):
            tensors[f"model.layers.{i}.self_attn.{name}_proj.bias"] = np.zeros(rows, np.float32)
    make_dir(tmp_path / "m", config, tensors)
    convert(tmp_path / "m", tmp_path / "out.bin", progress=False)
    with Model(tmp_path / "out.bin", n_threads=1) as m:
        assert m.config.sliding_window == 8 and m.config.full_attention_layers == full


@pytest.mark.parametrize("config", [
    {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": None},  # v0.2+
    {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "sliding_window": 8, "use_sliding_window": False},
    {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "sliding_window": 8},  # Qwen2Config: off
    {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "sliding_window": 8},  # Llama has no window
])
def test_a_window_that_is_off_does_not_limit_the_context(tmp_path, config):
    tensors = hf_tensors(CONFIG)
    if config["model_type"] == "qwen2":  # q/k/v biases
        for name, rows in (("q", 32), ("k", 16), ("v", 16)):
            tensors[f"model.layers.0.self_attn.{name}_proj.bias"] = np.zeros(rows, np.float32)
    make_dir(tmp_path / "m", config, tensors)
    convert(tmp_path / "m", tmp_path / "out.bin", progress=False)
    with Model(tmp_path / "out.bin", n_threads=1, n_ctx=64) as m:
        assert m.config.sliding_window is None and m.n_ctx == 64
        assert np.isfinite(m.logits(list(range(16)))).all()


def _drop(name):
    return lambda t: {k: v for k, v in t.items() if k != name}


def _reshape(name, shape):
    return lambda t: {**t, name: np.zeros(shape, np.float32)}


HF_BAD = {
    "unsupported architecture": ({"architectures": ["GemmaForCausalLM"], "model_type": "gemma"}, None,
                                 r"GemmaForCausalLM.*GELU MLP"),
    "unknown architecture": ({"architectures": ["FooForCausalLM"], "model_type": "foo"}, None,
                             r"FooForCausalLM.*llama, mistral, qwen2|FooForCausalLM.*LlamaForCausalLM"),
    "rope scaling": ({"rope_scaling": {"rope_type": "longrope", "factor": 8.0}}, None, r"RoPE scaling 'longrope'"),
    "rope scaling 5.x": ({"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}}, None,
                         r"RoPE scaling 'dynamic' \(pyllm implements linear, llama3, yarn\)"),
    "llama3 without factor": ({"rope_scaling": {"rope_type": "llama3"}}, None, r"rope_scaling.factor is missing"),
    "llama3 bands crossed": ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                                               "high_freq_factor": 1.0}}, None,
                             r"rope_scaling.low_freq_factor 4.0 must be below high_freq_factor 1.0"),
    "llama3 factor a string": ({"rope_scaling": {"rope_type": "llama3", "factor": "8"}}, None,
                               r"rope_scaling.factor must be a finite positive number"),
    "rope type a number": ({"rope_scaling": {"rope_type": 3}}, None, r"rope_scaling.rope_type must be a string"),
    "linear factor zero": ({"rope_scaling": {"type": "linear", "factor": 0}}, None,
                           r"rope_scaling.factor must be a finite positive number"),
    "activation": ({"hidden_act": "gelu"}, None, r"activation 'gelu'"),
    "output bias": ({"attention_bias": True}, None, r"attention output biases"),
    "missing field": ({"hidden_size": None}, None, r"hidden_size is missing"),
    "missing tensor": (None, _drop("model.layers.0.mlp.up_proj.weight"), r"mlp.up_proj.weight is missing"),
    "shape mismatch": (None, _reshape("model.layers.0.self_attn.k_proj.weight", (32, 32)),
                       r"k_proj.weight .* has shape \[32, 32\], the config needs \[16, 32\]"),
    "unknown tensor": (None, lambda t: {**t, "model.layers.0.self_attn.o_proj.bias": np.zeros(32, np.float32)},
                       r"does not know.*o_proj.bias"),
    "sliding-window layers": ({"layer_types": ["sliding_attention"], "sliding_window": 8}, None,
                              r"LlamaForCausalLM with sliding-window attention layers"),
    "bad layer types": ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "use_sliding_window": True,
                         "sliding_window": 8, "layer_types": ["chunked_attention"]}, None,
                        r"layer_types must be a list of 1 entries"),
    "untied without lm_head": ({"tie_word_embeddings": False}, None, r"lm_head.weight is missing"),
    "integer weights": (None, lambda t: {**t, "model.norm.weight": (np.zeros(32), "I8")}, r"is I8"),
    # values that would make a model pyllm refuses to load
    "NaN rope theta": ({"rope_theta": float("nan")}, None, r"rope_theta"),
    "negative context": ({"max_position_embeddings": -5}, None, r"max_seq_len|max_position_embeddings"),
    "negative norm epsilon": ({"rms_norm_eps": -1e-5}, None, r"norm_eps"),
    "sliding window of 0": ({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                             "sliding_window": 0}, None, r"config.json: sliding_window must be an integer in \[1, .*got 0"),
    "epsilon past float32": ({"rms_norm_eps": 1e39}, None, r"config.json gives config.norm_eps must be .*float32"),
}


@pytest.mark.parametrize("case", list(HF_BAD))
def test_bad_directories_raise(tmp_path, case):
    config, edit, message = HF_BAD[case]
    cfg = dict(CONFIG, **(config or {}))
    cfg = {k: v for k, v in cfg.items() if v is not None}
    root = tmp_path / "m"
    root.mkdir()
    (root / "config.json").write_text(json.dumps(cfg))
    tensors = hf_tensors(CONFIG)
    write_safetensors(root / "model.safetensors", edit(tensors) if edit else tensors)
    with pytest.raises(FormatError, match=message) as info:
        convert(root, tmp_path / "out.bin", progress=False)
    assert str(root) in str(info.value)
    assert not (tmp_path / "out.bin").exists() and not list(tmp_path.glob(".pyllm-*"))


def test_sharded_index_problems(tmp_path):
    root = make_dir(tmp_path / "m")
    os.rename(root / "model.safetensors", root / "model-00001-of-00002.safetensors")
    names = list(hf_tensors(CONFIG))
    index = {"weight_map": {n: "model-00001-of-00002.safetensors" for n in names}}
    index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors"
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match=r"shard model-00002-of-00002.safetensors .* is missing"):
        convert(root, tmp_path / "out.bin", progress=False)
    index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors"
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match=r"not a .safetensors file beside it"):
        convert(root, tmp_path / "out.bin", progress=False)
    assert not (tmp_path / "out.bin").exists()


def test_pytorch_pickles_are_never_loaded(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    root = tmp_path / "m"
    root.mkdir()
    (root / "config.json").write_text(json.dumps(CONFIG))
    with open(root / "pytorch_model.bin", "wb") as f:
        pickle.dump(Boom(), f)
    with pytest.raises(FormatError, match=r"pytorch_model.bin: PyTorch pickles.*safe_serialization"):
        convert(root, tmp_path / "out.bin", progress=False)
    with pytest.raises(FormatError, match=r"never unpickles"):
        convert(root / "pytorch_model.bin", tmp_path / "out.bin", progress=False)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out.bin").exists()


def test_directory_without_config(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(FormatError, match=r"no config.json"):
        convert(tmp_path / "m", tmp_path / "out.bin", progress=False)
