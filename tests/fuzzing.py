"""Fuzzing pyllm with hostile files: mutated weights.bin, GGUF, Hugging Face directories, llama2.c
checkpoints, tokenizer.json, tokenizer.model and chat templates go through loading, conversion and a
short generation, each case in a forked process with a memory limit and a timeout.

A case is named by (format, seed, index) and rebuilt from that alone, so any finding replays
(negative indexes are the valid inputs the mutations start from, unchanged):

    python tests/fuzzing.py run --cases 2000 --seed 7          # a campaign: a table, exit 1 on defects
    python tests/fuzzing.py replay gguf:7:123 --keep /tmp/case # one case in-process, with its traceback

Outcomes: "ok" and "error" (a PyllmError: the input was refused as it should be) are expected;
"exception" (any other exception), "memory" (MemoryError under the limit), "signal" (the process was
killed by a signal), "timeout" and "unloadable" (a conversion succeeded but pyllm refuses its output)
are defects. Mutations are blind (bit flips, truncation, splices, huge integers and varints) and
structure-aware (one JSON, GGUF metadata, protobuf or header field replaced by an extreme or wrongly
typed value), since the structure-aware ones get past the first checks.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import random
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]  # the writers beside this file, the pyllm above it

import jinja2.sandbox  # noqa: E402,F401 - imported once here, not again in every forked case
import numpy as np  # noqa: E402

from gguf_writer import (ARRAY, BOOL, F32, F64, I32, I64, STRING, U8, U32, U64, Typed,  # noqa: E402
                         write_gguf)
from llama2c_writer import random_weights, write_checkpoint, write_tokenizer_bin  # noqa: E402
from pyllm import Model, PyllmError, Tokenizer  # noqa: E402
from pyllm.chat import BUILTIN_TEMPLATES, render  # noqa: E402
from pyllm.convert import convert  # noqa: E402
from pyllm.formats.weights import expected_tensors  # noqa: E402
from pyllm.quant import TYPES, quantize  # noqa: E402
from pyllm.types import ModelConfig  # noqa: E402

FORMATS = ("weights", "gguf", "hf", "llama2c", "tokenizer_json", "tokenizer_model", "template")
EXPECTED = ("ok", "error")
DEFECTS = ("exception", "memory", "signal", "timeout", "unloadable")
OUTCOMES = EXPECTED + DEFECTS
HF_DATA = os.path.join(TESTS, "data", "hf")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What is 2+2?"}]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]  # fits a small context
PROMPT = "the cat sat"
TEXT = "Hello world, the cat sat on 12345 mats. ünïcödé ☕\n\t  <|im_start|>user <s> end"
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
MESSAGE_LIMIT = 2000  # characters of an exception message kept in a result


# ------------------------------------------------------------------------------------------------
# Extreme values

INTS = [0, -1, 1, 2, 3, 7, 255, 65535, 2**31 - 1, 2**31, -2**31, 2**32 - 1, 2**32, 2**63 - 1, -2**63,
        2**63, 2**64 - 1, 10**6, 10**9, 10**18]
SMALL_INTS = [0, 1, 2, 7, 255, 65535, 10**6, 10**9, 2**31 - 1]  # fit any GGUF integer array type
FLOATS32 = [math.nan, math.inf, -math.inf, 0.0, -0.0, 3.4e38, 1e-45, -1.5, 1e30]  # each fits a float32
FLOATS = FLOATS32 + [1e308, 5e-324]
DEEP = "\0deep\0"  # a JSON value replaced, after serialization, by 100,000 nested arrays


def extreme_json(rng: random.Random) -> Any:
    """A JSON value chosen to break assumptions: huge, negative, non-finite, empty, wrongly typed."""
    return rng.choice([
        lambda: rng.choice(INTS), lambda: rng.choice(FLOATS), lambda: rng.choice(["", "x", "\u2581", "\udc80"]),
        lambda: [], lambda: {}, lambda: None, lambda: rng.choice([True, False]),
        lambda: "A" * rng.choice([1000, 10**5, 10**6]), lambda: [0] * rng.choice([1, 3, 10**5]),
        lambda: {"a": [1, {"b": None}]}, lambda: [[]] * 3, lambda: DEEP,
    ])()


def dump_json(obj: Any) -> bytes:
    """JSON text of obj, allowing NaN/Infinity and expanding DEEP into deep nesting."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=True)
    deep = json.dumps(DEEP)
    if deep in text:
        text = text.replace(deep, "[" * 100_000 + "]" * 100_000, 1).replace(deep, "0")
    return text.encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------------------------------------
# Blind mutations of bytes (positions mostly inside the first `hot` bytes, where headers live)

def _pos(rng: random.Random, n: int, hot: int) -> int:
    if n == 0:
        return 0
    return rng.randrange(min(hot, n) if hot and rng.random() < 0.8 else n)


def mutate_bytes(data: bytes, rng: random.Random, hot: int = 0) -> tuple[bytes, str]:
    """One blind mutation: bit flips, interesting bytes or integers, truncation, splices, varints."""
    b = bytearray(data)
    n = len(b)
    kind = rng.choice(["flip", "byte", "int", "truncate", "delete", "duplicate", "insert", "varint", "zero"])
    p = _pos(rng, n, hot)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            q = _pos(rng, n, hot)
            if q < n:
                b[q] ^= 1 << rng.randrange(8)
        return bytes(b), f"bit flips near {p}"
    if kind == "byte" and n:
        v = rng.choice([0, 0xFF, 0x7F, 0x80, 0x01, 0x22, 0x5B, 0x7B])
        b[min(p, n - 1)] = v
        return bytes(b), f"byte {min(p, n - 1)} = {v:#x}"
    if kind == "int":
        fmt = rng.choice(["<I", "<i", "<Q", "<q"])
        lo, hi = {"<I": (0, 2**32), "<i": (-2**31, 2**31), "<Q": (0, 2**64), "<q": (-2**63, 2**63)}[fmt]
        v = rng.choice([x for x in INTS if lo <= x < hi])
        p -= p % 4 if rng.random() < 0.7 else 0
        b[p:p + struct.calcsize(fmt)] = struct.pack(fmt, v)
        return bytes(b), f"{fmt} {v} at {p}"
    if kind == "truncate":
        return bytes(b[:p]), f"truncated to {p} bytes"
    if kind == "delete":
        k = rng.choice([1, 4, 8, 64, 1024])
        del b[p:p + k]
        return bytes(b), f"deleted {k} bytes at {p}"
    if kind == "duplicate" and n:
        src, k = rng.randrange(n), rng.choice([1, 8, 64, 4096])
        b[p:p] = b[src:src + k]
        return bytes(b), f"copied {k} bytes from {src} to {p}"
    if kind == "insert":
        k = rng.choice([1, 4, 16, 256])
        b[p:p] = bytes(rng.randrange(256) for _ in range(k))
        return bytes(b), f"inserted {k} random bytes at {p}"
    if kind == "varint":
        v = rng.choice([2**31, 2**32, 2**63 - 1, 2**64 - 1, 10**9])
        b[p:p] = varint(v)
        return bytes(b), f"inserted varint {v} at {p}"
    k = rng.choice([4, 64, 4096])
    b[p:p + k] = bytes(len(b[p:p + k]))
    return bytes(b), f"zeroed {k} bytes at {p}"


