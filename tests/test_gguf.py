"""GGUF reading and conversion: synthetic llama GGUFs convert to weights.bin that run like the
numpy reference; corrupt GGUFs fail with FormatError naming the file and the problem."""
import dataclasses
import struct

import numpy as np
import pytest

from gguf_writer import F32, STRING, Typed, write_gguf
from pyllm import FormatError, Model, Tokenizer
from pyllm.convert import convert
from pyllm.format import expected_tensors
from pyllm.gguf import GGUFFile
from pyllm.quant import TYPES, dequantize, quantize
from reference import forward
from test_model import TOKENS, config

GGML = {name: tid for name, (tid, _, _) in TYPES.items()}


def tiny_gguf(path, type_name="q8_0", tied=True, version=3, alignment=32, arch="llama", extra_meta=None,
              extra_tensors=()):
    """A llama GGUF with random weights; returns (config, float weights as stored)."""
    cfg = config("gqa", tied=tied)
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
        raw = quantize(data.reshape(-1, shape[-1]), t)
        weights[name] = dequantize(raw, t, shape).astype(np.float64)
        tensors.append((name, GGML[t], shape, raw.tobytes()))
    write_gguf(path, meta, tensors + list(extra_tensors), alignment, version)
    return cfg, weights


@pytest.mark.parametrize("type_name", list(TYPES))
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


@pytest.mark.parametrize("target", list(TYPES))
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
