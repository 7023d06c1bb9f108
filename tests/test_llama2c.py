"""llama2.c checkpoints (legacy, v1, v2) and tokenizer.bin: converted models run like the numpy
reference on the weights the file holds; corrupt files fail with FormatError naming the file."""
import struct

import numpy as np
import pytest

from llama2c_writer import random_weights, write_checkpoint, write_tokenizer_bin
from pyllm import FormatError, Model, Tokenizer
from pyllm.convert import convert
from pyllm.types import ModelConfig
from pyllm.quant import dequantize
from pyllm.types import BYTE, CONTROL, NORMAL, UNKNOWN
from reference import forward
from test_model import TOKENS, config

# groups of 16 divide both shapes' dim and hidden_dim; 32 divides only gqa's (64, 96)
CASES = [(version, shape, tied) for version in (0, 1, 2) for shape in ("gqa", "mha") for tied in (True, False)]


def checkpoint(path, shape="gqa", tied=True, version=1, group_size=16, vocab=97, seed=0):
    cfg = config(shape, tied=tied, vocab=vocab)
    w = write_checkpoint(path, random_weights(cfg, seed), cfg, version, group_size)
    return cfg, w


@pytest.mark.parametrize("version,shape,tied", CASES)
def test_f32_logits_match_reference(tmp_path, version, shape, tied):
    cfg, w = checkpoint(tmp_path / "model.bin", shape, tied, version, seed=version)
    convert(tmp_path / "model.bin", tmp_path / "out.bin", progress=False)
    with Model(tmp_path / "out.bin") as m:
        assert m.config == cfg
        assert {t.type for t in m.file.tensors.values()} == {"f32"}
        assert ("output.weight" in m.file.tensors) == (not tied)
        out = m.logits(TOKENS)
    assert np.abs(out - forward(w, cfg, TOKENS)).max() < 1e-4


@pytest.mark.parametrize("tied", [True, False])
def test_groups_of_32_become_q8_0(tmp_path, tied, capsys):
    cfg, w = checkpoint(tmp_path / "model.bin", "gqa", tied, version=2, group_size=32)
    convert(tmp_path / "model.bin", tmp_path / "out.bin")
    assert "INT8/32 -> q8_0" in capsys.readouterr().err
    with Model(tmp_path / "out.bin") as m:
        for name, t in m.file.tensors.items():
            assert t.type == ("q8_0" if len(t.shape) == 2 else "f32"), name
            if len(t.shape) == 2:  # the same int8 values; only the scale is rounded to f16
                got = dequantize(np.frombuffer(m.file.tensor_bytes(name), np.uint8), "q8_0", t.shape)
                assert np.all(np.abs(got - w[name]) <= np.abs(w[name]) * 2.0 ** -10 + 1e-12), name
        out = m.logits(TOKENS)
    ref = forward(w, cfg, TOKENS)
    assert np.abs(out - ref).max() < 0.03 * np.abs(ref).max()
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_requested_types(tmp_path):
    """--type re-encodes: v2 groups of 32 decode to f32 exactly; v1 fp32 quantizes to q8_0."""
    cfg, w = checkpoint(tmp_path / "v2.bin", "gqa", False, version=2, group_size=32)
    convert(tmp_path / "v2.bin", tmp_path / "v2-f32.bin", "f32", progress=False)
    with Model(tmp_path / "v2-f32.bin") as m:
        assert {t.type for t in m.file.tensors.values()} == {"f32"}
        assert np.abs(m.logits(TOKENS) - forward(w, cfg, TOKENS)).max() < 1e-4
    checkpoint(tmp_path / "v1.bin", "gqa", True, version=1)
    convert(tmp_path / "v1.bin", tmp_path / "v1-q8.bin", "q8_0", progress=False)
    with Model(tmp_path / "v1-q8.bin") as m:
        assert m.file.tensors["blk.0.attn_q.weight"].type == "q8_0"


# ------------------------------------------------------------------------------------------------
# tokenizer.bin

