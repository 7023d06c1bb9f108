"""weights.bin: a valid file round-trips; hand-made corrupt files raise FormatError naming the problem."""
import dataclasses
import io
import json
import os
import struct

import numpy as np
import pytest

from pyllm import FormatError, Model
from pyllm.fetch import default_model
from pyllm.formats.mapped import huge_pages_available, read_into_memory
from pyllm.formats.weights import ALIGNMENT, MAGIC, read_weights
from test_model import config
from reference import random_model


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.bin"
    random_model(path, config("gqa"), "q8_0", seed=1)
    return path


def split(path):
    blob = path.read_bytes()
    magic, version, hlen = struct.unpack_from("<4sIQ", blob)
    start = (16 + hlen + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
    return json.loads(blob[16:16 + hlen]), blob[start:]


def rewrite(path, header, data, version=1, magic=MAGIC):
    h = json.dumps(header).encode()
    start = (16 + len(h) + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
    path.write_bytes(struct.pack("<4sIQ", magic, version, len(h)) + h + b"\0" * (start - 16 - len(h)) + data)


def tensor(header, name):
    return next(t for t in header["tensors"] if t["name"] == name)


def test_valid_file_reads_back(good):
    with read_weights(good) as f:
        assert f.config.n_layers == 2 and f.config.dim == 64
        t = f.tensors["blk.0.attn_q.weight"]
        assert (t.type, t.shape) == ("q8_0", (64, 64)) and t.offset % ALIGNMENT == 0
        assert len(f.tensor_bytes("blk.0.attn_q.weight")) == t.nbytes


def test_features_a_model_lacks_stay_out_of_the_header(tmp_path, good):
    """A model without q/k norms or a window writes the config earlier versions wrote and read."""
    from pyllm.formats.weights import ABSENT_CONFIG
    assert not set(ABSENT_CONFIG) & set(split(good)[0]["config"])
    assert {"full_attention_layers", "rope_theta_swa", "activation", "embed_scale", "attn_scale",
            "post_norms"} <= set(ABSENT_CONFIG)
    assert {"rope_dim", "rope_long_context"} <= set(ABSENT_CONFIG)
    random_model(tmp_path / "qk.bin", config("qwen3", qk_norm=True), seed=2)
    header = split(tmp_path / "qk.bin")[0]
    assert header["config"]["qk_norm"] is True
    assert tensor(header, "blk.1.attn_k_norm.weight")["shape"] == [32]
    random_model(tmp_path / "nope.bin", dataclasses.replace(config("qwen3"), nope_layers=(1,)), seed=2)
    assert split(tmp_path / "nope.bin")[0]["config"]["nope_layers"] == [1]
    assert read_weights(tmp_path / "nope.bin").config.nope_layers == (1,)
    random_model(tmp_path / "partial.bin", dataclasses.replace(config("qwen3"), rope_dim=24), seed=2)
    assert split(tmp_path / "partial.bin")[0]["config"]["rope_dim"] == 24
    assert read_weights(tmp_path / "partial.bin").config.rotary_dim == 24


def corrupt_header(mutate):
    def make(path):
        header, data = split(path)
        mutate(header)
        rewrite(path, header, data)
    return make


def truncate_to(fraction):
    def make(path):
        blob = path.read_bytes()
        path.write_bytes(blob[: int(len(blob) * fraction)])
    return make


def set_in(key, field, value):
    return corrupt_header(lambda h: h[key].__setitem__(field, value))


def set_tensor(name, field, value):
    return corrupt_header(lambda h: tensor(h, name).__setitem__(field, value))


def drop_tensor(name):
    return corrupt_header(lambda h: h["tensors"].remove(tensor(h, name)))


CASES = {
    "wrong magic": (lambda p: rewrite(p, *split(p), magic=b"GGUF"), r"not a pyllm weights file"),
    "tiny file": (lambda p: p.write_bytes(b"PYLM\1\0"), r"too short"),
    "empty file": (lambda p: p.write_bytes(b""), r"too short"),
    "version 2": (lambda p: rewrite(p, *split(p), version=2), r"version 2 is not supported"),
    "truncated in header": (truncate_to(0.001), r"header length \d+ runs past the end"),
    "truncated in data": (truncate_to(0.6), r"runs past the end of the file.*truncated"),
    "truncated last byte": (lambda p: p.write_bytes(p.read_bytes()[:-65]), r"runs past the end"),
    "header not json": (lambda p: p.write_bytes(p.read_bytes()[:16] + b"{oops" + p.read_bytes()[21:]),
                        r"header is not valid JSON"),
    "offset past end": (set_tensor("blk.1.ffn_up.weight", "offset", 1 << 40), r"blk.1.ffn_up.weight.*past the end"),
    "misaligned offset": (set_tensor("blk.0.attn_k.weight", "offset", 8), r"not 64-byte aligned"),
    "size overflow": (set_tensor("token_embd.weight", "shape", [1 << 31 - 1, 1 << 31 - 1]), r"too many elements|shape"),
    "size mismatch": (set_tensor("blk.0.attn_q.weight", "size", 12), r"size 12 but q8_0"),
    "unknown type": (set_tensor("blk.0.attn_v.weight", "type", "q2_k"), r"unknown type 'q2_k'"),
    "wrong shape": (set_tensor("blk.0.ffn_down.weight", "shape", [96, 64]), r"does not match the config"),
    "quantized norm": (set_tensor("output_norm.weight", "type", "f16"), r"must be f32"),
    "missing tensor": (drop_tensor("blk.1.attn_output.weight"), r"missing tensors: blk.1.attn_output.weight"),
    "overlap": (set_tensor("blk.0.attn_k.weight", "offset", 0), r"overlap"),
    "config gqa": (set_in("config", "n_kv_heads", 3), r"not a multiple of n_kv_heads"),
    "config negative": (set_in("config", "n_layers", -2), r"n_layers must be an integer"),
    "config unknown": (set_in("config", "attn_logit_softcap", 50.0), r"unknown fields \['attn_logit_softcap'\]"),
    "config window": (set_in("config", "sliding_window", 0), r"config.sliding_window must be an integer in \[1,"),
    "config qk_norm not bool": (set_in("config", "qk_norm", 1), r"config.qk_norm must be true or false"),
    "qk_norm without norms": (set_in("config", "qk_norm", True), r"missing tensors: blk.0.attn_q_norm.weight"),
    "nope_layers out of range": (set_in("config", "nope_layers", [2]), r"config.nope_layers must list distinct"),
    "nope_layers unsorted": (set_in("config", "nope_layers", [1, 0]), r"config.nope_layers must list distinct"),
    "nope_layers not a list": (set_in("config", "nope_layers", 1), r"config.nope_layers must list distinct"),
    "rope_dim odd": (set_in("config", "rope_dim", 3), r"config.rope_dim must be even"),
    "rope_dim past the head": (set_in("config", "rope_dim", 1000), r"config.rope_dim must be an integer in \[2,"),
    "rope_dim a float": (set_in("config", "rope_dim", 8.0), r"config.rope_dim must be an integer"),
    "long context without scaling": (set_in("config", "rope_long_context", 32),
                                     r"config.rope_long_context needs a RoPE scaling"),
    "long context zero": (set_in("config", "rope_long_context", 0), r"config.rope_long_context must be an integer"),
    "full layers without a window": (set_in("config", "full_attention_layers", [0]),
                                     r"full_attention_layers is given without a sliding_window"),
    "full layers out of range": (set_in("config", "full_attention_layers", [5]),
                                 r"config.full_attention_layers must list distinct"),
    "unknown activation": (set_in("config", "activation", "relu"), r"config.activation must be one of silu, gelu_tanh"),
    "zero embed scale": (set_in("config", "embed_scale", 0.0), r"config.embed_scale must be a finite positive"),
    "infinite attn scale": (set_in("config", "attn_scale", 1e39), r"config.attn_scale must be a finite positive"),
    "string local theta": (set_in("config", "rope_theta_swa", "1e4"), r"config.rope_theta_swa must be a finite"),
    "post_norms without norms": (set_in("config", "post_norms", True), r"missing tensors: blk.0.post_attention_norm"),
    "bad tokenizer": (corrupt_header(lambda h: h.__setitem__("tokenizer", {"model": "gpt2", "tokens": ["a"]})),
                      r"must list 97 tokens"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_corrupt_file_raises(good, case):
    make, message = CASES[case]
    make(good)
    with pytest.raises(FormatError, match=message) as info:
        Model(good)
    assert str(good) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_block_size_checked(tmp_path):
    """Quantized rows must fill whole blocks: dim 36 cannot be q8_0."""
    cfg = config("mqa-odd")
    path = tmp_path / "m.bin"
    random_model(path, cfg, "f16")
    header, data = split(path)
    tensor(header, "blk.0.attn_q.weight")["type"] = "q8_0"
    rewrite(path, header, data)
    with pytest.raises(FormatError, match="multiple of 32"):
        Model(path)


def test_missing_file(tmp_path):
    with pytest.raises(FormatError, match="nope.bin: cannot open"):
        Model(tmp_path / "nope.bin")


@pytest.mark.parametrize("use_mmap", [True, False])
def test_loading_does_not_copy_weights(good, use_mmap):
    """Tensors are views of the mapping or of the memory the file was read into, once: the C
    core reads the same bytes Python sees."""
    with Model(good, use_mmap=use_mmap) as m:
        view = np.frombuffer(m.file.tensor_bytes("token_embd.weight"), dtype=np.uint8)
        assert view.base is not None and not view.flags.owndata
        assert m.use_mmap is use_mmap


def test_mapped_and_read_weights_give_the_same_logits(good):
    """Read into (huge-page) memory or mapped, the model computes the same thing, bit for bit;
    the default is whichever the system favours."""
    tokens = [1, 5, 9, 2, 7]
    with Model(good, use_mmap=True) as mapped, Model(good, use_mmap=False) as read, Model(good) as default:
        a, b, c = mapped.logits(tokens), read.logits(tokens), default.logits(tokens)
        assert default.use_mmap is not huge_pages_available()
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert np.array_equal(a.view(np.uint32), c.view(np.uint32))


def test_use_mmap_takes_a_bool_or_none(good):
    with pytest.raises(ValueError, match="use_mmap must be True, False or None"):
        Model(good, use_mmap="yes")


def test_reading_stops_at_the_last_tensor(good):
    """A file padded far past its tensors (here 1 GiB of holes) costs no memory when read: only
    the bytes up to the last tensor's end are."""
    size = good.stat().st_size
    with open(good, "r+b") as f:
        f.truncate(size + (1 << 30))
    with Model(good, use_mmap=False) as m:
        end = max(t.offset + t.nbytes for t in m.file.tensors.values())
        assert len(m.file.buffer()) == end <= size


@pytest.mark.skipif(not huge_pages_available() or not os.path.exists("/proc/self/smaps_rollup"),
                    reason="no transparent huge pages here")
def test_read_weights_sit_in_huge_pages():
    """What reading is for: the default model's 98 MB land in 2 MB pages (shared anonymous memory
    would be shmem, which does not get them)."""
    def anon_huge_kb():
        with open("/proc/self/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("AnonHugePages:"))

    before = anon_huge_kb()
    with Model(default_model(quiet=True), use_mmap=False):
        assert anon_huge_kb() - before >= 64 * 1024


def test_a_file_that_ends_while_read_is_refused():
    """The file shrank between its size being read and its bytes (a file being rewritten)."""
    with pytest.raises(ValueError, match="ended after 10 of its 64 bytes"):
        read_into_memory(io.BytesIO(b"x" * 10), 64)


def test_deeply_nested_header_is_a_format_error(tmp_path):
    """A header of 100,000 nested arrays is refused by name, not with a RecursionError."""
    from pyllm.formats.weights import MAGIC, PREAMBLE, VERSION
    blob = b"[" * 100_000
    path = tmp_path / "deep.bin"
    path.write_bytes(PREAMBLE.pack(MAGIC, VERSION, len(blob)) + blob + b"\0" * 64)
    with pytest.raises(FormatError, match=r"deep.bin.*nested too deeply"):
        read_weights(path)
