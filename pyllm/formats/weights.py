"""weights.bin: pyllm's one-file model format (specified in docs/format.md).

    magic "PYLM" | u32 version | u64 header length | JSON header | zero padding to 64 | tensor data

The JSON header holds the config, the tokenizer, the chat template and the tensor table; tensor
data is 64-byte aligned so the file can be mapped and used in place. `read_weights` validates
everything the C core will trust; `write_weights` streams tensors one by one to a temporary file
that is renamed at the end, so an interrupted write never leaves a half-written file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import struct
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

from ..quant import TYPES, row_bytes
from ..types import ModelConfig, TokenizerData, check_tokenizer_data
from .jsontext import parse_json
from .mapped import MappedFile, check_no_overlap

MAGIC = b"PYLM"
VERSION = 1
ALIGNMENT = 64
PREAMBLE = struct.Struct("<4sIQ")  # magic, version, header length
MAX_HEADER = 1 << 30
MAX_ELEMENTS = 1 << 40


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a weights.bin: numpy shape (last dim contiguous), type name, absolute offset."""

    name: str
    type: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a model with this config must have."""
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (cfg.vocab_size, cfg.dim),
        "output_norm.weight": (cfg.dim,),
    }
    if cfg.rope_scaling is not None:
        shapes["rope_freq"] = (cfg.rotary_dim // 2,)
    if cfg.rope_long_context is not None:
        shapes["rope_freq_long"] = (cfg.rotary_dim // 2,)
    if not cfg.tied_embeddings:
        shapes["output.weight"] = (cfg.vocab_size, cfg.dim)
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        shapes.update({
            p + "attn_norm.weight": (cfg.dim,),
            p + "attn_q.weight": (q_dim, cfg.dim),
            p + "attn_k.weight": (kv_dim, cfg.dim),
            p + "attn_v.weight": (kv_dim, cfg.dim),
            p + "attn_output.weight": (cfg.dim, q_dim),
            p + "ffn_norm.weight": (cfg.dim,),
            p + "ffn_gate.weight": (cfg.hidden_dim, cfg.dim),
            p + "ffn_up.weight": (cfg.hidden_dim, cfg.dim),
            p + "ffn_down.weight": (cfg.dim, cfg.hidden_dim),
        })
        if cfg.qkv_bias:
            shapes.update({p + "attn_q.bias": (q_dim,), p + "attn_k.bias": (kv_dim,),
                           p + "attn_v.bias": (kv_dim,)})
        if cfg.qk_norm:
            shapes.update({p + "attn_q_norm.weight": (cfg.head_dim,), p + "attn_k_norm.weight": (cfg.head_dim,)})
        if cfg.post_norms:
            shapes.update({p + "post_attention_norm.weight": (cfg.dim,), p + "post_ffw_norm.weight": (cfg.dim,)})
    return shapes


# Config fields a header leaves out when they have these values (the model lacks the feature), so that
# files of models without it are the files earlier versions wrote and read.
ABSENT_CONFIG = {"sliding_window": None, "qk_norm": False, "rope_scaling": None, "rope_attn_factor": None,
                 "nope_layers": (), "rope_dim": None, "rope_long_context": None, "full_attention_layers": (),
                 "rope_theta_swa": None, "activation": "silu", "embed_scale": None, "attn_scale": None,
                 "post_norms": False}
ACTIVATIONS = ("silu", "gelu_tanh")  # the MLP gate activations the C core has
# tokenizer fields written only when they differ from these (normaliser options)
ABSENT_TOKENIZER = {"nfc": False, "lowercase": True, "strip_accents": None}


def tensor_nbytes(type_name: str, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor; ValueError if its rows do not fill whole blocks."""
    rows = 1
    for d in shape[:-1]:
        rows *= d
    return rows * row_bytes(type_name, shape[-1])


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


# ------------------------------------------------------------------------------------------------
# Writing

TensorSource = tuple[str, str, tuple[int, ...], Callable[[], Any]]  # name, type, shape, make bytes


