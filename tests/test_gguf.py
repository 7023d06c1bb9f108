"""GGUF reading and conversion: synthetic llama GGUFs convert to weights.bin that run like the
numpy reference; corrupt GGUFs fail with FormatError naming the file and the problem."""
import dataclasses
import os
import struct

import numpy as np
import pytest

from gguf_writer import F32, F64, I32, STRING, Typed, write_gguf
from pyllm import FormatError, Model, Tokenizer
from pyllm.convert import convert
from pyllm.convert.common import pair_order
from pyllm.formats.weights import expected_tensors
from pyllm.types import ModelConfig
from pyllm.formats.gguf import GGUFFile
from pyllm.quant import TYPES, dequantize, quantize
from reference import forward
from test_model import TOKENS, config

GGML = {name: t.ggml_id for name, t in TYPES.items()}


# The types of the tiny models below (rows of 64 values: not the K-quants' 256)
SMALL_BLOCKS = [name for name, t in TYPES.items() if t.block <= 32]


def tiny_gguf(path, type_name="q8_0", tied=True, version=3, alignment=32, arch="llama", extra_meta=None,
              extra_tensors=(), bias=False, halves=False):
    """A llama GGUF with random weights; returns (config, float weights in the C core's order).

    halves: store q/k rows in half-split RoPE order, as qwen2 GGUFs do."""
    cfg = config("gqa", tied=tied, bias=bias)
    rng = np.random.default_rng(11)
    meta = {
        "general.architecture": arch, "general.name": "tiny", "general.alignment": alignment,
        f"{arch}.block_count": cfg.n_layers, f"{arch}.embedding_length": cfg.dim,
        f"{arch}.feed_forward_length": cfg.hidden_dim, f"{arch}.attention.head_count": cfg.n_heads,
        f"{arch}.attention.head_count_kv": cfg.n_kv_heads, f"{arch}.context_length": cfg.max_seq_len,
        f"{arch}.rope.freq_base": Typed(F32, cfg.rope_theta),
        f"{arch}.attention.layer_norm_rms_epsilon": Typed(F32, cfg.norm_eps),
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.tokens": [chr(0x21 + i) for i in range(cfg.vocab_size)],
        "tokenizer.ggml.token_type": [1] * cfg.vocab_size, "tokenizer.ggml.merges": [],
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.chat_template": Typed(STRING, "{{ messages[0]['content'] }}"),
    }
    meta.update(extra_meta or {})
    weights, tensors = {}, []
    for name, shape in expected_tensors(cfg).items():
        data = (1 + 0.1 * rng.standard_normal(shape) if len(shape) == 1
                else rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
        t = type_name if len(shape) == 2 else "f32"
        heads = {"attn_q": cfg.n_heads, "attn_k": cfg.n_kv_heads}.get(name.split(".")[-2], 0)
        stored = data[np.argsort(pair_order(shape[0], heads))] if halves and heads else data
        raw = quantize(stored.reshape(-1, shape[-1]), t)
        weights[name] = dequantize(quantize(data.reshape(-1, shape[-1]), t), t, shape).astype(np.float64)
        tensors.append((name, GGML[t], shape, raw.tobytes()))
    write_gguf(path, meta, tensors + list(extra_tensors), alignment, version)
    return cfg, weights


@pytest.mark.parametrize("type_name", SMALL_BLOCKS)
@pytest.mark.parametrize("version,alignment", [(3, 32), (2, 64)])
def test_convert_keeps_types_and_runs(tmp_path, type_name, version, alignment):
    cfg, w = tiny_gguf(tmp_path / "m.gguf", type_name, version=version, alignment=alignment)
    convert(tmp_path / "m.gguf", tmp_path / "m.bin", progress=False)
    with GGUFFile(tmp_path / "m.gguf") as g, Model(tmp_path / "m.bin") as m:
        assert m.config == dataclasses.replace(cfg, norm_eps=float(np.float32(cfg.norm_eps)))
        for name in ("blk.0.attn_q.weight", "token_embd.weight"):  # a byte copy
            assert bytes(m.file.tensor_bytes(name)) == bytes(g.tensor_bytes(name))
        out = m.logits(TOKENS)
        assert m.file.chat_template == "{{ messages[0]['content'] }}"
        assert m.tokenizer.bos_id == 1 and m.tokenizer.tokens[5] == "&"
    ref = forward(w, cfg, TOKENS)
    bound = 1e-4 if type_name in ("f32", "f16") else 0.05 * np.abs(ref).max()
    assert np.abs(out - ref).max() < bound


@pytest.mark.parametrize("target", SMALL_BLOCKS)
def test_convert_requantizes_on_request(tmp_path, target):
    cfg, w = tiny_gguf(tmp_path / "m.gguf", "f32", tied=False)
    convert(tmp_path / "m.gguf", tmp_path / "m.bin", target, progress=False)
    with Model(tmp_path / "m.bin") as m:
        assert {t.type for t in m.file.tensors.values() if len(t.shape) == 2} == {target}
        assert m.file.tensors["output_norm.weight"].type == "f32"
        got = dequantize(np.frombuffer(m.file.tensor_bytes("blk.1.ffn_up.weight"), np.uint8), target, (96, 64))
    expected = dequantize(quantize(w["blk.1.ffn_up.weight"], target), target, (96, 64))
    np.testing.assert_array_equal(got, expected)


def test_tokenizer_from_gguf_equals_tokenizer_from_converted_file(tmp_path):
    tiny_gguf(tmp_path / "m.gguf")
    convert(tmp_path / "m.gguf", tmp_path / "m.bin", progress=False)
    a, b = Tokenizer.from_file(tmp_path / "m.gguf"), Tokenizer.from_file(tmp_path / "m.bin")
    assert a.tokens == b.tokens and a.encode("!\"#$ab") == b.encode("!\"#$ab")


def test_unsupported_models_are_refused_by_name(tmp_path):
    tiny_gguf(tmp_path / "a.gguf", arch="gemma")
    with pytest.raises(FormatError, match="a.gguf: architecture 'gemma' is not supported"):
        convert(tmp_path / "a.gguf", tmp_path / "a.bin", progress=False)
    tiny_gguf(tmp_path / "b.gguf", extra_meta={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(FormatError, match="RoPE scaling"):
        convert(tmp_path / "b.gguf", tmp_path / "b.bin", progress=False)
    tiny_gguf(tmp_path / "c.gguf", extra_tensors=[("blk.0.ffn_gate_exps.weight", 0, (4, 4), b"\0" * 64)])
    with pytest.raises(FormatError, match="tensors pyllm does not know: blk.0.ffn_gate_exps"):
        convert(tmp_path / "c.gguf", tmp_path / "c.bin", progress=False)
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "c.bin").exists()


def test_metadata_value_types_round_trip(tmp_path):
    from gguf_writer import BOOL, F64, I8, I64, U16
    meta = {"a": Typed(I8, -5), "b": Typed(U16, 65535), "c": Typed(I64, -2**40), "d": Typed(F64, 0.125),
            "e": Typed(BOOL, True), "f": ["x", "yz", ""], "g": [[1, 2], [3]], "h": "ünï"}
    write_gguf(tmp_path / "m.gguf", meta, [("t", 0, (2, 3), np.zeros(6, np.float32).tobytes())])
    with GGUFFile(tmp_path / "m.gguf") as g:
        md = g.metadata
        assert (md["a"], md["b"], md["c"], md["d"], md["e"], md["f"], md["h"]) == (-5, 65535, -2**40, 0.125, True, ["x", "yz", ""], "ünï")
        assert [list(x) for x in md["g"]] == [[1, 2], [3]]
        assert g.tensors["t"].shape == (2, 3)


# ---- corrupt files ---------------------------------------------------------------------------

def mutate(path, fn):
    data = bytearray(path.read_bytes())
    fn(data)
    path.write_bytes(bytes(data))


def find(data, text):
    return bytes(data).index(text.encode())


CORRUPT = {
    "bad magic": (lambda d: d.__setitem__(slice(0, 4), b"GGUX"), r"not a GGUF file"),
    "version 1": (lambda d: d.__setitem__(slice(4, 8), struct.pack("<I", 1)), r"version 1 is not supported"),
    "big endian": (lambda d: d.__setitem__(slice(4, 8), struct.pack(">I", 3)), r"big-endian"),
    "tiny": (lambda d: d.__delitem__(slice(20, None)), r"too short"),
    "truncated in metadata": (lambda d: d.__delitem__(slice(300, None)), r"truncated|cannot fit"),
    "truncated in a string": (lambda d: d.__delitem__(slice(find(d, "general.name") + 5, None)), r"truncated|cannot fit"),
    "truncated in tensor infos": (lambda d: d.__delitem__(slice(find(d, "blk.1.ffn_up.weight") + 5, None)), r"truncated"),
    "truncated in data": (lambda d: d.__delitem__(slice(len(d) - 100, None)), r"runs past the end"),
    "huge tensor count": (lambda d: d.__setitem__(slice(8, 16), struct.pack("<Q", 2**60)), r"tensor count \d+ cannot fit"),
    "huge kv count": (lambda d: d.__setitem__(slice(16, 24), struct.pack("<Q", 2**40)), r"metadata count \d+ cannot fit"),
    "string past end": (lambda d: d.__setitem__(slice(24, 32), struct.pack("<Q", 2**50)), r"truncated"),
    "unknown value type": (lambda d: d.__setitem__(slice(find(d, "general.name") + 12, find(d, "general.name") + 16),
                                                   struct.pack("<I", 99)), r"unknown metadata value type 99"),
    "unknown tensor type": (lambda d: d.__setitem__(slice(find(d, "blk.0.attn_k.weight") + 19 + 4 + 16,
                                                          find(d, "blk.0.attn_k.weight") + 19 + 4 + 20),
                                                    struct.pack("<I", 77)), r"blk.0.attn_k.weight: unknown type 77"),
    "offset past end": (lambda d: d.__setitem__(slice(find(d, "blk.0.attn_k.weight") + 19 + 4 + 20,
                                                      find(d, "blk.0.attn_k.weight") + 19 + 4 + 28),
                                                struct.pack("<Q", 2**40)), r"attn_k.weight: data .* past the end"),
    "misaligned offset": (lambda d: d.__setitem__(slice(find(d, "blk.0.attn_k.weight") + 19 + 4 + 20,
                                                        find(d, "blk.0.attn_k.weight") + 19 + 4 + 28),
                                                  struct.pack("<Q", 7)), r"offset 7 is not aligned"),
    "overlap": (lambda d: d.__setitem__(slice(find(d, "blk.0.attn_k.weight") + 19 + 4 + 20,
                                              find(d, "blk.0.attn_k.weight") + 19 + 4 + 28),
                                        struct.pack("<Q", 0)), r"overlap"),
    "dims overflow": (lambda d: d.__setitem__(slice(find(d, "blk.0.attn_k.weight") + 19 + 4,
                                                    find(d, "blk.0.attn_k.weight") + 19 + 20),
                                              struct.pack("<QQ", 2**40, 2**40)), r"overflow"),
    "cols not in blocks": (lambda d: d.__setitem__(slice(find(d, "blk.0.attn_k.weight") + 19 + 4,
                                                         find(d, "blk.0.attn_k.weight") + 19 + 12),
                                                   struct.pack("<Q", 33)), r"rows of 33 values do not fill Q8_0 blocks"),
    "zero dims": (lambda d: d.__setitem__(slice(find(d, "blk.0.attn_k.weight") + 19,
                                                find(d, "blk.0.attn_k.weight") + 23), struct.pack("<I", 0)),
                  r"0 dimensions"),
    "duplicate key": (lambda d: d.__setitem__(slice(find(d, "general.namf"), find(d, "general.namf") + 12),
                                              b"general.name"), r"duplicate metadata key 'general.name'"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_gguf_raises(tmp_path, case):
    path = tmp_path / "bad.gguf"
    tiny_gguf(path, extra_meta={"general.namf": "x"})
    fn, message = CORRUPT[case]
    mutate(path, fn)
    with pytest.raises(FormatError, match=message) as info:
        convert(path, tmp_path / "out.bin", progress=False)
    assert str(path) in str(info.value)
    assert not (tmp_path / "out.bin").exists()
    assert not list(tmp_path.glob(".pyllm-*"))  # no temporary file left behind


# Metadata that parses but makes a model pyllm would refuse: the converter refuses it (the GGUF reader
# itself, or the loader run on the output), naming the GGUF, and leaves neither the output nor its
# temporary file behind.
UNLOADABLE = {
    "template as an array": ({"tokenizer.chat_template": ["{{ x }}", "{{ y }}"]}, r"tokenizer.chat_template"),
    "name as a nested array": ({"general.name": [[1]]}, r"general.name has an unexpected value"),
    "bos id beyond the vocabulary": ({"tokenizer.ggml.bos_token_id": 10**6}, r"tokenizer.ggml.bos_token_id is 1000000, not a token id"),
    "negative context": ({"llama.context_length": Typed(I32, -5)}, r"llama.context_length is -5"),
    "NaN rope base": ({"llama.rope.freq_base": Typed(F32, float("nan"))}, r"llama.rope.freq_base is nan"),
    "rope base zero in float32": ({"llama.rope.freq_base": Typed(F64, 1e-50)}, r"rope_theta must be positive as a float32"),
    "infinite norm epsilon": ({"llama.attention.layer_norm_rms_epsilon": Typed(F32, float("inf"))}, r"layer_norm_rms_epsilon is inf"),
    "token types too short": ({"tokenizer.ggml.token_type": [1, 1, 1]}, r"tokenizer.ggml.token_type must .*one kind per token \(97\)"),
    "scores too short": ({"tokenizer.ggml.scores": [0.5, 0.25]}, r"tokenizer.ggml.scores must list one score per token \(97\)"),
    "merge without a space": ({"tokenizer.ggml.merges": ["ab"]}, r"tokenizer.ggml.merges entry 0 is 'ab', not two tokens"),
    "unknown pre-tokenizer": ({"tokenizer.ggml.pre": "nope"}, r"tokenizer.ggml.pre is 'nope', not a pre-tokenizer pyllm knows"),
    "SentencePiece without scores": ({"tokenizer.ggml.model": "llama"}, r"tokenizer.ggml.scores are missing; a SentencePiece tokenizer needs them"),
    "negative sliding window": ({"llama.attention.sliding_window": Typed(I32, -8)}, r"sliding_window"),
}


@pytest.mark.parametrize("case", list(UNLOADABLE))
def test_metadata_pyllm_would_refuse_is_refused_at_conversion(tmp_path, case):
    meta, message = UNLOADABLE[case]
    tiny_gguf(tmp_path / "m.gguf", extra_meta=meta)
    with pytest.raises(FormatError, match=message) as info:
        convert(tmp_path / "m.gguf", tmp_path / "m.bin", progress=False)
    assert str(info.value).startswith(f"{tmp_path / 'm.gguf'}: ")
    assert os.listdir(tmp_path) == ["m.gguf"]  # no output, no temporary file


def test_sliding_window_is_recorded_and_applied_past_it(tmp_path):
    """llama.attention.sliding_window makes every layer a sliding one; contexts are not limited by
    it, and past it the logits are the reference's with that window (not full attention's)."""
    cfg, w = tiny_gguf(tmp_path / "m.gguf", "f32", extra_meta={"llama.attention.sliding_window": 8})
    convert(tmp_path / "m.gguf", tmp_path / "m.bin", progress=False)
    windowed = dataclasses.replace(cfg, sliding_window=8)
    ref = forward(w, windowed, TOKENS)
    assert np.abs(forward(w, cfg, TOKENS) - ref).max() > 1e-2
    with Model(tmp_path / "m.bin", n_threads=1) as m:
        assert m.config.sliding_window == 8 and m.config.max_seq_len == 64 and m.n_ctx == 64
        assert np.abs(m.logits(TOKENS) - ref).max() < 1e-4
    tiny_gguf(tmp_path / "none.gguf", extra_meta={"llama.attention.sliding_window": 0})  # 0: no window
    convert(tmp_path / "none.gguf", tmp_path / "none.bin", progress=False)
    with Model(tmp_path / "none.bin", n_threads=1) as m:
        assert m.config.sliding_window is None and m.n_ctx == 64


def test_sliding_window_pattern_picks_the_sliding_layers(tmp_path):
    """attention.sliding_window_pattern as llama.cpp reads it: one flag per layer (true: sliding)."""
    cfg, w = tiny_gguf(tmp_path / "m.gguf", "f32", extra_meta={"llama.attention.sliding_window": 6,
                                                               "llama.attention.sliding_window_pattern": [True, False]})
    convert(tmp_path / "m.gguf", tmp_path / "m.bin", progress=False)
    windowed = dataclasses.replace(cfg, sliding_window=6, full_attention_layers=(1,))
    ref = forward(w, windowed, TOKENS)
    assert np.abs(forward(w, dataclasses.replace(windowed, full_attention_layers=()), TOKENS) - ref).max() > 1e-2
    with Model(tmp_path / "m.bin", n_threads=1) as m:
        assert m.config.full_attention_layers == (1,)
        assert np.abs(m.logits(TOKENS) - ref).max() < 1e-4


@pytest.mark.parametrize("meta,message", [
    ({"gemma3.final_logit_softcapping": Typed(F32, 30.0)}, r"final logit soft-capping .gemma3.final_logit_softcapping 30.0"),
    ({"gemma3.rope.scaling.type": "yarn"}, r"RoPE scaling 'yarn' .gemma3.rope.scaling.type. is not supported"),
    ({"gemma3.attention.sliding_window": 8, "gemma3.attention.sliding_window_pattern": [True]},
     r"sliding_window_pattern must hold one flag per layer"),
])
def test_gemma3_metadata_pyllm_lacks_is_refused(tmp_path, meta, message):
    """gemma3 GGUFs with logit soft-capping, YaRN, or a per-layer pattern of the wrong length are
    refused, naming the key."""
    tiny_gguf(tmp_path / "m.gguf", arch="gemma3", extra_meta=meta)
    with pytest.raises(FormatError, match=message):
        convert(tmp_path / "m.gguf", tmp_path / "m.bin", progress=False)


@pytest.mark.parametrize("type_name", ["f32", "q8_0", "q4_1"])
def test_qwen2_half_split_rows_are_reordered(tmp_path, type_name):
    cfg, w = tiny_gguf(tmp_path / "m.gguf", type_name, arch="qwen2", bias=True, halves=True,
                       extra_meta={"tokenizer.ggml.pre": "qwen2"})
    convert(tmp_path / "m.gguf", tmp_path / "m.bin", progress=False)
    with Model(tmp_path / "m.bin") as m:
        assert m.config.architecture == "qwen2" and m.config.qkv_bias
        out = m.logits(TOKENS)
    ref = forward(w, dataclasses.replace(cfg, qkv_bias=True), TOKENS)
    bound = 1e-4 if type_name == "f32" else 0.05 * np.abs(ref).max()
    assert np.abs(out - ref).max() < bound


GGML_IDS = {"F32": 0, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q8_1": 9, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "BF16": 30}
BLOCKS = {"Q5_0": (32, 22, [0]), "Q5_1": (32, 24, [0, 2]), "Q8_0": (32, 34, [0]), "Q8_1": (32, 36, [0, 2]), "Q4_K": (256, 144, [0, 2]),
          "Q5_K": (256, 176, [0, 2]), "Q6_K": (256, 210, [208])}  # values, bytes, f16 scale offsets


def random_blocks(type_name: str, n_values: int, rng, scales=(0.001, 0.02)) -> bytes:
    """Random blocks of a GGUF type with small finite f16 scales (layouts as in GGUF's spec) whose
    magnitudes lie in the range `scales`."""
    values, size, scale_at = BLOCKS[type_name]
    blocks = rng.integers(0, 256, (n_values // values, size), dtype=np.uint8)
    for at in scale_at:
        scale = rng.uniform(*scales, (len(blocks), 1)) * rng.choice([-1, 1], (len(blocks), 1))
        blocks[:, at:at + 2] = scale.astype(np.float16).view(np.uint8)
    return blocks.tobytes()


def typed_gguf(path, kinds: dict, bf16: dict, seed: int = 5, scales: dict | None = None) -> ModelConfig:
    """A 256-wide llama GGUF whose tensors have the given GGUF types (random blocks, with the block
    scales' range of `scales` by type where given) or BF16 values."""
    cfg = ModelConfig(dim=256, hidden_dim=256, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=64, vocab_size=40,
                      max_seq_len=32, rope_theta=10000.0, norm_eps=1e-5, tied_embeddings=True)
    rng = np.random.default_rng(seed)
    tensors = []
    for name, shape in expected_tensors(cfg).items():
        kind = "BF16" if name in bf16 else kinds.get(name, "F32")
        if kind == "BF16":
            raw = (bf16[name].view(np.uint32) >> 16).astype(np.uint16).tobytes()
        elif kind == "F32":
            raw = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32).tobytes()
        else:
            raw = random_blocks(kind, int(np.prod(shape)), rng, *([scales[kind]] if scales and kind in scales else []))
        tensors.append((name, GGML_IDS[kind], shape, raw))
    meta = {"general.architecture": "llama", "llama.block_count": 1, "llama.embedding_length": 256,
            "llama.feed_forward_length": 256, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
            "llama.context_length": 32, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2",
            "tokenizer.ggml.tokens": [chr(0x21 + i) for i in range(40)], "tokenizer.ggml.merges": []}
    write_gguf(path, meta, tensors)
    return cfg


def test_types_pyllm_runs_are_copied_others_decoded_and_requantized(tmp_path, capsys):
    exact = (np.random.default_rng(6).integers(-64, 64, (256, 256)) / 256).astype(np.float32)  # fits f16
    bf16 = {"blk.0.attn_output.weight": exact, "token_embd.weight": exact[:40] * np.float32(2.0 ** -20)}
    kinds = {"blk.0.attn_q.weight": "Q5_0", "blk.0.attn_k.weight": "Q5_1"}
    typed_gguf(tmp_path / "k.gguf", kinds, bf16)
    convert(tmp_path / "k.gguf", tmp_path / "k.bin")
    report = capsys.readouterr().err
    expected_types = {"blk.0.attn_output.weight": "f16", "token_embd.weight": "f32", "blk.0.attn_v.weight": "f32",
                      "blk.0.attn_q.weight": "q5_0", "blk.0.attn_k.weight": "q5_1"}
    with GGUFFile(tmp_path / "k.gguf") as g, Model(tmp_path / "k.bin") as m:
        for name, want in expected_types.items():
            t = g.tensors[name]
            assert m.file.tensors[name].type == want, name
            if want == t.type_name.lower() != "f32":  # Q5_0 and Q5_1 run: copied byte for byte (the K-quants: below)
                assert m.file.tensor_bytes(name) == g.tensor_bytes(name)
                assert f"{name}: " not in report  # no type change reported
                continue
            decoded = dequantize(g.tensor_bytes(name), t.type_name.lower(), t.shape)
            got = dequantize(np.frombuffer(m.file.tensor_bytes(name), np.uint8), want, t.shape)
            np.testing.assert_array_equal(got, dequantize(quantize(decoded.reshape(-1, t.shape[-1]), want), want, t.shape))
            if t.type_name != "F32":
                assert f"{name}: {t.type_name} -> {want}" in report
        assert np.isfinite(m.logits([1, 2, 3])).all()
    assert "exact in f16" in report and "f16 cannot hold" in report


def test_k_quants_are_copied_and_run_like_the_numpy_reference(tmp_path, capsys):
    """Q4_K, Q5_K and Q6_K tensors (as in a Q4_K_M file, with a Q6_K embedding) import as byte copies,
    unreported, and the model's logits match the float64 reference on the decoded weights (within
    what 8-bit activations cost this random model: 1-3%; a matmul reading the wrong activations
    costs the order of 100%). The matmuls reading one input mix activation formats: q, k, v read it
    quantized per 256 values (Q4_K), per 32 (Q8_0) and as floats (F32)."""
    kinds = {"token_embd.weight": "Q6_K", "blk.0.attn_q.weight": "Q4_K", "blk.0.attn_k.weight": "Q8_0",
             "blk.0.attn_output.weight": "Q5_K", "blk.0.ffn_gate.weight": "Q4_K", "blk.0.ffn_up.weight": "Q5_K",
             "blk.0.ffn_down.weight": "Q6_K"}
    # block scales giving weights of real models' size (|w| ~ 0.02), so activations stay moderate
    scales = {"Q4_K": (1e-4, 3e-4), "Q5_K": (5e-5, 1.5e-4), "Q6_K": (2e-4, 6e-4), "Q8_0": (2e-4, 6e-4)}
    cfg = typed_gguf(tmp_path / "k.gguf", kinds, {}, scales=scales)
    convert(tmp_path / "k.gguf", tmp_path / "k.bin")
    assert "->" not in capsys.readouterr().err
    tokens = [5, 17, 3, 36, 0, 22, 22, 8, 31, 39, 13, 2]
    with GGUFFile(tmp_path / "k.gguf") as g, Model(tmp_path / "k.bin") as m:
        w = {}
        for name, t in g.tensors.items():
            if name in kinds:
                assert m.file.tensors[name].type == kinds[name].lower(), name
                assert bytes(m.file.tensor_bytes(name)) == bytes(g.tensor_bytes(name)), name
            w[name] = dequantize(g.tensor_bytes(name), t.type_name.lower(), t.shape).astype(np.float64)
        out = m.logits(tokens)
    ref = forward(w, cfg, tokens)
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


def test_unreadable_type_is_named(tmp_path):
    typed_gguf(tmp_path / "m.gguf", {"blk.0.ffn_up.weight": "Q8_1"}, {})
    with pytest.raises(FormatError, match=r"blk.0.ffn_up.weight has type Q8_1, which pyllm cannot read"):
        convert(tmp_path / "m.gguf", tmp_path / "m.bin", progress=False)
    assert not (tmp_path / "m.bin").exists()


def test_the_output_may_not_be_the_source(tmp_path):
    cfg = typed_gguf(tmp_path / "m.gguf", {}, {})
    before = (tmp_path / "m.gguf").read_bytes()
    for dst in (tmp_path / "m.gguf", tmp_path / "." / "m.gguf"):
        with pytest.raises(ValueError, match="would overwrite the source"):
            convert(tmp_path / "m.gguf", dst, progress=False)
    os.link(tmp_path / "m.gguf", tmp_path / "hard.bin")
    with pytest.raises(ValueError, match="would overwrite the source"):
        convert(tmp_path / "m.gguf", tmp_path / "hard.bin", progress=False)
    assert (tmp_path / "m.gguf").read_bytes() == before and cfg is not None