# ------------------------------------------------------------------------------------------------
# Structure-aware mutations: JSON documents

def _paths(obj: Any, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    """Paths to values in a JSON tree, lists sampled so a long vocabulary does not drown the rest."""
    out = [prefix]
    if depth > 6:
        return out
    if isinstance(obj, dict):
        keys = list(obj)
        for k in keys if len(keys) <= 40 else keys[:10] + keys[len(keys) // 2:len(keys) // 2 + 5] + keys[-5:]:
            out += _paths(obj[k], prefix + (k,), depth + 1)
    elif isinstance(obj, list):
        idx = list(range(len(obj))) if len(obj) <= 12 else [0, 1, len(obj) // 2, len(obj) - 1]
        for i in idx:
            out += _paths(obj[i], prefix + (i,), depth + 1)
    return out


def _get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def mutate_json(obj: Any, rng: random.Random, prefer: tuple[str, ...] = ()) -> tuple[Any, str]:
    """Replace, delete, resize or retype one value of a parsed JSON document (a deep copy is changed).

    `prefer`: top-level keys to aim at half of the time."""
    obj = json.loads(json.dumps(obj))
    paths = [p for p in _paths(obj) if p]
    if not paths:
        return extreme_json(rng), "document replaced"
    preferred = [p for p in paths if p[0] in prefer]
    path = rng.choice(preferred if preferred and rng.random() < 0.5 else paths)
    parent, key = _get(obj, path[:-1]), path[-1]
    value = parent[key]
    where = "$" + "".join(f"[{k!r}]" for k in path)
    op = rng.random()
    if op < 0.1 and isinstance(parent, dict):
        del parent[key]
        return obj, f"{where} deleted"
    if op < 0.2 and isinstance(value, list) and value:
        if rng.random() < 0.5:
            del value[rng.randrange(len(value)):]
            return obj, f"{where} shortened to {len(value)}"
        value += value[:rng.randint(1, len(value))]
        return obj, f"{where} lengthened to {len(value)}"
    if op < 0.3:  # the same value, wrongly typed
        new = rng.choice([str(value), [value], {"v": value}]) if not isinstance(value, str) else \
            rng.choice([len(value), [value], value.encode().hex(), None])
    else:
        new = extreme_json(rng)
    parent[key] = new
    shown = repr(new) if len(repr(new)) < 40 else f"{type(new).__name__} of length {len(new)}"
    return obj, f"{where} = {'deep nesting' if new == DEEP else shown}"


# ------------------------------------------------------------------------------------------------
# Templates

HOSTILE_TEMPLATES = [
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{{ range(10**12) | list | length }}",
    "{{ 'x' | center(10**9) }}",
    "{{ 'a' * 10**10 }}",
    "{{ 'ab' * 10**8 }}",
    "{% set ns = namespace(s='xx') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "{{ lipsum(10**6) }}",
    "{{ 'x' | indent(10**9, true) }}{{ 'a\nb' | indent(10**9) }}",
    "{{ 'x' | wordwrap(1) * 10**7 }}",
    "{{ '%*d' % (10**9, 1) }}",
    "{{ '{:>1000000000}'.format('x') }}",
    "{{ 10**10**10 }}",
    "{{ 2**99999999 }}",
    "{{ 1/0 }}", "{{ 1//0 }}", "{{ 1%0 }}",
    "{% include 'x.html' %}", "{% extends 'base.html' %}", "{% import 'm.html' as m %}",
    "{% from 'm.html' import x %}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% macro f(n) %}{{ f(n) ~ f(n) }}{% endmacro %}{{ f(0) }}",
    "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}",
    "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "{% if true %}" * 3000 + "x" + "{% endif %}" * 3000,
    "{{ [" * 2000 + "]" * 2000 + " }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.system('true') }}",
    "{{ raise_exception('boom') }}",
    "{{ raise_exception(10**9) }}",
    "{{ strftime_now('%Y' * 10**6) }}",
    "{{ messages | map(attribute='content') | join('x' * 10**8) }}",
    "{% set x = messages %}{% for i in range(30) %}{% set x = [x, x] %}{% endfor %}{{ x | string | length }}",
    "{{ messages[10**18] }}", "{{ messages[0]['content'][::0] }}",
    "{{ 'x' | truncate(-1) }}", "{{ 'x' | batch(0) | list }}", "{{ [1] | slice(0) | list }}",
    "{{ 'x' | int(base=99) }}", "{{ 'x' | round(10**9) }}", "{{ 1e308 * 10 }}", "{{ (-1) ** 0.5 }}",
    "{{ 'x' | format(*range(10**7)) }}",
    "{% for x in none %}{% endfor %}", "{{ x.y.z }}", "{{ undefined_function() }}",
    "{% raw %}", "{% for %}", "{{", "{% endfor %}", "{{ }}", "{# ",
]

TEMPLATE_SNIPPETS = [
    "{% for i in range(10**6) %}", "{% endfor %}", "{% if %}", "{{ 1/0 }}", "{{ 'a' * 10**9 }}",
    "{% include 'x' %}", "{{ messages[99] }}", "{% set messages = 0 %}", "{{ messages|length }}",
    "{%", "%}", "{{", "}}", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "{{ loop }}",
    "{{ raise_exception('x') }}", "{% set x = 10**18 %}{{ 'a' * x }}", "{{ none.x }}",
]


def hostile_text(rng: random.Random) -> tuple[str, str]:
    """Text to tokenize: ordinary, or a long word without spaces, every code point class, or a run of
    control-token look-alikes."""
    kind = rng.choice(["plain", "plain", "word", "bytes", "unicode", "specials", "spaces"])
    if kind == "word":
        n = rng.choice([1000, 5000, 20000])
        return "".join(rng.choice(LETTERS) for _ in range(n)), f"{n} random letters without spaces"
    if kind == "bytes":
        return "".join(map(chr, range(256))) * 4, "every code point below 256, 4 times"
    if kind == "unicode":
        points = [rng.choice([rng.randrange(0x80, 0x800), rng.randrange(0x800, 0xD800),
                              rng.randrange(0xE000, 0x110000)]) for _ in range(2000)]
        return "".join(map(chr, points)), "2000 random code points"
    if kind == "specials":
        return "<|im_start|><s></s><|endoftext|><unk>" * 500 + "<|im_", "control-token look-alikes"
    if kind == "spaces":
        return " \t\n\r\u00a0\u2581" * 2000, "whitespace of every kind"
    return TEXT, "ordinary text"


def mutate_template(source: str, rng: random.Random) -> tuple[str, str]:
    """A real chat template changed: a snippet inserted, a span deleted or repeated, numbers made
    huge, or the whole template wrapped in a loop or nesting."""
    kind = rng.choice(["snippet", "delete", "repeat", "numbers", "loop", "nest", "swap"])
    p = rng.randrange(len(source) + 1)
    if kind == "snippet":
        s = rng.choice(TEMPLATE_SNIPPETS)
        return source[:p] + s + source[p:], f"inserted {s!r} at {p}"
    if kind == "delete":
        k = rng.choice([1, 2, 5, 20])
        return source[:p] + source[p + k:], f"deleted {k} characters at {p}"
    if kind == "repeat":
        k, times = rng.choice([2, 10, 40]), rng.choice([2, 100, 10**4])
        return source[:p] + source[p:p + k] * times + source[p + k:], f"repeated {source[p:p + k]!r} x{times}"
    if kind == "numbers":
        n = rng.choice(["10**9", "-1", "99999999999999999999", "1e308"])
        return source.replace("0", n).replace("1", n), f"digits 0 and 1 replaced by {n}"
    if kind == "loop":
        n = rng.choice([10**3, 10**5, 10**7])
        return f"{{% for _ in range({n}) %}}{source}{{% endfor %}}", f"wrapped in a loop of {n}"
    if kind == "nest":
        n = rng.choice([100, 1000, 5000])
        return "{% if true %}" * n + source + "{% endif %}" * n, f"nested in {n} ifs"
    return source.replace("{%", "{{").replace("%}", "}}"), "statements turned into expressions"


# ------------------------------------------------------------------------------------------------
# Protobuf (tokenizer.model) fields, written from the wire format

def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = buf[pos]
        v |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not b & 0x80:
            return v, pos


def parse_proto(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field, wire type, value) of a well-formed message: ints, or bytes for wire type 2."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        wire = key & 7
        if wire == 0:
            v, pos = read_varint(buf, pos)
        elif wire == 1:
            v, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 5:
            v, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            n, pos = read_varint(buf, pos)
            v, pos = buf[pos:pos + n], pos + n
        out.append((key >> 3, wire, v))
    return out


def encode_proto(fields: list[tuple[int, int, Any]]) -> bytes:
    out = bytearray()
    for f, wire, v in fields:
        out += varint(f << 3 | wire)
        if wire == 0:
            out += varint(v)
        elif wire == 1:
            out += struct.pack("<Q", v & (2**64 - 1))
        elif wire == 5:
            out += struct.pack("<I", v & (2**32 - 1))
        elif wire == 2:
            out += varint(len(v)) + v
        # wire types 3, 4, 6, 7: the key alone
    return bytes(out)


def mutate_proto(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One field of a SentencePiece ModelProto changed: a piece's text, score, type or length, a
    trainer id or the model type, the normalizer, or a field with a lying length or wire type."""
    fields = parse_proto(data)
    pieces = [i for i, (f, w, _) in enumerate(fields) if f == 1 and w == 2]
    kind = rng.choice(["piece", "piece", "trainer", "normalizer", "length", "wire", "drop", "dup"])
    if kind in ("piece", "length") and pieces:
        i = rng.choice(pieces)
        sub = parse_proto(fields[i][2])
        if kind == "length":  # the piece's length varint says more than there is
            v = rng.choice([2**31, 2**32, 2**63 - 1, 10**9, len(fields[i][2]) + 1])
            return (encode_proto(fields[:i]) + varint(1 << 3 | 2) + varint(v) + fields[i][2]
                    + encode_proto(fields[i + 1:])), f"piece {pieces.index(i)} claims length {v}"
        which = rng.choice([1, 2, 3, 4])
        new = {1: (1, 2, rng.choice([b"", b"\xff\xfe", b"<0x100>", b"\xe2\x96\x81" * 10**4, b"<s>"])),
               2: (2, rng.choice([0, 1, 2]), rng.choice([2**63, 1, 2**32 - 1, 0x7FC00000])),
               3: (3, 0, rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 99, 2**64 - 1, 2**31])),
               4: (rng.randrange(4, 20), 0, 1)}[which]
        if new[1] == 2 and which == 2:
            new = (2, 2, b"\0" * rng.choice([0, 3, 4, 8]))
        sub = [x for x in sub if x[0] != new[0]] + [new]
        fields[i] = (1, 2, encode_proto(sub))
        return encode_proto(fields), f"piece {pieces.index(i)} field {new[0]} = wire {new[1]} {str(new[2])[:30]}"
    if kind == "trainer":
        f = rng.choice([3, 40, 41, 42, 43, 35])
        v = rng.choice([0, 1, 2, 4, 99, 2**64 - 1, 2**31, 2**32 - 2, 10**9, len(pieces), len(pieces) + 1])
        trainer = [x for x in fields if x[0] == 2 and x[1] == 2]
        sub = parse_proto(trainer[0][2]) if trainer else []
        sub = [x for x in sub if x[0] != f] + [(f, 0, v)]
        fields = [x for x in fields if not (x[0] == 2 and x[1] == 2)] + [(2, 2, encode_proto(sub))]
        return encode_proto(fields), f"trainer field {f} = {v}"
    if kind == "normalizer":
        f, w, v = rng.choice([(1, 2, b"nmt_nfkc"), (1, 2, b"\xff"), (3, 0, 0), (4, 0, 1), (5, 0, 0),
                              (2, 2, b"\0" * 9), (3, 2, b"x")])
        fields = [x for x in fields if x[0] != 3] + [(3, 2, encode_proto([(f, w, v)]))]
        return encode_proto(fields), f"normalizer field {f} = wire {w} {v!r}"
    if kind == "wire":
        w = rng.choice([3, 4, 6, 7])
        at = rng.randrange(len(fields) + 1)
        return encode_proto(fields[:at]) + varint(rng.choice([1, 2, 9]) << 3 | w) + encode_proto(fields[at:]), \
            f"field with wire type {w} before field {at}"
    if kind == "drop":
        f = rng.choice([1, 2, 3])
        return encode_proto([x for x in fields if x[0] != f]), f"every top-level field {f} dropped"
    i = rng.choice(pieces or [0])
    fields[i:i] = [fields[i]] * rng.choice([1, 1000])
    return encode_proto(fields), f"field {i} duplicated"


# ------------------------------------------------------------------------------------------------
# Base inputs: small valid files of every format, built deterministically

def tiny_config(arch: str = "llama", tied: bool = True, bias: bool = False, vocab: int = 97) -> ModelConfig:
    return ModelConfig(dim=64, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                       vocab_size=vocab, max_seq_len=256, rope_theta=10000.0, norm_eps=1e-5,
                       tied_embeddings=tied, qkv_bias=bias, architecture=arch)


def gguf_vocab() -> tuple[list[str], list[int], list[str]]:
    """97 byte-level BPE tokens (printable ASCII, 'Ġ', merges, control tokens), their types, merges."""
    chars = [chr(c) for c in range(0x21, 0x7F)] + ["\u0120", "\u010a"]
    merges = ["\u0120 t", "h e", "\u0120t he", "a t", "\u0120 c"]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unused>"]
    tokens = chars[:97 - len(merges) - len(specials)] + [m.replace(" ", "") for m in merges] + specials
    types = [1] * (97 - len(specials)) + [3] * len(specials)
    return tokens, types, merges


def gguf_base(arch: str, type_name: str, tied: bool, bias: bool) -> dict[str, Any]:
    """A GGUF as (metadata, tensors, alignment, version), to be mutated and written by write_gguf."""
    cfg = tiny_config(arch, tied, bias)
    rng = np.random.default_rng(11)
    tokens, types, merges = gguf_vocab()
    meta = {
        "general.architecture": arch, "general.name": "tiny", "general.alignment": 32,
        f"{arch}.block_count": cfg.n_layers, f"{arch}.embedding_length": cfg.dim,
        f"{arch}.feed_forward_length": cfg.hidden_dim, f"{arch}.attention.head_count": cfg.n_heads,
        f"{arch}.attention.head_count_kv": cfg.n_kv_heads, f"{arch}.context_length": cfg.max_seq_len,
        f"{arch}.rope.freq_base": Typed(F32, cfg.rope_theta),
        f"{arch}.attention.layer_norm_rms_epsilon": Typed(F32, cfg.norm_eps),
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": tokens.index("<|endoftext|>"),
        "tokenizer.ggml.eos_token_id": tokens.index("<|im_end|>"),
        "tokenizer.chat_template": Typed(STRING, BUILTIN_TEMPLATES["chatml"]),
    }
    tensors = []
    for name, shape in expected_tensors(cfg).items():
        data = (1 + 0.1 * rng.standard_normal(shape) if len(shape) == 1
                else rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
        t = type_name if len(shape) == 2 else "f32"
        tensors.append([name, TYPES[t].ggml_id, list(shape), quantize(data.reshape(-1, shape[-1]), t).tobytes()])
    return {"meta": meta, "tensors": tensors, "alignment": 32, "version": 3}


LLAMA2C_WORDS = ["\u2581t", "he", "at", "\u2581the", "\u2581c", "\u2581cat", "\u2581s", "\u2581sat", "t", "h", "e", "a"]
LLAMA2C_PIECES = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + LLAMA2C_WORDS


@dataclass
class Bases:
    """The valid inputs that cases mutate, built once in the parent before any fork."""

    gguf: list[dict[str, Any]] = field(default_factory=list)
    weights: list[bytes] = field(default_factory=list)
    hf: list[dict[str, bytes]] = field(default_factory=list)
    llama2c: list[bytes] = field(default_factory=list)
    tokenizer_bin: bytes = b""
    tokenizer_json: list[bytes] = field(default_factory=list)
    tokenizer_model: list[bytes] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    tokenizer: Tokenizer | None = None  # renders templates into token ids


def build_bases(workdir: str) -> Bases:
    """Write and read back one or more valid files of each format (deterministic: fixed seeds)."""
    b = Bases()
    os.makedirs(workdir, exist_ok=True)
    b.gguf = [gguf_base("llama", "q8_0", True, False), gguf_base("qwen2", "f16", False, True)]
    for i, g in enumerate(b.gguf):  # weights.bin: the GGUFs converted, with tokenizer and template
        src, dst = os.path.join(workdir, f"base{i}.gguf"), os.path.join(workdir, f"base{i}.bin")
        write_gguf(src, g["meta"], g["tensors"], g["alignment"], g["version"])
        convert(src, dst, progress=False)
        with open(dst, "rb") as f:
            b.weights.append(f.read())
    for case in ("llama-f32", "qwen2-f32", "llama-bf16-sharded"):
        root = os.path.join(HF_DATA, case)
        b.hf.append({name: open(os.path.join(root, name), "rb").read() for name in sorted(os.listdir(root))
                     if not name.startswith("reference")})
    for version in (0, 1, 2):
        cfg = tiny_config(vocab=len(LLAMA2C_PIECES))
        path = os.path.join(workdir, f"llama2c-{version}.bin")
        write_checkpoint(path, random_weights(cfg, version), cfg, version, group_size=32)
        with open(path, "rb") as f:
            b.llama2c.append(f.read())
    path = os.path.join(workdir, "tokenizer.bin")
    write_tokenizer_bin(path, LLAMA2C_PIECES, [0.0] * 259 + [-float(i) for i in range(len(LLAMA2C_WORDS))])
    with open(path, "rb") as f:
        b.tokenizer_bin = f.read()
    for case in ("llama-f32", "qwen2-f32", "mistral-bf16"):
        b.tokenizer_json.append(b.hf[0]["tokenizer.json"] if case == "llama-f32" else
                                open(os.path.join(HF_DATA, case, "tokenizer.json"), "rb").read())
    for case in ("llama-bf16-sharded", "mistral-bf16"):
        b.tokenizer_model.append(open(os.path.join(HF_DATA, case, "tokenizer.model"), "rb").read())
    b.templates = list(BUILTIN_TEMPLATES.values())
    b.templates.append(b.hf[0]["chat_template.jinja"].decode())
    b.templates.append(json.loads(b.hf[1]["tokenizer_config.json"])["chat_template"])
    b.tokenizer = Tokenizer.from_file(os.path.join(HF_DATA, "llama-f32", "tokenizer.json"))
    return b


# ------------------------------------------------------------------------------------------------
# Cases: (format, seed, index) -> files in a directory -> outcome

@dataclass(frozen=True)
class Case:
    format: str
    seed: int
    index: int

    def __str__(self) -> str:
        return f"{self.format}:{self.seed}:{self.index}"

    @staticmethod
    def parse(text: str) -> "Case":
        fmt, seed, index = text.split(":")
        return Case(fmt, int(seed), int(index))

    def rng(self) -> random.Random:
        return random.Random(str(self))  # seeded from the name alone: the same case on any machine


@dataclass
class Result:
    case: Case
    outcome: str
    stage: str = ""
    error: str = ""            # exception type (or signal name)
    message: str = ""
    mutation: str = ""
    seconds: float = 0.0       # wall time of the case's process

    @property
    def defect(self) -> bool:
        return self.outcome in DEFECTS

    def describe(self) -> str:
        return (f"{self.case} {self.outcome} at {self.stage}: {self.error}: {self.message[:300]}"
                f"  [mutation: {self.mutation}]  replay: python tests/fuzzing.py replay {self.case}")


def _write(path: str, data: bytes | str) -> None:
    with open(path, "wb") as f:
        f.write(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)


def _mutate_gguf(base: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], str]:
    """One GGUF metadata value, tensor entry, alignment or version replaced."""
    g = {"meta": dict(base["meta"]), "tensors": [list(t) for t in base["tensors"]],
         "alignment": base["alignment"], "version": base["version"]}
    meta, tensors = g["meta"], g["tensors"]
    kind = rng.choice(["value", "value", "value", "array", "delete", "tensor", "tensor", "header"])
    if kind in ("value", "array", "delete"):
        keys = [k for k in meta if kind != "array" or isinstance(meta[k], list)]
        key = rng.choice(keys)
        if kind == "delete":
            del meta[key]
            return g, f"metadata {key} deleted"
        if kind == "array":
            items = meta[key]
            if not items:  # emptied by an earlier mutation of the same case
                meta[key] = [rng.choice(SMALL_INTS)]
                return g, f"metadata array {key} given one item"
            op = rng.choice(["short", "long", "retype", "empty"])
            meta[key] = {"short": items[:rng.randrange(len(items))], "long": items + items[:7],
                         "retype": [rng.choice(SMALL_INTS) for _ in items] if isinstance(items[0], str)
                         else [str(x) for x in items], "empty": []}[op]
            return g, f"metadata array {key} {op} ({len(meta[key])} items)"
        vtype = rng.choice([U8, I32, U32, I64, U64, F32, F64, BOOL, STRING, ARRAY])
        if vtype == STRING:
            value = rng.choice(["", "x" * 10**5, "gemma", "{{ 1/0 }}", BUILTIN_TEMPLATES["llama2"][:40]])
        elif vtype == ARRAY:
            value = rng.choice([[], [1, 2], ["a"], [[1]], [0.5] * 3])
        elif vtype in (F32, F64):
            value = rng.choice(FLOATS32 if vtype == F32 else FLOATS)
        elif vtype == BOOL:
            value = rng.random() < 0.5
        else:
            lo, hi = {U8: (0, 256), I32: (-2**31, 2**31), U32: (0, 2**32), I64: (-2**63, 2**63), U64: (0, 2**64)}[vtype]
            value = rng.choice([x for x in INTS if lo <= x < hi])
        meta[key] = Typed(vtype, value)
        shown = repr(value) if len(repr(value)) < 40 else f"{len(value)} characters"
        return g, f"metadata {key} = type {vtype} {shown}"
    if kind == "tensor":
        t = rng.choice(tensors)
        op = rng.choice(["dims", "ndims", "type", "drop", "dup", "rename"])
        if op == "dims":
            i = rng.randrange(len(t[2]))
            t[2][i] = rng.choice([0, 1, 3, 2**31, 2**32 + 64, 2**62, 10**9])
        elif op == "ndims":
            t[2] = rng.choice([[], t[2] + [1], t[2] + [1, 1, 1], [1] * 8])
        elif op == "type":
            t[1] = rng.choice([2, 3, 6, 7, 10, 12, 13, 14, 30, 39, 99, 2**31])
        elif op == "drop":
            tensors.remove(t)
        elif op == "dup":
            tensors.append(list(t))
        else:
            t[0] = rng.choice(["", "blk.99.attn_q.weight", "blk.-1.ffn_up.weight", t[0] + "x", "x" * 10**4])
        return g, f"tensor {t[0][:40]} {op}: {t[1]} {t[2]}"
    if rng.random() < 0.5:
        g["alignment"] = rng.choice([1, 3, 8, 64, 4096])
        meta["general.alignment"] = Typed(U32, rng.choice([0, 1, 3, 64, 2**31, g["alignment"]]))
        return g, f"alignment {g['alignment']}, general.alignment {meta['general.alignment'].value}"
    g["version"] = rng.choice([0, 1, 2, 4, 2**32 - 1])
    return g, f"version {g['version']}"


def _write_gguf(path: str, g: dict[str, Any]) -> None:
    write_gguf(path, g["meta"], [tuple(t) for t in g["tensors"]], max(g["alignment"], 1), g["version"])


def rebuild_header_file(data: bytes, header: Any, length_fmt: str, preamble: int, align: int) -> bytes:
    """A weights.bin or safetensors file with a new JSON header; the data keeps its aligned place
    after the header, so its offsets stay right."""
    size = struct.calcsize(length_fmt)
    (n,) = struct.unpack_from(length_fmt, data, preamble - size)
    body = data[preamble + n + (-(preamble + n) % align):]
    blob = dump_json(header)
    blob += b" " * (-(preamble + len(blob)) % align)
    return data[:preamble - size] + struct.pack(length_fmt, len(blob)) + blob + body


def _mutate_header_file(data: bytes, rng: random.Random, length_fmt: str, preamble: int, align: int,
                        prefer: tuple[str, ...], what: str) -> tuple[bytes, str]:
    """One header value changed, or the header length itself."""
    size = struct.calcsize(length_fmt)
    (n,) = struct.unpack_from(length_fmt, data, preamble - size)
    if rng.random() < 0.1:
        v = rng.choice([0, 1, n - 1, n + 1, 2**31, 2**62, 2**64 - 1])
        return data[:preamble - size] + struct.pack(length_fmt, v) + data[preamble:], \
            f"{what} header length {v} (really {n})"
    header, desc = mutate_json(json.loads(data[preamble:preamble + n]), rng, prefer)
    return rebuild_header_file(data, header, length_fmt, preamble, align), f"{what} header {desc}"


def _mutate_weights(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    (n,) = struct.unpack_from("<Q", data, 8)
    if rng.random() < 0.3:
        return mutate_bytes(data, rng, hot=16 + n)
    if rng.random() < 0.15:  # a hostile template in the header
        header = json.loads(data[16:16 + n])
        header["chat_template"] = template = rng.choice(HOSTILE_TEMPLATES)
        return rebuild_header_file(data, header, "<Q", 16, 64), f"chat_template = {template[:60]!r}"
    return _mutate_header_file(data, rng, "<Q", 16, 64, ("config", "tokenizer", "tensors"), "weights.bin")


def _mutate_safetensors(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    (n,) = struct.unpack_from("<Q", data, 0)
    if rng.random() < 0.3:
        return mutate_bytes(data, rng, hot=8 + n)
    return _mutate_header_file(data, rng, "<Q", 8, 8, (), "safetensors")


def _mutate_llama2c(model: bytes, tok: bytes, rng: random.Random) -> tuple[bytes, bytes, str]:
    """A header field of the checkpoint, a tokenizer.bin record, or blind bytes in either."""
    kind = rng.choice(["header", "header", "blind", "tokenizer", "tok-blind"])
    legacy = struct.unpack_from("<I", model, 0)[0] != 0x616B3432
    if kind == "header":
        fields = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"]
        if legacy:
            i = rng.randrange(7)
            at = 4 * i
        else:
            fields = ["magic", "version"] + fields + ["shared", "group_size"]
            i = rng.randrange(len(fields))
            at = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 37][i]
        v = rng.choice([0, 1, -1, 2, 3, 7, 16, 31, 2**31 - 1, -2**31, 10**6, 10**9, 97, 281, 282])
        b = bytearray(model)
        if fields[i] == "shared":
            b[at] = v & 0xFF
        else:
            b[at:at + 4] = struct.pack("<i", v)
        return bytes(b), tok, f"checkpoint {fields[i]} = {v}"
    if kind == "blind":
        m, desc = mutate_bytes(model, rng, hot=40 if legacy else 256)
        return m, tok, "checkpoint " + desc
    if kind == "tokenizer":
        b = bytearray(tok)
        offsets, pos = [], 4
        while pos < len(b):
            offsets.append(pos)
            pos += 8 + struct.unpack_from("<I", b, pos + 4)[0]
        op = rng.choice(["max", "len", "score"])
        if op == "max":
            v = rng.choice([0, 1, 2**31, 2**32 - 1])
            b[0:4] = struct.pack("<I", v)
            return model, bytes(b), f"tokenizer.bin max_token_length = {v}"
        i = rng.randrange(len(offsets))
        if op == "len":
            v = rng.choice([0, 2**31, 2**32 - 1, 10**6, 1000])
            b[offsets[i] + 4:offsets[i] + 8] = struct.pack("<I", v)
            return model, bytes(b), f"tokenizer.bin piece {i} length = {v}"
        v = rng.choice(FLOATS32)
        b[offsets[i]:offsets[i] + 4] = struct.pack("<f", v)
        return model, bytes(b), f"tokenizer.bin piece {i} score = {v}"
    t, desc = mutate_bytes(tok, rng, hot=64)
    return model, t, "tokenizer.bin " + desc


HF_KEYS = {"config.json": ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                           "vocab_size", "rope_scaling", "intermediate_size", "max_position_embeddings",
                           "rope_theta", "tie_word_embeddings", "sliding_window", "layer_types"),
           "model.safetensors.index.json": ("weight_map",)}
TOKENIZER_JSON_KEYS = ("model", "added_tokens", "pre_tokenizer", "normalizer", "decoder", "post_processor")


def _mutate_json_file(data: bytes, rng: random.Random, prefer: tuple[str, ...]) -> tuple[bytes, str]:
    doc, desc = mutate_json(json.loads(data), rng, prefer)
    return dump_json(doc), desc


def _hostile_template_in(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    doc = json.loads(data)
    doc["chat_template"] = template = rng.choice(HOSTILE_TEMPLATES)
    return dump_json(doc), f"chat_template = {template[:60]!r}"


def _mutate_hf(files: dict[str, bytes], rng: random.Random) -> tuple[dict[str, bytes], str]:
    """One file of a Hugging Face directory mutated (by its kind) or removed."""
    files = dict(files)
    names = [n for n in files if n != "generation_config.json"]
    weights = {"config.json": 4, "tokenizer_config.json": 2, "tokenizer.json": 2, "chat_template.jinja": 1,
               "model.safetensors.index.json": 2, "tokenizer.model": 1}
    name = rng.choices(names, [weights.get(n, 3) for n in names])[0]
    data = files[name]
    if rng.random() < 0.04:
        del files[name]
        return files, f"{name} removed"
    if name.endswith(".safetensors"):
        files[name], desc = _structured_or_blind(lambda x: _mutate_safetensors(x, rng), data, rng, 4096)
    elif name == "tokenizer.model":
        files[name], desc = _structured_or_blind(lambda x: mutate_proto(x, rng), data, rng, 64)
    elif name == "chat_template.jinja":
        t, desc = mutate_template(data.decode("utf-8", "replace"), rng)
        files[name] = t.encode("utf-8", "surrogatepass")
    elif name == "tokenizer_config.json" and rng.random() < 0.3:
        files[name], desc = _structured_or_blind(lambda x: _hostile_template_in(x, rng), data, rng)
    elif rng.random() < 0.8:
        files[name], desc = _structured_or_blind(lambda x: _mutate_json_file(x, rng, HF_KEYS.get(name, ())), data, rng)
    else:
        files[name], desc = mutate_bytes(data, rng, hot=256)
    return files, f"{name}: {desc}"


UNPARSABLE = (ValueError, KeyError, IndexError, TypeError, struct.error, RecursionError)


def _structured_or_blind(mutate: Callable[[bytes], tuple[bytes, str]], data: bytes, rng: random.Random,
                         hot: int = 0) -> tuple[bytes, str]:
    """A structure-aware mutation, or a blind one when an earlier round left nothing to parse."""
    try:
        return mutate(data)
    except UNPARSABLE:
        return mutate_bytes(data, rng, hot)


def make_case(case: Case, bases: Bases, workdir: str) -> tuple[dict[str, str], str]:
    """Write the case's input into workdir; returns its paths by role and the mutation's description."""
    rng = case.rng()
    fmt, paths, descs = case.format, {}, []
    if case.index < 0:  # the unmutated bases, to show the pipeline passes on valid input
        rounds, pick = 0, (lambda seq: seq[(-case.index - 1) % len(seq)])
    else:  # sometimes two mutations, to get past a first check
        rounds, pick = (2 if rng.random() < 0.2 else 1), rng.choice
    if fmt == "weights":
        data = pick(bases.weights)
        for _ in range(rounds):
            data, d = _structured_or_blind(lambda x: _mutate_weights(x, rng), data, rng, 4096)
            descs.append(d)
        paths["model"] = os.path.join(workdir, "model.bin")
        _write(paths["model"], data)
    elif fmt == "gguf":
        g = pick(bases.gguf)
        paths["model"] = os.path.join(workdir, "model.gguf")
        if rng.random() < 0.6:
            for _ in range(rounds):
                g, d = _mutate_gguf(g, rng)
                descs.append(d)
            _write_gguf(paths["model"], g)
        else:
            _write_gguf(paths["model"], g)
            with open(paths["model"], "rb") as f:
                data = f.read()
            header_end = len(data) - sum(len(t[3]) for t in g["tensors"])
            for _ in range(rounds):
                data, d = mutate_bytes(data, rng, hot=header_end)
                descs.append(d)
            _write(paths["model"], data)
    elif fmt == "hf":
        files = pick(bases.hf)
        for _ in range(rounds):
            files, d = _mutate_hf(files, rng)
            descs.append(d)
        root = paths["model"] = os.path.join(workdir, "hf")
        os.makedirs(root)
        for name, data in files.items():
            _write(os.path.join(root, name), data)
    elif fmt == "llama2c":
        model, tok = pick(bases.llama2c), bases.tokenizer_bin
        for _ in range(rounds):
            try:
                model, tok, d = _mutate_llama2c(model, tok, rng)
            except UNPARSABLE:  # an earlier round broke tokenizer.bin's records
                tok, d = mutate_bytes(tok, rng, 64)
            descs.append(d)
        paths["model"], paths["tokenizer"] = os.path.join(workdir, "model.bin"), os.path.join(workdir, "tokenizer.bin")
        _write(paths["model"], model)
        _write(paths["tokenizer"], tok)
    elif fmt == "tokenizer_json":
        data = pick(bases.tokenizer_json)
        for _ in range(rounds):
            if rng.random() < 0.75:
                data, d = _structured_or_blind(lambda x: _mutate_json_file(x, rng, TOKENIZER_JSON_KEYS), data, rng)
            else:
                data, d = mutate_bytes(data, rng)
            descs.append(d)
        paths["tokenizer"] = os.path.join(workdir, "tokenizer.json")
        _write(paths["tokenizer"], data)
        paths["text"], d = _text_file(workdir, rng, rounds)
        descs.append(d)
    elif fmt == "tokenizer_model":
        data = pick(bases.tokenizer_model)
        for _ in range(rounds):
            if rng.random() < 0.7:
                data, d = _structured_or_blind(lambda x: mutate_proto(x, rng), data, rng, 64)
            else:
                data, d = mutate_bytes(data, rng, hot=64)
            descs.append(d)
        paths["tokenizer"] = os.path.join(workdir, "tokenizer.model")
        _write(paths["tokenizer"], data)
        paths["text"], d = _text_file(workdir, rng, rounds)
        descs.append(d)
    elif fmt == "template":
        if rounds and rng.random() < 0.4:
            source = rng.choice(HOSTILE_TEMPLATES)
            descs.append(f"hostile template {source[:60]!r}")
        else:
            source = pick(bases.templates)
            for _ in range(rounds):
                source, d = mutate_template(source, rng)
                descs.append(d)
        paths["template"] = os.path.join(workdir, "template.jinja")
        _write(paths["template"], source)
    else:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if fmt in ("gguf", "hf", "llama2c") and rounds:
        paths["out_type"] = rng.choice(["", "", "f16", "q8_0", "q4_0"])
        descs.append(f"convert --type {paths['out_type']}" if paths["out_type"] else "")
    return paths, "; ".join(d for d in descs if d)


def _text_file(workdir: str, rng: random.Random, rounds: int) -> tuple[str, str]:
    """The text a tokenizer case encodes, written beside its input (ordinary text for a valid input)."""
    text, desc = hostile_text(rng) if rounds else (TEXT, "")
    path = os.path.join(workdir, "text.txt")
    _write(path, text)
    return path, desc


class Unloadable(Exception):
    """A converted file that pyllm refuses to load (raised with the loader's exception as cause)."""


def _generate(path: str) -> None:
    """Load a weights.bin and generate a few tokens (chat with its template when it has a tokenizer)."""
    with Model(path, n_threads=1) as m:
        if m.file.tokenizer is None:
            list(m.generate([0, 1, m.config.vocab_size - 1], max_tokens=3, temperature=0))
            return
        m.complete(PROMPT, max_tokens=3, temperature=0)
        if m.chat_template is not None:
            m.chat(CHAT, max_tokens=2, temperature=0)


def _tokenize(tok: Tokenizer, text: str = TEXT) -> None:
    ids = tok.encode(text) + tok.encode(text, special=True)
    tok.decode(ids)
    tok.decode(ids, special=True)
    d = tok.decoder()
    for i in ids:
        d.feed(i)
    d.flush()


def run_pipeline(case: Case, paths: dict[str, str], bases: Bases, workdir: str, stage: list[str]) -> None:
    """Load, convert and generate as fits the format; `stage[0]` says how far it got."""
    fmt = case.format
    if fmt == "template":
        with open(paths["template"], encoding="utf-8", errors="surrogateescape") as f:
            source = f.read()
        stage[0] = "render"
        text = render(source, MESSAGES, bos_token="<|endoftext|>", eos_token="<|im_end|>")
        stage[0] = "tokenize"
        bases.tokenizer.encode(text, special=True)
        return
    if fmt in ("tokenizer_json", "tokenizer_model"):
        stage[0] = "load"
        tok = Tokenizer.from_file(paths["tokenizer"])
        stage[0] = "tokenize"
        with open(paths["text"], encoding="utf-8") as f:
            _tokenize(tok, f.read())
        return
    if fmt in ("weights", "gguf"):  # both carry a tokenizer Tokenizer.from_file reads
        stage[0] = "tokenizer"
        try:
            _tokenize(Tokenizer.from_file(paths["model"]))
        except PyllmError:
            pass
    if fmt == "weights":
        stage[0] = "generate"
        _generate(paths["model"])
        return
    out = os.path.join(workdir, "out.bin")
    stage[0] = "convert"
    convert(paths["model"], out, paths.get("out_type") or None, progress=False,
            **({"tokenizer": paths["tokenizer"]} if fmt == "llama2c" else {}))
    stage[0] = "reload"
    try:
        Model(out, n_threads=1).close()
    except Exception as exc:
        raise Unloadable(f"{type(exc).__name__}: {exc}") from exc
    stage[0] = "generate"
    _generate(out)


def execute(case: Case, bases: Bases, workdir: str) -> Result:
    """Build and run one case in this process, catching what it raises."""
    stage = ["build"]  # a failure while building the input is the harness's own
    result = Result(case, "ok")
    try:
        paths, result.mutation = make_case(case, bases, workdir)
        run_pipeline(case, paths, bases, workdir, stage)
    except Unloadable as exc:
        result.outcome, result.error, result.message = "unloadable", type(exc.__cause__).__name__, str(exc)
    except PyllmError as exc:
        result.outcome, result.error, result.message = "error", type(exc).__name__, str(exc)
    except MemoryError as exc:
        result.outcome, result.error, result.message = "memory", "MemoryError", str(exc)
    except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
        result.outcome, result.error = "exception", type(exc).__name__
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        result.message = f"{exc} (at {os.path.basename(tb.filename)}:{tb.lineno} in {tb.name})"
    result.stage = stage[0]
    result.message = result.message[:MESSAGE_LIMIT]
    return result


# ------------------------------------------------------------------------------------------------
# Running cases in forked, limited processes

def limit_memory(extra_mb: int) -> None:
    """Cap this process's address space at what it maps now plus extra_mb."""
    with open("/proc/self/status") as f:
        vm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    limit = (vm_kb << 10) + (extra_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class Isolated:
    """fn(workdir) running in a forked process under a memory limit; `poll` gives its Result once
    the process has ended (None before), and kills it at the timeout."""

    def __init__(self, fn: Callable[[str], Result], case: Case, workdir: str, timeout: float, mem_mb: int,
                 keep_output: bool = False):
        self.case, self.timeout = case, timeout
        self.crash_log = os.path.join(workdir, "crash.txt")
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            try:
                os.close(r)
                if not keep_output:
                    null = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(null, 1)
                    os.dup2(null, 2)
                faulthandler.enable(open(self.crash_log, "w"))  # a crash leaves its Python stack here
                warnings.simplefilter("ignore")
                limit_memory(mem_mb)
                result = fn(workdir)
                os.write(w, json.dumps(result.__dict__ | {"case": str(case)}).encode()[:60000])
            finally:
                os._exit(0)
        os.close(w)
        self.fd, self.chunks, self.result = r, [], None
        self.start = time.monotonic()

    def poll(self) -> Result | None:
        if self.result is None:
            if select.select([self.fd], [], [], 0)[0]:
                data = os.read(self.fd, 65536)
                if data:
                    self.chunks.append(data)
                    return None
                os.close(self.fd)
                _, status = os.waitpid(self.pid, 0)
                self.result = _finished(self.case, status, b"".join(self.chunks), self.crash_log)
            elif time.monotonic() >= self.start + self.timeout:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                os.close(self.fd)
                self.result = Result(self.case, "timeout", error="timeout",
                                     message=f"no result after {self.timeout:g} s")
            if self.result is not None:
                self.result.seconds = time.monotonic() - self.start
        return self.result


def _finished(case: Case, status: int, data: bytes, crash_log: str) -> Result:
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        try:
            with open(crash_log, errors="replace") as f:
                frames = [line.strip() for line in f if line.strip().startswith("File")][:4]
        except OSError:
            frames = []
        return Result(case, "signal", error=sig, message=" <- ".join(frames) or "killed by " + sig)
    try:
        fields = json.loads(data)
    except ValueError:
        return Result(case, "exception", error="NoResult",
                      message=f"the process exited with status {os.WEXITSTATUS(status)} without a result")
    fields["case"] = case
    return Result(**fields)


def run_cases(cases: list[Case], bases: Bases, workdir: str, workers: int = 2, timeout: float = 10.0,
              mem_mb: int = 1024, on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Every case in its own forked process, `workers` at a time; results in case order."""
    pending, running, results = list(enumerate(cases)), {}, [None] * len(cases)
    while pending or running:
        while pending and len(running) < workers:
            i, case = pending.pop(0)
            d = tempfile.mkdtemp(prefix=f"{case.format}-{case.index}-", dir=workdir)
            running[i] = (Isolated(lambda wd, case=case: execute(case, bases, wd), case, d, timeout, mem_mb), d)
        select.select([proc.fd for proc, _ in running.values()], [], [], 0.05)
        for i, (proc, d) in list(running.items()):
            result = proc.poll()
            if result is not None:
                if not result.mutation and result.outcome in ("signal", "timeout"):
                    with tempfile.TemporaryDirectory(dir=workdir) as scratch:  # describe what was run
                        result.mutation = make_case(result.case, bases, scratch)[1]
                results[i] = result
                del running[i]
                shutil.rmtree(d, ignore_errors=True)
                if on_result:
                    on_result(result)
    return results


def campaign(formats: list[str], n_cases: int | dict[str, int], seed: int, workdir: str, workers: int = 2,
             timeout: float = 10.0, mem_mb: int = 1024, progress: bool = False) -> list[Result]:
    """n_cases cases of each format (from index 0) under `seed`."""
    bases = build_bases(os.path.join(workdir, "bases"))
    counts = n_cases if isinstance(n_cases, dict) else {f: n_cases for f in formats}
    cases = [Case(f, seed, i) for f in formats for i in range(counts[f])]
    done = Counter()

    def show(result: Result) -> None:
        done[result.case.format] += 1
        if result.defect:
            print(result.describe(), file=sys.stderr, flush=True)
        elif done[result.case.format] % 200 == 0:
            print(f"{result.case.format}: {done[result.case.format]} cases", file=sys.stderr, flush=True)
    return run_cases(cases, bases, workdir, workers, timeout, mem_mb, show if progress else None)


def table(results: list[Result]) -> str:
    """Outcome counts per format, as a Markdown table."""
    formats = list(dict.fromkeys(r.case.format for r in results))
    counts = Counter((r.case.format, r.outcome) for r in results)
    lines = ["| format | cases | " + " | ".join(OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 2) + "|"]
    for f in formats:
        total = sum(counts[f, o] for o in OUTCOMES)
        lines.append(f"| {f} | {total} | " + " | ".join(str(counts[f, o]) for o in OUTCOMES) + " |")
    return "\n".join(lines)


def summarize_defects(results: list[Result], per_kind: int = 3) -> str:
    """Defects grouped by (format, outcome, exception type, stage), a few examples of each."""
    groups: dict[tuple, list[Result]] = {}
    for r in results:
        if r.defect:
            groups.setdefault((r.case.format, r.outcome, r.error, r.stage), []).append(r)
    out = []
    for (fmt, outcome, error, stage), rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        out.append(f"{fmt} {outcome} {error} at {stage}: {len(rs)} cases")
        out += ["    " + r.describe() for r in rs[:per_kind]]
    return "\n".join(out)


def replay(case: Case, keep: str | None, mem_mb: int) -> int:
    """Run one case in this process (under the memory limit) and print what happened."""
    workdir = keep or tempfile.mkdtemp(prefix="pyllm-fuzz-")
    os.makedirs(workdir, exist_ok=True)
    bases = build_bases(os.path.join(workdir, "bases"))
    case_dir = os.path.join(workdir, "case")
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    paths, mutation = make_case(case, bases, case_dir)
    print(f"{case}: {mutation}")
    print("input: " + ", ".join(f"{role} {value}" for role, value in paths.items()))
    limit_memory(mem_mb)
    stage, start = ["build"], time.perf_counter()
    try:
        run_pipeline(case, paths, bases, case_dir, stage)
    except BaseException:
        traceback.print_exc()
        print(f"failed at stage {stage[0]} after {time.perf_counter() - start:.1f} s")
        return 1
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"ok (reached {stage[0]}) in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a campaign: a per-format table of outcomes; exit 1 on any defect")
    run.add_argument("--cases", type=int, default=1000, help="cases per format")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--formats", default=",".join(FORMATS))
    run.add_argument("--workers", type=int, default=2)
    run.add_argument("--timeout", type=float, default=10.0, help="seconds per case")
    run.add_argument("--mem-mb", type=int, default=1024, help="memory per case beyond what the interpreter maps")
    run.add_argument("--json", help="also write every result to this file")
    rep = sub.add_parser("replay", help="rerun one case (format:seed:index) in this process")
    rep.add_argument("case", type=Case.parse)
    rep.add_argument("--keep", help="write the case's input into this directory and keep it")
    rep.add_argument("--mem-mb", type=int, default=1024)
    args = p.parse_args(argv)
    if args.command == "replay":
        return replay(args.case, args.keep, args.mem_mb)
    formats = [f for f in args.formats.split(",") if f]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pyllm-fuzz-") as workdir:
        results = campaign(formats, args.cases, args.seed, workdir, args.workers, args.timeout, args.mem_mb,
                           progress=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ | {"case": str(r.case)} for r in results], f, indent=0)
    print(f"\nseed {args.seed}, {args.cases} cases per format, {time.perf_counter() - t0:.0f} s\n")
    print(table(results))
    defects = [r for r in results if r.defect]
    if defects:
        print(f"\n{len(defects)} defects:\n{summarize_defects(defects)}")
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