def write_weights(path: str | os.PathLike, config: ModelConfig, tokenizer: TokenizerData | None,
                  tensors: Iterable[TensorSource], chat_template: str | None = None,
                  metadata: dict[str, Any] | None = None,
                  progress: Callable[[int, int, str, int], None] | None = None,
                  check: Callable[[str], None] | None = None) -> None:
    """Write a weights.bin; each tensor's bytes are produced (and written) one at a time.

    `tensors` yields (name, type name, numpy shape, function returning the encoded bytes).
    `progress(index, count, name, nbytes)` is called before each tensor is produced.
    `check(temporary path)` runs once the header is written and the file has its final size, before
    any tensor is produced; if it raises, nothing is left behind. An OSError of writing names `path`.
    """
    tensors = list(tensors)
    table, offset = [], 0
    for name, type_name, shape, _ in tensors:
        nbytes = tensor_nbytes(type_name, tuple(shape))
        table.append({"name": name, "type": type_name, "shape": list(shape), "offset": offset,
                      "size": nbytes})
        offset = _align(offset + nbytes)
    header = {
        "config": {k: v for k, v in asdict(config).items() if k not in ABSENT_CONFIG or v != ABSENT_CONFIG[k]},
        "tokenizer": ({k: v for k, v in asdict(tokenizer).items()
                       if k not in ABSENT_TOKENIZER or v != ABSENT_TOKENIZER[k]} if tokenizer is not None else None),
        "chat_template": chat_template,
        "metadata": metadata or {},
        "tensors": table,
    }
    blob = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    data_start = _align(PREAMBLE.size + len(blob))

    path = os.fspath(path)
    check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".pyllm-", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None  # the output's name, not a random one
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(PREAMBLE.pack(MAGIC, VERSION, len(blob)))
            f.write(blob)
            f.truncate(data_start + offset)  # the final size (sparse until the tensors are written)
            if check:
                f.flush()
                check(tmp)
            for i, ((name, _, _, make), entry) in enumerate(zip(tensors, table)):
                if progress:
                    progress(i, len(tensors), name, entry["size"])
                data = memoryview(make()).cast("B")
                if data.nbytes != entry["size"]:
                    raise ValueError(f"{name}: produced {data.nbytes} bytes, expected {entry['size']}")
                f.seek(data_start + entry["offset"])
                f.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a new file's usual mode instead
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):  # a full disk, say
            raise OSError(exc.errno, exc.strerror, path) from None
        raise