WORDS = ["\u2581t", "he", "at", "\u2581the", "\u2581c", "\u2581cat", "\u2581s", "\u2581sat", "\u2581o",
         "\u2581on", "\u2581m", "\u2581mat", "\u2581", "t", "h", "e", "a", "c", "s", "o", "n", "m"]
PIECES = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + WORDS
SCORES = [0.0] * 259 + [-float(i) for i in range(len(WORDS))]
TYPES = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256 + [NORMAL] * len(WORDS)


@pytest.mark.parametrize("bytes_as_chars", [False, True])
def test_tokenizer_bin_round_trips(tmp_path, bytes_as_chars):
    checkpoint(tmp_path / "model.bin", vocab=len(PIECES))
    write_tokenizer_bin(tmp_path / "tokenizer.bin", PIECES, SCORES, bytes_as_chars=bytes_as_chars)
    convert(tmp_path / "model.bin", tmp_path / "out.bin", progress=False)  # finds tokenizer.bin beside it
    tok = Tokenizer.from_file(tmp_path / "out.bin")
    assert tok.data.model == "llama" and tok.tokens == PIECES and tok.types == TYPES
    assert tok.data.scores == SCORES
    assert (tok.bos_id, tok.eos_id, tok.data.unk_id) == (1, 2, 0)
    with Model(tmp_path / "out.bin") as m:
        ids = m.tokenize("the cat sat on the mat")
        assert [PIECES[i] for i in ids] == ["<s>", "\u2581the", "\u2581cat", "\u2581sat", "\u2581on", "\u2581the",
                                            "\u2581mat"]
        assert m.detokenize(ids) == "the cat sat on the mat"
        text = "the café sat on a hat \u2615"  # f, é, ☕ ... fall back to byte pieces
        assert m.detokenize(m.tokenize(text)) == text
        assert PIECES.index("<0xC3>") in m.tokenize(text)


def test_tokenizer_given_or_missing(tmp_path, capsys):
    checkpoint(tmp_path / "model.bin", vocab=len(PIECES))
    (tmp_path / "tok").mkdir()
    write_tokenizer_bin(tmp_path / "tok" / "llama.bin", PIECES, SCORES)
    convert(tmp_path / "model.bin", tmp_path / "with.bin", progress=False, tokenizer=tmp_path / "tok" / "llama.bin")
    assert Tokenizer.from_file(tmp_path / "with.bin").tokens == PIECES
    convert(tmp_path / "model.bin", tmp_path / "without.bin", progress=False)
    assert "no tokenizer.bin" in capsys.readouterr().err
    with Model(tmp_path / "without.bin") as m:
        assert m.file.tokenizer is None and m.logits([1, 2]).shape == (2, len(PIECES))


# ------------------------------------------------------------------------------------------------
# corrupt files

def patch(at: int, fmt: str, *values):
    return lambda d: d.__setitem__(slice(at, at + struct.calcsize(fmt)), struct.pack(fmt, *values))


