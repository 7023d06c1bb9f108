"""Hostile weights.bin and GGUF files: header counts are bounded by what the file holds before
anything proportional to them is built, and every wrongly typed field is a FormatError naming the
file and the field (one tokenizer check shared by weights.bin, GGUF and Tokenizer.from_file)."""
import math
import os
import struct
import subprocess
import sys

import pytest

from gguf_writer import ARRAY, BOOL, F32, I32, STRING, U32, U64, Typed
from pyllm import FormatError, Tokenizer
from pyllm.convert import convert
from pyllm.formats.weights import read_weights
from reference import random_model
from test_format import rewrite, split, tensor
from test_gguf import tiny_gguf
from test_model import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 97  # test_model.config's vocabulary
TOKENIZER = {
    "model": "gpt2", "tokens": [chr(0x21 + i) for i in range(VOCAB)], "token_types": [1] * VOCAB,
    "scores": None, "merges": ["! \"", "# $"], "pre": "gpt2", "bos_id": 1, "eos_id": 2,
    "unk_id": None, "pad_id": None, "add_bos": False, "add_eos": False, "add_space_prefix": False,
}


def failure_in_subprocess(code: str) -> str:
    """Run code in a fresh interpreter with 1 GiB of address space and a timeout that only a hang
    reaches; returns the last line it prints (code prints the exception it expects)."""
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", limit + code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1]


CATCH = """
try:
    {call}
    print("no error")
except Exception as exc:
    print(type(exc).__name__, exc)
"""


# ---- weights.bin -------------------------------------------------------------------------------

@pytest.fixture
def weights(tmp_path):
    """A valid weights.bin with a byte-level BPE tokenizer."""
    path = tmp_path / "m.bin"
    random_model(path, config("gqa"), "f32", seed=3)
    header, data = split(path)
    header["tokenizer"] = dict(TOKENIZER)
    rewrite(path, header, data)
    return path


def edit_header(path, mutate):
    header, data = split(path)
    mutate(header)
    rewrite(path, header, data)


def test_valid_weights_tokenizer_reads(weights):
    """The base of the cases below is itself valid, so each case fails on its one mutation."""
    tok = Tokenizer.from_file(weights)
    assert tok.vocab_size == VOCAB and tok.bos_id == 1


@pytest.mark.parametrize("field", ["n_layers", "vocab_size", "dim", "hidden_dim", "n_heads"])
def test_huge_weights_counts_are_refused_before_allocating(weights, field):
    """A header count of 10**6 (n_layers: a table of 9 million expected tensors) or 2**31 - 1 is
    refused within a small memory limit, naming the field."""
    value = 10**6 if field == "n_layers" else (1 << 31) - 1
    edit_header(weights, lambda h: h["config"].__setitem__(field, value))
    out = failure_in_subprocess(CATCH.format(call=f"import pyllm; pyllm.Model({str(weights)!r})"))
    assert out.startswith("FormatError") and str(weights) in out, out
    assert field in out or "tensor" in out, out