def check_output_path(path: str) -> None:
    """OSError naming path unless it is a new file or a regular file (which is then replaced): the
    output is renamed into place, which would replace a device such as /dev/full."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory; give the path of the file to write", path)
    if not stat.S_ISREG(mode):
        raise OSError(errno.EEXIST, "exists and is not a regular file; give the path of a file to write", path)


# ------------------------------------------------------------------------------------------------
# Reading and validation

def _int(value: Any, what: str, lo: int = 1, hi: int = 1 << 31) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value < hi:
        raise ValueError(f"{what} must be an integer in [{lo}, {hi}), got {value!r}")
    return value


def _parse_config(raw: Any) -> ModelConfig:
    if not isinstance(raw, dict):
        raise ValueError("header has no config object")
    known = {f for f in ModelConfig.__dataclass_fields__}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"config has unknown fields {sorted(unknown)}")
    for name in ("nope_layers", "full_attention_layers"):  # JSON has lists; the frozen config holds tuples
        if isinstance(raw.get(name), list):
            raw = {**raw, name: tuple(raw[name])}
    try:
        cfg = ModelConfig(**raw)
    except TypeError as exc:
        raise ValueError(f"config: {exc}") from None
    check_config(cfg)
    return cfg


FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32


def check_config(cfg: ModelConfig) -> None:
    """ValueError naming the config field unless cfg describes a decoder the C core can build."""
    for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size",
                 "max_seq_len"):
        _int(getattr(cfg, name), f"config.{name}")
    if cfg.sliding_window is not None:
        _int(cfg.sliding_window, "config.sliding_window")
    if cfg.rope_long_context is not None:
        _int(cfg.rope_long_context, "config.rope_long_context")
        if cfg.rope_scaling is None:
            raise ValueError("config.rope_long_context needs a RoPE scaling (config.rope_scaling) whose short "
                             "frequencies tensor rope_freq holds")
    for name in ("rope_theta", "norm_eps"):  # the C core holds them as float32
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= FLOAT32_MAX:
            raise ValueError(f"config.{name} must be a finite non-negative float32, got {v!r}")
    for name in ("rope_attn_factor", "rope_theta_swa", "embed_scale", "attn_scale"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not FLOAT32_TINY <= v <= FLOAT32_MAX):
            raise ValueError(f"config.{name} must be a finite positive float32, got {v!r}")
    if cfg.activation not in ACTIVATIONS:
        raise ValueError(f"config.activation must be one of {', '.join(ACTIVATIONS)}, got {cfg.activation!r:.40}")
    if cfg.rope_theta < FLOAT32_TINY:
        raise ValueError(f"config.rope_theta must be positive as a float32, got {cfg.rope_theta!r}")
    if cfg.n_heads % cfg.n_kv_heads:
        raise ValueError(f"config.n_heads ({cfg.n_heads}) is not a multiple of n_kv_heads ({cfg.n_kv_heads})")
    if cfg.head_dim % 2:
        raise ValueError(f"config.head_dim must be even for RoPE, got {cfg.head_dim}")
    if cfg.rope_dim is not None and (_int(cfg.rope_dim, "config.rope_dim", 2, cfg.head_dim + 1) % 2):
        raise ValueError(f"config.rope_dim must be even (rotated pairs), got {cfg.rope_dim}")
    if cfg.rope_scaling is not None and (not isinstance(cfg.rope_scaling, str) or not cfg.rope_scaling):
        raise ValueError(f"config.rope_scaling must name a RoPE scaling, got {cfg.rope_scaling!r}")
    if not isinstance(cfg.architecture, str) or not cfg.architecture:
        raise ValueError(f"config.architecture must name a model family, got {cfg.architecture!r}")
    for name in ("tied_embeddings", "qkv_bias", "qk_norm", "post_norms"):
        if not isinstance(getattr(cfg, name), bool):
            raise ValueError(f"config.{name} must be true or false")
    for name in ("nope_layers", "full_attention_layers"):
        layers = getattr(cfg, name)
        if (not isinstance(layers, tuple) or any(isinstance(i, bool) or not isinstance(i, int) for i in layers)
                or any(not 0 <= i < cfg.n_layers for i in layers) or list(layers) != sorted(set(layers))):
            raise ValueError(f"config.{name} must list distinct layer indices (0 to {cfg.n_layers - 1}) "
                             f"in ascending order, got {layers!r:.80}")
    if cfg.full_attention_layers and cfg.sliding_window is None:
        raise ValueError("config.full_attention_layers is given without a sliding_window")


def _parse_tokenizer(raw: Any, vocab_size: int) -> TokenizerData | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("tokenizer must be an object")
    try:
        tok = TokenizerData(**raw)
    except TypeError as exc:
        raise ValueError(f"tokenizer: {exc}") from None
    check_tokenizer_data(tok, vocab_size)
    return tok


def _parse_tensors(raw: Any, cfg: ModelConfig, data_start: int, file_size: int) -> dict[str, TensorInfo]:
    if not isinstance(raw, list):
        raise ValueError("header has no tensor list")
    if cfg.n_layers > len(raw):  # before the table of expected tensors, which grows with n_layers
        raise ValueError(f"config.n_layers is {cfg.n_layers}, but the header lists only {len(raw)} tensors")
    expected = expected_tensors(cfg)
    tensors: dict[str, TensorInfo] = {}
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or set(t) != {"name", "type", "shape", "offset", "size"}:
            raise ValueError(f"tensor entry {i} must have exactly name, type, shape, offset, size")
        name = t["name"]
        if not isinstance(name, str) or name in tensors:
            raise ValueError(f"tensor entry {i}: bad or duplicate name {name!r}")
        if name not in expected:
            raise ValueError(f"tensor {name!r} is not part of a model with this config")
        if not isinstance(t["type"], str) or t["type"] not in TYPES:
            raise ValueError(f"tensor {name}: unknown type {t['type']!r} (known: {', '.join(TYPES)})")
        shape = t["shape"]
        if not isinstance(shape, list) or not 1 <= len(shape) <= 2:
            raise ValueError(f"tensor {name}: shape must be a list of 1 or 2 dimensions")
        count = 1
        for d in shape:
            count *= _int(d, f"tensor {name}: dimension", 1, MAX_ELEMENTS)
            if count >= MAX_ELEMENTS:
                raise ValueError(f"tensor {name}: shape {shape} has too many elements")
        if tuple(shape) != expected[name]:
            raise ValueError(f"tensor {name}: shape {tuple(shape)} does not match the config, "
                             f"which needs {expected[name]}")
        if len(shape) == 1 and t["type"] != "f32":
            raise ValueError(f"tensor {name}: norms and biases must be f32, not {t['type']}")
        try:
            nbytes = tensor_nbytes(t["type"], tuple(shape))
        except ValueError as exc:
            raise ValueError(f"tensor {name}: {exc}") from None
        if t["size"] != nbytes:
            raise ValueError(f"tensor {name}: size {t['size']} but {t['type']} {tuple(shape)} needs {nbytes}")
        offset = _int(t["offset"], f"tensor {name}: offset", 0, 1 << 62)
        if offset % ALIGNMENT:
            raise ValueError(f"tensor {name}: offset {offset} is not {ALIGNMENT}-byte aligned")
        if data_start + offset + nbytes > file_size:
            raise ValueError(f"tensor {name}: data [{data_start + offset}, {data_start + offset + nbytes}) "
                             f"runs past the end of the file ({file_size} bytes); truncated?")
        tensors[name] = TensorInfo(name, t["type"], tuple(shape), data_start + offset, nbytes)
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise ValueError(f"missing tensors: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    check_no_overlap(tensors.values())
    return tensors


class WeightsFile(MappedFile):
    """A weights.bin mapped read-only (or read into memory) and fully validated; tensors are views
    into it."""

    KIND = "weights.bin"
    MIN_SIZE = PREAMBLE.size

    def _parse(self, size: int) -> None:
        magic, version, header_len = PREAMBLE.unpack_from(self._mmap, 0)
        if magic != MAGIC:
            raise ValueError(f"not a pyllm weights file (magic {magic!r}, expected {MAGIC!r}); "
                             "convert models with `pyllm convert`")
        if version != VERSION:
            raise ValueError(f"format version {version} is not supported (this pyllm reads version {VERSION})")
        if header_len > min(MAX_HEADER, size - PREAMBLE.size):
            raise ValueError(f"header length {header_len} runs past the end of the file ({size} bytes)")
        try:
            header = parse_json(self._mmap[PREAMBLE.size:PREAMBLE.size + header_len])
        except ValueError as exc:
            raise ValueError(f"header is {exc}") from None
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        data_start = _align(PREAMBLE.size + header_len)
        self.config = _parse_config(header.get("config"))
        self.tokenizer = _parse_tokenizer(header.get("tokenizer"), self.config.vocab_size)
        template = header.get("chat_template")
        if template is not None and not isinstance(template, str):
            raise ValueError("chat_template must be a string or null")
        self.chat_template: str | None = template
        metadata = header.get("metadata")
        metadata = {} if metadata is None else metadata
        if not isinstance(metadata, dict):
            raise ValueError(f"metadata must be an object, not {type(metadata).__name__}")
        self.metadata: dict[str, Any] = metadata
        self.tensors = _parse_tensors(header.get("tensors"), self.config, data_start, size)


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Map and validate a weights.bin; raises FormatError naming the file and the problem."""
    return WeightsFile(path)