PARAM = {name: 8 + 4 * i for i, name in enumerate(("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                                   "vocab_size", "seq_len"))}  # offsets in a v1/v2 header
CORRUPT = {  # name: (version, mutation, message)
    "truncated": (1, lambda d: d.__delitem__(slice(-10, None)), r"implies a file of \d+ bytes, but it has \d+ \(truncated"),
    "trailing bytes": (0, lambda d: d.extend(b"\0" * 8), r"llama2.c legacy checkpoint: .* \(8 bytes of trailing data\)"),
    "header only": (1, lambda d: d.__delitem__(slice(100, None)), r"100 bytes, less than its 256-byte header"),
    "bad version": (1, patch(4, "<i", 3), r"version 3 is not supported"),
    "huge n_layers": (1, patch(PARAM["n_layers"], "<i", 2**30), r"implies a file of \d+ bytes, but it has"),
    "zero layers": (1, patch(PARAM["n_layers"], "<i", 0), r"n_layers must be positive, got 0"),
    "negative hidden_dim": (2, patch(PARAM["hidden_dim"], "<i", -96), r"hidden_dim must be positive, got -96"),
    "heads not dividing dim": (1, patch(PARAM["n_heads"], "<i", 5), r"n_heads \(5\) does not divide dim \(64\)"),
    "kv heads not dividing heads": (1, patch(PARAM["n_kv_heads"], "<i", 3), r"n_kv_heads \(3\) does not divide"),
    "odd head size": (1, patch(PARAM["n_heads"], "<i", 64), r"head size 1 is odd"),
    "bad shared flag": (1, patch(36, "<B", 7), r"flag is 7"),
    "group size 0": (2, patch(37, "<i", 0), r"group size 0 must be positive and divide"),
    "group size 24": (2, patch(37, "<i", 24), r"group size 24 must be positive and divide dim \(64\)"),
    "legacy zero dim": (0, patch(0, "<i", 0), r"not a GGUF file.*its dim would be 0"),
    "not a model": (0, lambda d: d.__setitem__(slice(None), b"Once upon a time, " * 10), r"not a GGUF file"),
    "empty": (0, lambda d: d.clear(), r"only 0 bytes"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_checkpoint_raises(tmp_path, case):
    version, mutate, message = CORRUPT[case]
    path = tmp_path / "model.bin"
    checkpoint(path, version=version, group_size=32)
    data = bytearray(path.read_bytes())
    mutate(data)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=message) as info:
        convert(path, tmp_path / "out.bin", progress=False)
    assert str(path) in str(info.value)
    assert not (tmp_path / "out.bin").exists()
    assert not list(tmp_path.glob(".pyllm-*"))


@pytest.mark.parametrize("case,message", [("vocab mismatch", r"282 tokens, but the vocabulary of .* has 281"),
                                          ("truncated", r"token 281 needs 2 bytes .* truncated"),
                                          ("cut in a token header", r"truncated in token 281")])
def test_corrupt_tokenizer_raises(tmp_path, case, message):
    pieces, scores = PIECES + ["\u2581a"], SCORES + [-30.0]
    checkpoint(tmp_path / "model.bin", vocab=len(pieces) - (case == "vocab mismatch"))
    path = tmp_path / "tokenizer.bin"
    write_tokenizer_bin(path, pieces, scores)
    data = path.read_bytes()
    if case == "truncated":
        path.write_bytes(data[:-1])  # the last token, " a", loses a byte
    elif case == "cut in a token header":
        path.write_bytes(data[:-6])  # 4 of its 8 header bytes remain
    with pytest.raises(FormatError, match=message) as info:
        convert(tmp_path / "model.bin", tmp_path / "out.bin", progress=False)
    assert str(path) in str(info.value)
    assert not (tmp_path / "out.bin").exists()
    assert not list(tmp_path.glob(".pyllm-*"))


def test_config_fields(tmp_path):
    """max_seq_len comes from seq_len; rope theta and eps are run.c's constants."""
    cfg = config("mha", ctx=48)
    write_checkpoint(tmp_path / "m.bin", random_weights(cfg), cfg, 0)
    convert(tmp_path / "m.bin", tmp_path / "out.bin", progress=False)
    with Model(tmp_path / "out.bin") as m:
        assert (m.config.max_seq_len, m.config.rope_theta, m.config.norm_eps) == (48, 10000.0, 1e-5)
        assert m.file.metadata["format"] == "llama2.c legacy checkpoint"


def test_legacy_dim_640_is_not_taken_for_a_pickle(tmp_path):
    """dim 640 makes a legacy header start with 0x80 0x02, as a pickle does; the zero bytes after
    it tell them apart."""
    cfg = ModelConfig(dim=640, hidden_dim=96, n_layers=1, n_heads=10, n_kv_heads=5, head_dim=64,
                      vocab_size=97, max_seq_len=32, rope_theta=10000.0, norm_eps=1e-5,
                      tied_embeddings=True)
    w = write_checkpoint(tmp_path / "model.bin", random_weights(cfg), cfg, 0, 16)
    assert (tmp_path / "model.bin").read_bytes()[:4] == b"\x80\x02\0\0"
    convert(tmp_path / "model.bin", tmp_path / "out.bin", progress=False)
    with Model(tmp_path / "out.bin") as m:
        out = m.logits(TOKENS[:8])
    assert np.abs(out - forward(w, cfg, TOKENS[:8])).max() < 1e-4