TOKENIZER_CASES = {
    "tokens not a list": ("tokens", "abc", "tokenizer.tokens"),
    "token not a string": ("tokens", [5] + TOKENIZER["tokens"][1:], "tokenizer.tokens entry 0"),
    "token types not ints": ("token_types", ["1"] * VOCAB, "tokenizer.token_types entry 0"),
    "token type out of range": ("token_types", [1] * 50 + [9] + [1] * 46, "tokenizer.token_types entry 50"),
    "token type a bool": ("token_types", [True] * VOCAB, "tokenizer.token_types entry 0"),
    "token types too short": ("token_types", [1] * 3, "tokenizer.token_types"),
    "token types a dict": ("token_types", {"a": 1}, "tokenizer.token_types"),
    "scores too short": ("scores", [0.0], "tokenizer.scores"),
    "scores not numbers": ("scores", ["x"] * VOCAB, "tokenizer.scores entry 0"),
    "scores NaN": ("scores", [math.nan] * VOCAB, "tokenizer.scores entry 0"),
    "merges not a list": ("merges", "ab", "tokenizer.merges"),
    "merge not a string": ("merges", [["!", "\""]], "tokenizer.merges entry 0"),
    "merge without a space": ("merges", ["! \"", "#$"], "tokenizer.merges entry 1"),
    "bos id a string": ("bos_id", "1", "tokenizer.bos_id"),
    "bos id out of range": ("bos_id", 10**6, "tokenizer.bos_id"),
    "eos id negative": ("eos_id", -1, "tokenizer.eos_id"),
    "unk id a float": ("unk_id", 1.0, "tokenizer.unk_id"),
    "pad id a bool": ("pad_id", True, "tokenizer.pad_id"),
    "add_bos a string": ("add_bos", "yes", "tokenizer.add_bos"),
    "add_space_prefix an int": ("add_space_prefix", 1, "tokenizer.add_space_prefix"),
    "unknown model": ("model", "t5", "tokenizer.model"),
    "model a list": ("model", ["gpt2"], "tokenizer.model"),
    "unknown pre-tokenizer": ("pre", "no-such", "tokenizer.pre"),
    "pre-tokenizer a number": ("pre", 3, "tokenizer.pre"),
    "nfc a string": ("nfc", "yes", "tokenizer.nfc"),
    "lowercase an int": ("lowercase", 0, "tokenizer.lowercase"),
    "strip_accents a string": ("strip_accents", "no", "tokenizer.strip_accents"),
    "unknown field": ("vocab", {}, "tokenizer"),
}


@pytest.mark.parametrize("case", list(TOKENIZER_CASES))
def test_wrongly_typed_weights_tokenizer_field(weights, case):
    field, value, named = TOKENIZER_CASES[case]
    edit_header(weights, lambda h: h["tokenizer"].__setitem__(field, value))
    for load in (read_weights, Tokenizer.from_file):
        with pytest.raises(FormatError) as info:
            load(weights)
        assert str(weights) in str(info.value) and named in str(info.value), str(info.value)


def test_sentencepiece_tokenizer_without_scores(weights):
    edit_header(weights, lambda h: h["tokenizer"].update(model="llama", merges=[], pre=None))
    with pytest.raises(FormatError, match=r"m\.bin: tokenizer\.scores are missing"):
        read_weights(weights)


