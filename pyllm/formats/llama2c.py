"""Read llama2.c checkpoints (Karpathy's run.c / runq.c models) and their tokenizer.bin.

Every layout starts with seven little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
vocab_size, seq_len) and stores each kind of weight for all layers together:
- legacy (version 0): no magic. A negative vocab_size means the classifier is not the embedding and
  is stored at the end. fp32 in run.c's order: embedding, attention norms, wq, wk, wv, wo, ffn norms,
  w1, w2, w3, final norm, the RoPE cos/sin tables (seq_len x head_size/2 each, not needed), classifier.
- version 1: uint32 magic "ak42", int32 version, the seven params, a uint8 shared-classifier flag,
  zeros to 256 bytes; fp32 norms (attention, ffn, final), then embedding, wq..w3, classifier.
- version 2: as version 1 plus an int32 group size after the flag; fp32 norms, then every matrix as
  int8 values followed by one fp32 scale per group (runq.c). Groups of 32 are Q8_0 blocks once the
  scale is rounded to f16, so they are kept as such; other group sizes are decoded exactly to f32.
llama2.c rotates adjacent pairs (x[2i], x[2i+1]) as the C core does, with theta 10000 and RMSNorm
eps 1e-5, so no row is reordered.

tokenizer.bin (llama2.c's tokenizer.py): uint32 max_token_length, then per token a float32 score, a
uint32 length and the UTF-8 bytes of a SentencePiece piece with "▁" written as a space, BOS as
"\\n<s>\\n" and EOS as "\\n</s>\\n". The pieces are restored, so the SentencePiece tokenizer runs as is.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from ..quant import TYPES
from ..types import BYTE, BYTE_PIECE, CONTROL, NORMAL, UNKNOWN, ModelConfig, TokenizerData
from .mapped import MappedFile, check_regular_file

MAGIC = 0x616B3432  # "ak42", written as a little-endian uint32
PARAMS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
LEGACY_HEADER = struct.Struct("<7i")
V1_HEADER = struct.Struct("<Ii7iB")    # magic, version, params, shared classifier
V2_HEADER = struct.Struct("<Ii7iBi")   # ... and the quantization group size
HEADER_SIZE = 256                      # versions 1 and 2: header padded with zeros
PLAUSIBLE = 1 << 24                    # bound on every header field of a legacy file (which has no magic)
ROPE_THETA, NORM_EPS = 10000.0, 1e-5   # what run.c computes with
NOT_A_MODEL = "not a GGUF file, Hugging Face model directory or llama2.c checkpoint"
TOKEN_HEADER = struct.Struct("<fI")    # tokenizer.bin: score, length

# llama2.c's names for each kind of weight -> ours; per-layer kinds get "blk.{i}." and ".weight"
LAYER_KINDS = {"rms_att": "attn_norm", "rms_ffn": "ffn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
               "wo": "attn_output", "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up"}
SINGLE_KINDS = {"tok": "token_embd.weight", "rms_final": "output_norm.weight", "cls": "output.weight"}
MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
# the order of the kinds in the file ("freqs": legacy's RoPE tables, skipped; "cls" only when unshared)
ORDER = {
    0: ("tok", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final", "freqs", "cls"),
    1: ("rms_att", "rms_ffn", "rms_final", "tok", *MATRICES, "cls"),
    2: ("rms_att", "rms_ffn", "rms_final", "tok", *MATRICES, "cls"),  # matrices as int8 groups
}


@dataclass(frozen=True)
class StoredTensor:
    """Where one of our tensors lies in a checkpoint: fp32 values, or (version 2 matrices) int8
    values at `offset` and their fp32 group scales at `scales`."""

    name: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    scales: int | None = None


class Llama2cFile(MappedFile):
    """A llama2.c checkpoint mapped read-only: header validated, file size matched to it, every
    tensor located under our name (`tensors`); `config`, `version` and `group_size` describe it."""

    KIND = "llama2.c checkpoint"

    def _parse(self, size: int) -> None:
        if size >= 4 and struct.unpack_from("<I", self._mmap, 0)[0] == MAGIC:
            params, shared, data_start, what = self._versioned_header(size)
        else:
            params, shared, data_start, what = self._legacy_header(size)
        _check_params(params, what)
        dim, n_heads = params["dim"], params["n_heads"]
        self.config = ModelConfig(
            dim=dim, hidden_dim=params["hidden_dim"], n_layers=params["n_layers"], n_heads=n_heads,
            n_kv_heads=params["n_kv_heads"], head_dim=dim // n_heads, vocab_size=params["vocab_size"],
            max_seq_len=params["seq_len"], rope_theta=ROPE_THETA, norm_eps=NORM_EPS,
            tied_embeddings=shared, architecture="llama")
        # the size is checked before any per-layer work, so a corrupt n_layers costs nothing
        kinds = _kinds(self.config, self.version)
        end = data_start + sum(count * _stored_bytes(shape, self.version, self.group_size)
                               for _, shape, count in kinds)
        if end != size:
            problem = "truncated?" if size < end else f"{size - end} bytes of trailing data"
            raise ValueError(f"{what}: the header implies a file of {end} bytes, but it has {size} ({problem})")
        self.tensors = _layout(kinds, self.version, self.group_size, data_start)
        self.description = what

    def _legacy_header(self, size: int) -> tuple[dict[str, int], bool, int, str]:
        """Version 0 has no magic, so a header whose fields are not all plausible means the file is
        something else altogether."""
        self.version, self.group_size = 0, 0
        if size < LEGACY_HEADER.size:
            raise ValueError(f"{NOT_A_MODEL} (only {size} bytes)")
        params = dict(zip(PARAMS, LEGACY_HEADER.unpack_from(self._mmap, 0)))
        shared = params["vocab_size"] > 0  # the sign of vocab_size says whether the classifier is shared
        params["vocab_size"] = abs(params["vocab_size"])
        for key, value in params.items():
            if not 0 < value < PLAUSIBLE:
                raise ValueError(f"{NOT_A_MODEL} (unknown magic {bytes(self._mmap[:4])!r}; read as a legacy "
                                 f"llama2.c header, its {key} would be {value})")
        return params, shared, LEGACY_HEADER.size, "llama2.c legacy checkpoint"

    def _versioned_header(self, size: int) -> tuple[dict[str, int], bool, int, str]:
        if size < HEADER_SIZE:
            raise ValueError(f"llama2.c checkpoint truncated: {size} bytes, less than its {HEADER_SIZE}-byte header")
        version = struct.unpack_from("<i", self._mmap, 4)[0]
        if version not in (1, 2):
            raise ValueError(f"llama2.c checkpoint version {version} is not supported (versions 1 and 2 are; "
                             "legacy files have no magic)")
        what = f"llama2.c v{version} checkpoint"
        fields = (V1_HEADER if version == 1 else V2_HEADER).unpack_from(self._mmap, 0)
        params, shared = dict(zip(PARAMS, fields[2:9])), fields[9]
        if shared not in (0, 1):
            raise ValueError(f"{what}: shared-classifier flag is {shared}, not 0 or 1")
        self.version, self.group_size = version, 0
        if version == 2:
            gs = self.group_size = fields[10]
            if gs <= 0 or params["dim"] % gs or params["hidden_dim"] % gs:
                raise ValueError(f"{what}: group size {gs} must be positive and divide dim ({params['dim']}) "
                                 f"and hidden_dim ({params['hidden_dim']}), as runq.c's rows are whole groups")
            what += f" (int8, groups of {gs})"
        return params, bool(shared), HEADER_SIZE, what

    # -- tensor data (views into the mapping, except where decoding makes new arrays) ----------

    def floats(self, name: str) -> np.ndarray:
        """An fp32 tensor as a read-only view."""
        t = self.tensors[name]
        return np.frombuffer(self._mmap, "<f4", t.nbytes // 4, t.offset).reshape(t.shape)

    def int8_groups(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A version 2 matrix: its int8 values (flat) and one fp32 scale per group (views)."""
        t = self.tensors[name]
        q = np.frombuffer(self._mmap, np.int8, t.nbytes, t.offset)
        return q, np.frombuffer(self._mmap, "<f4", t.nbytes // self.group_size, t.scales)

    def dequantized(self, name: str) -> np.ndarray:
        """A version 2 matrix decoded to float32 (value times its group's scale, as runq.c does)."""
        q, scales = self.int8_groups(name)
        x = q.astype(np.float32).reshape(-1, self.group_size)
        x *= scales[:, None]
        return x.reshape(self.tensors[name].shape)

    def q8_0_blocks(self, name: str) -> np.ndarray:
        """A version 2 matrix with groups of 32 as Q8_0 bytes: each group is a block (f16 scale, 32 int8)."""
        q, scales = self.int8_groups(name)
        rows = self.tensors[name].shape[0]
        block = TYPES["q8_0"]
        out = np.empty((len(scales), block.block_bytes), np.uint8)
        out[:, :2] = scales.astype("<f2").view(np.uint8).reshape(-1, 2)
        out[:, 2:] = q.view(np.uint8).reshape(-1, block.block)
        return out.reshape(rows, -1)

    def scales_fit_f16(self, name: str) -> bool:
        """Whether every group scale of a version 2 matrix is finite once rounded to f16."""
        with np.errstate(over="ignore"):
            return bool(np.isfinite(self.int8_groups(name)[1].astype(np.float16)).all())


def _check_params(p: dict[str, int], what: str) -> None:
    """The structure the C core needs: positive sizes, whole heads, kv heads sharing query heads evenly,
    an even head size for RoPE's pairs."""
    for key in PARAMS:
        if p[key] <= 0:
            raise ValueError(f"{what}: {key} must be positive, got {p[key]}")
    if p["dim"] % p["n_heads"]:
        raise ValueError(f"{what}: n_heads ({p['n_heads']}) does not divide dim ({p['dim']})")
    if p["n_heads"] % p["n_kv_heads"]:
        raise ValueError(f"{what}: n_kv_heads ({p['n_kv_heads']}) does not divide n_heads ({p['n_heads']})")
    if p["dim"] // p["n_heads"] % 2:
        raise ValueError(f"{what}: head size {p['dim'] // p['n_heads']} is odd; RoPE rotates pairs")


def _kinds(cfg: ModelConfig, version: int) -> list[tuple[str, tuple[int, ...], int]]:
    """(kind, shape of one tensor, how many) for each kind of weight, in file order."""
    dim, hidden, kv_dim = cfg.dim, cfg.hidden_dim, cfg.n_kv_heads * cfg.head_dim
    shapes = {
        "tok": (cfg.vocab_size, dim), "cls": (cfg.vocab_size, dim), "rms_final": (dim,),
        "rms_att": (dim,), "rms_ffn": (dim,), "wq": (dim, dim), "wk": (kv_dim, dim), "wv": (kv_dim, dim),
        "wo": (dim, dim), "w1": (hidden, dim), "w2": (dim, hidden), "w3": (hidden, dim),
        "freqs": (2 * cfg.max_seq_len * (cfg.head_dim // 2),),  # freq_cis_real and freq_cis_imag
    }
    return [(kind, shapes[kind], cfg.n_layers if kind in LAYER_KINDS else 1)
            for kind in ORDER[version] if not (kind == "cls" and cfg.tied_embeddings)]


def _stored_bytes(shape: tuple[int, ...], version: int, group_size: int) -> int:
    """Bytes of one tensor in the file: fp32, or (version 2 matrices) int8 plus an fp32 scale per group."""
    n = math.prod(shape)
    return n + n // group_size * 4 if version == 2 and len(shape) == 2 else 4 * n


def _layout(kinds: list[tuple[str, tuple[int, ...], int]], version: int, group_size: int,
            start: int) -> dict[str, StoredTensor]:
    """Every tensor's place, under our name, in a checkpoint whose data starts at `start`."""
    at, tensors = start, {}
    for kind, shape, count in kinds:
        nbytes = _stored_bytes(shape, version, group_size)
        if kind == "freqs":
            at += nbytes
            continue
        int8 = version == 2 and len(shape) == 2
        n = math.prod(shape)
        for i in range(count):
            name = f"blk.{i}.{LAYER_KINDS[kind]}.weight" if kind in LAYER_KINDS else SINGLE_KINDS[kind]
            tensors[name] = (StoredTensor(name, shape, at, n, scales=at + n) if int8
                             else StoredTensor(name, shape, at, 4 * n))
            at += nbytes
    return tensors


# ------------------------------------------------------------------------------------------------
# tokenizer.bin

def read_tokenizer_bin(path: str | os.PathLike) -> TokenizerData:
    """The SentencePiece tokenizer in a llama2.c tokenizer.bin; FormatError naming the file if it
    is malformed."""
    path = os.fspath(path)
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as exc:
        raise FormatError(f"{path}: cannot open: {exc.strerror}") from None
    if len(buf) < 4:
        raise FormatError(f"{path}: only {len(buf)} bytes, too short to be a llama2.c tokenizer.bin")
    texts: list[str] = []
    scores: list[float] = []
    pos = 4  # after max_token_length, which only sizes run.c's buffers
    while pos < len(buf):
        i = len(texts)
        if pos + TOKEN_HEADER.size > len(buf):
            raise FormatError(f"{path}: truncated in token {i} (at byte {pos} of {len(buf)})")
        score, n = TOKEN_HEADER.unpack_from(buf, pos)
        pos += TOKEN_HEADER.size
        if pos + n > len(buf):
            raise FormatError(f"{path}: token {i} needs {n} bytes at byte {pos}, past the end of the "
                              f"file ({len(buf)} bytes); truncated?")
        try:
            texts.append(buf[pos:pos + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise FormatError(f"{path}: token {i} is not valid UTF-8") from None
        scores.append(score)
        pos += n
    if not texts:
        raise FormatError(f"{path}: no tokens")
    # the first tokenizer.py wrote the byte pieces <0xXX> (ids 3..258) as the characters chr(0xXX)
    if len(texts) >= 259 and all(texts[3 + b] == chr(b) for b in range(256)):
        texts[3:259] = [f"<0x{b:02X}>" for b in range(256)]
    return _sentencepiece(texts, scores)


def _sentencepiece(texts: list[str], scores: list[float]) -> TokenizerData:
    """SentencePiece pieces, types and special ids from tokenizer.bin's token texts."""
    pieces: list[str] = []
    types: list[int] = []
    bos = eos = unk = None
    for i, text in enumerate(texts):
        if text == "\n<s>\n" and bos is None:
            piece, kind, bos = "<s>", CONTROL, i
        elif text == "\n</s>\n" and eos is None:
            piece, kind, eos = "</s>", CONTROL, i
        elif text == "<unk>" and unk is None:
            piece, kind, unk = text, UNKNOWN, i
        else:
            piece = text.replace(" ", "\u2581")
            kind = BYTE if BYTE_PIECE.fullmatch(piece) else NORMAL
        pieces.append(piece)
        types.append(kind)
    return TokenizerData(model="llama", tokens=pieces, token_types=types, scores=scores, bos_id=bos,
                         eos_id=eos, unk_id=unk, add_bos=True, add_eos=False, add_space_prefix=True)