CONFIG_CASES = {
    "n_layers a bool": ("config", "n_layers", True, "config.n_layers"),
    "dim a float": ("config", "dim", 64.0, "config.dim"),
    "n_heads negative": ("config", "n_heads", -4, "config.n_heads"),
    "rope theta NaN": ("config", "rope_theta", math.nan, "config.rope_theta"),
    "rope theta zero": ("config", "rope_theta", 0.0, "config.rope_theta"),
    "rope theta infinite": ("config", "rope_theta", math.inf, "config.rope_theta"),
    "norm eps negative": ("config", "norm_eps", -1e-5, "config.norm_eps"),
    "norm eps a string": ("config", "norm_eps", "1e-5", "config.norm_eps"),
    "tied an int": ("config", "tied_embeddings", 1, "config.tied_embeddings"),
    "architecture a list": ("config", "architecture", ["llama"], "config.architecture"),
    "rope scaling a number": ("config", "rope_scaling", 8.0, "config.rope_scaling"),
    "rope scaling empty": ("config", "rope_scaling", "", "config.rope_scaling"),
    "rope attention factor zero": ("config", "rope_attn_factor", 0.0, "config.rope_attn_factor"),
    "rope attention factor a string": ("config", "rope_attn_factor", "1", "config.rope_attn_factor"),
    "rope scaling without its table": ("config", "rope_scaling", "llama3", "missing tensors: rope_freq"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_wrongly_typed_weights_config_field(weights, case):
    key, field, value, named = CONFIG_CASES[case]
    edit_header(weights, lambda h: h[key].__setitem__(field, value))
    with pytest.raises(FormatError) as info:
        read_weights(weights)
    assert str(weights) in str(info.value) and named in str(info.value), str(info.value)


@pytest.mark.parametrize("mutate,named", [
    (lambda h: h.__setitem__("metadata", ["name"]), "metadata must be an object"),
    (lambda h: h.__setitem__("config", [1, 2]), "config"),
    (lambda h: h.__setitem__("tensors", {"a": 1}), "tensor list"),
    (lambda h: tensor(h, "blk.0.attn_q.weight").__setitem__("type", ["f32"]), "blk.0.attn_q.weight: unknown type"),
    (lambda h: tensor(h, "blk.0.attn_q.weight").__setitem__("name", 7), "tensor entry"),
], ids=["metadata a list", "config a list", "tensors an object", "tensor type a list", "tensor name an int"])
def test_wrongly_typed_weights_header_field(weights, mutate, named):
    edit_header(weights, mutate)
    with pytest.raises(FormatError) as info:
        read_weights(weights)
    assert str(weights) in str(info.value) and named in str(info.value), str(info.value)


# ---- GGUF ----------------------------------------------------------------------------------------

def test_valid_gguf_tokenizer_reads(tmp_path):
    tiny_gguf(tmp_path / "m.gguf")
    tok = Tokenizer.from_file(tmp_path / "m.gguf")
    assert tok.vocab_size == VOCAB and tok.bos_id == 1


def test_gguf_padding_id_past_the_vocabulary_is_ignored(tmp_path):
    """A padding id the vocabulary lacks (Llama 2 fine-tunes: 32000 of 32000) is dropped, not refused:
    pyllm never pads. The ids pyllm uses stay strict (bos above)."""
    tiny_gguf(tmp_path / "m.gguf", extra_meta={"tokenizer.ggml.padding_token_id": VOCAB})
    assert Tokenizer.from_file(tmp_path / "m.gguf").data.pad_id is None
    convert(tmp_path / "m.gguf", tmp_path / "o.bin", progress=False)
    assert read_weights(tmp_path / "o.bin").tokenizer.pad_id is None


def test_gguf_block_count_is_bounded_by_the_tensors(tmp_path):
    """block_count 10**6 in a file of 20 tensors is refused before a per-layer table is built."""
    path = tmp_path / "m.gguf"
    tiny_gguf(path, extra_meta={"llama.block_count": 10**6})
    out = failure_in_subprocess(CATCH.format(
        call=f"from pyllm.convert import convert; convert({str(path)!r}, {str(tmp_path / 'o.bin')!r}, progress=False)"))
    assert out.startswith("FormatError") and str(path) in out and "llama.block_count is 1000000" in out, out


def test_gguf_array_count_is_bounded_by_the_file(tmp_path):
    """A string array whose count says 2**40 is refused by the bytes that remain, naming the key."""
    path = tmp_path / "m.gguf"
    tiny_gguf(path)
    data = bytearray(path.read_bytes())
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key) + 4 + 4  # value type, element type, then the u64 count
    assert struct.unpack_from("<Q", data, at)[0] == VOCAB
    data[at:at + 8] = struct.pack("<Q", 2**40)
    path.write_bytes(bytes(data))
    out = failure_in_subprocess(CATCH.format(
        call=f"from pyllm import Tokenizer; Tokenizer.from_file({str(path)!r})"))
    assert out.startswith("FormatError") and str(path) in out and "tokenizer.ggml.tokens" in out, out


GGUF_TOKENIZER_CASES = {
    "bos id out of range": ("tokenizer.ggml.bos_token_id", 10**6),
    "bos id a string": ("tokenizer.ggml.bos_token_id", "1"),
    "bos id an array": ("tokenizer.ggml.bos_token_id", [1]),
    "eos id a float": ("tokenizer.ggml.eos_token_id", Typed(F32, 2.0)),
    "scores too short": ("tokenizer.ggml.scores", [0.5] * (VOCAB - 1)),
    "scores strings": ("tokenizer.ggml.scores", ["x"] * VOCAB),
    "token types too long": ("tokenizer.ggml.token_type", [1] * (VOCAB + 1)),
    "token types strings": ("tokenizer.ggml.token_type", ["1"] * VOCAB),
    "token type out of range": ("tokenizer.ggml.token_type", [1] * (VOCAB - 1) + [77]),
    "token types bools": ("tokenizer.ggml.token_type", Typed(ARRAY, [True] * VOCAB)),
    "tokens ints": ("tokenizer.ggml.tokens", list(range(VOCAB))),
    "tokens a string": ("tokenizer.ggml.tokens", "abc"),
    "merges ints": ("tokenizer.ggml.merges", [1, 2]),
    "merge without a space": ("tokenizer.ggml.merges", ["!\""]),
    "add_bos a number": ("tokenizer.ggml.add_bos_token", Typed(U32, 1)),
    "unknown pre-tokenizer": ("tokenizer.ggml.pre", "no-such"),
    "unknown model": ("tokenizer.ggml.model", "t5"),
    "model an int": ("tokenizer.ggml.model", 5),
    "lowercase a number": ("tokenizer.ggml.normalizer.lowercase", Typed(U32, 1)),
}


@pytest.mark.parametrize("case", list(GGUF_TOKENIZER_CASES))
def test_malformed_gguf_tokenizer_metadata(tmp_path, case):
    """Tokenizer.from_file and the converter refuse it alike, naming the file and the key."""
    key, value = GGUF_TOKENIZER_CASES[case]
    path = tmp_path / "m.gguf"
    tiny_gguf(path, extra_meta={key: value})
    with pytest.raises(FormatError) as info:
        Tokenizer.from_file(path)
    assert str(path) in str(info.value) and key in str(info.value), str(info.value)
    with pytest.raises(FormatError) as info:
        convert(path, tmp_path / "o.bin", progress=False)
    assert str(path) in str(info.value) and key in str(info.value), str(info.value)
    assert not (tmp_path / "o.bin").exists()


def test_gguf_gemma4_tokenizer_without_merges(tmp_path):
    path = tmp_path / "m.gguf"
    tiny_gguf(path, extra_meta={"tokenizer.ggml.model": "gemma4"})
    with pytest.raises(FormatError, match=r"m\.gguf: metadata tokenizer\.ggml\.merges are missing"):
        Tokenizer.from_file(path)


GGUF_CONFIG_CASES = {
    "context length negative": ("llama.context_length", Typed(I32, -5)),
    "context length 2**40": ("llama.context_length", Typed(U64, 2**40)),
    "block count zero": ("llama.block_count", 0),
    "head count zero": ("llama.attention.head_count", 0),
    "embedding length a string": ("llama.embedding_length", "64"),
    "feed forward length a bool": ("llama.feed_forward_length", Typed(BOOL, True)),
    "rope base NaN": ("llama.rope.freq_base", Typed(F32, math.nan)),
    "rope base negative": ("llama.rope.freq_base", Typed(F32, -1.0)),
    "norm eps infinite": ("llama.attention.layer_norm_rms_epsilon", Typed(F32, math.inf)),
    "key length a string": ("llama.attention.key_length", Typed(STRING, "16")),
}


@pytest.mark.parametrize("case", list(GGUF_CONFIG_CASES))
def test_malformed_gguf_hyperparameter(tmp_path, case):
    key, value = GGUF_CONFIG_CASES[case]
    path = tmp_path / "m.gguf"
    tiny_gguf(path, extra_meta={key: value})
    with pytest.raises(FormatError) as info:
        convert(path, tmp_path / "o.bin", progress=False)
    assert str(path) in str(info.value) and key in str(info.value), str(info.value)
    assert not (tmp_path / "o.bin").exists()


def test_gguf_alignment_must_be_an_integer(tmp_path):
    """general.alignment stored as a bool (True, which Python counts as 1) is refused by name."""
    path = tmp_path / "m.gguf"
    tiny_gguf(path, extra_meta={"general.alignment": Typed(BOOL, True)})
    with pytest.raises(FormatError, match=r"m\.gguf: general\.alignment True is not a power of two"):
        Tokenizer.from_file(path)
