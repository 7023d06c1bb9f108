"""Convert model files to weights.bin (the command-line front is tools/convert.py).

GGUF (v2/v3, llama architecture): F32/F16/Q8_0/Q4_0/Q4_1 tensors are copied byte for byte unless
`out_type` asks for another type, in which case they are decoded and re-encoded. GGUF's llama
tensors already use the rotation convention of the C core (adjacent pairs), so no permutation.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import numpy as np

from .errors import FormatError
from .format import ModelConfig, TensorSource, TokenizerData, expected_tensors, tensor_nbytes, write_weights
from .gguf import GGUFFile
from .quant import QK, TYPE_IDS, TYPES, dequantize, quantize

CONVERTER_VERSION = 1  # bump when the output of a conversion changes


class Progress:
    """One status line on stderr: rewritten in place on a terminal, every ~10% otherwise."""

    def __init__(self, total_bytes: int, enabled: bool = True):
        self.total, self.done, self.enabled = max(total_bytes, 1), 0, enabled
        self.tty = sys.stderr.isatty()
        self.start, self.last_decile = time.perf_counter(), -1

    def __call__(self, index: int, count: int, name: str, nbytes: int) -> None:
        if not self.enabled:
            return
        self.done += nbytes
        pct = 100 * self.done / self.total
        line = f"[{index + 1:4d}/{count}] {pct:5.1f}%  {self.done / 2**20:8.1f} MiB  {name}"
        if self.tty:
            sys.stderr.write("\r" + line[:100].ljust(100))
        elif int(pct // 10) > self.last_decile or index + 1 == count:
            self.last_decile = int(pct // 10)
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def finish(self, path: str) -> None:
        if self.enabled:
            end = "\n" if self.tty else ""
            sys.stderr.write(f"{end}wrote {path} ({self.total / 2**20:.1f} MiB) in "
                             f"{time.perf_counter() - self.start:.1f} s\n")


def _meta(g: GGUFFile, key: str, default: Any = None, kind: type | tuple[type, ...] = object) -> Any:
    value = g.metadata.get(key, default)
    if value is None:
        if default is None and kind is not object:
            raise FormatError(f"{g.path}: metadata key {key} is missing")
        return default
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if kind is not object and (not isinstance(value, kind) or isinstance(value, bool) and kind is int):
        raise FormatError(f"{g.path}: metadata {key} has an unexpected value {value!r}")
    return value


def gguf_config(g: GGUFFile) -> ModelConfig:
    """The model config from a GGUF's metadata; refuses what the C core cannot run."""
    arch = _meta(g, "general.architecture", kind=str)
    if arch != "llama":
        raise FormatError(f"{g.path}: architecture {arch!r} is not supported yet (supported: llama)")
    p = arch + "."
    dim = _meta(g, p + "embedding_length", kind=int)
    n_heads = _meta(g, p + "attention.head_count", kind=int)
    head_dim = _meta(g, p + "attention.key_length", dim // max(n_heads, 1), kind=int)
    if _meta(g, p + "attention.value_length", head_dim, kind=int) != head_dim:
        raise FormatError(f"{g.path}: key and value head sizes differ, which pyllm does not support")
    if _meta(g, p + "rope.dimension_count", head_dim, kind=int) != head_dim:
        raise FormatError(f"{g.path}: partial rotary embeddings (rope.dimension_count != head size) "
                          "are not supported")
    scaling = _meta(g, p + "rope.scaling.type", "none", kind=str)
    if scaling != "none" or "rope_freqs.weight" in g.tensors:
        raise FormatError(f"{g.path}: RoPE scaling ({scaling}, rope_freqs) is not supported yet")
    if "token_embd.weight" not in g.tensors:
        raise FormatError(f"{g.path}: tensor token_embd.weight is missing")
    return ModelConfig(
        dim=dim,
        hidden_dim=_meta(g, p + "feed_forward_length", kind=int),
        n_layers=_meta(g, p + "block_count", kind=int),
        n_heads=n_heads,
        n_kv_heads=_meta(g, p + "attention.head_count_kv", n_heads, kind=int),
        head_dim=head_dim,
        vocab_size=g.tensors["token_embd.weight"].shape[0],
        max_seq_len=_meta(g, p + "context_length", 2048, kind=int),
        rope_theta=float(_meta(g, p + "rope.freq_base", 10000.0, kind=(int, float))),
        norm_eps=float(_meta(g, p + "attention.layer_norm_rms_epsilon", 1e-5, kind=(int, float))),
        tied_embeddings="output.weight" not in g.tensors,
        qkv_bias="blk.0.attn_q.bias" in g.tensors,
        architecture=arch,
    )


def gguf_tokenizer(g: GGUFFile) -> TokenizerData:
    """The tokenizer stored in a GGUF's tokenizer.ggml.* metadata."""
    model = _meta(g, "tokenizer.ggml.model", kind=str)
    if model not in ("gpt2", "llama"):
        raise FormatError(f"{g.path}: tokenizer model {model!r} is not supported (gpt2 or llama)")
    spm = model == "llama"

    def ids(key: str) -> int | None:
        return _meta(g, f"tokenizer.ggml.{key}_token_id", None)

    return TokenizerData(
        model=model,
        tokens=list(_meta(g, "tokenizer.ggml.tokens", kind=list)),
        token_types=[int(t) for t in _meta(g, "tokenizer.ggml.token_type", [])],
        scores=[float(s) for s in g.metadata["tokenizer.ggml.scores"]]
        if "tokenizer.ggml.scores" in g.metadata else None,
        merges=list(_meta(g, "tokenizer.ggml.merges", [])),
        pre=_meta(g, "tokenizer.ggml.pre", None),
        bos_id=ids("bos"), eos_id=ids("eos"), unk_id=ids("unknown"), pad_id=ids("padding"),
        add_bos=bool(_meta(g, "tokenizer.ggml.add_bos_token", spm)),
        add_eos=bool(_meta(g, "tokenizer.ggml.add_eos_token", False)),
        add_space_prefix=bool(_meta(g, "tokenizer.ggml.add_space_prefix", spm)),
    )


def _output_type(src_type: str, shape: tuple[int, ...], out_type: str | None) -> str:
    if len(shape) == 1:
        return "f32"  # norms and biases stay in full precision
    if out_type is None:
        return src_type
    if out_type not in ("f32", "f16") and shape[-1] % QK:
        return "f16"  # rows that do not fill whole blocks cannot be block-quantized
    return out_type


def _encoder(read: Callable[[], Any], src: str, dst: str, shape: tuple[int, ...]) -> Callable[[], Any]:
    if src == dst:
        return read
    return lambda: quantize(dequantize(read(), src, shape).reshape(-1, shape[-1]), dst)


def convert_gguf(src: str | os.PathLike, dst: str | os.PathLike, out_type: str | None = None,
                 progress: bool = True) -> None:
    """Convert a llama GGUF to weights.bin, keeping tensor types unless out_type is given."""
    if out_type is not None and out_type not in TYPES:
        raise ValueError(f"unknown output type {out_type!r}; choose from {', '.join(TYPES)}")
    with GGUFFile(src) as g:
        cfg = gguf_config(g)
        tokenizer = gguf_tokenizer(g)
        if len(tokenizer.tokens) != cfg.vocab_size:
            raise FormatError(f"{g.path}: {len(tokenizer.tokens)} tokens but token_embd has "
                              f"{cfg.vocab_size} rows")
        expected = expected_tensors(cfg)
        unknown = [n for n in g.tensors if n not in expected]
        if unknown:
            raise FormatError(f"{g.path}: tensors pyllm does not know: {', '.join(unknown[:5])}")
        sources: list[TensorSource] = []
        for name, shape in expected.items():
            t = g.tensors.get(name)
            if t is None:
                raise FormatError(f"{g.path}: tensor {name} is missing")
            if tuple(t.shape) != shape:
                raise FormatError(f"{g.path}: tensor {name} has shape {tuple(t.shape)}, the config needs {shape}")
            src_type = TYPE_IDS.get(t.type)
            if src_type is None:
                raise FormatError(f"{g.path}: tensor {name} has type {t.type_name}, which pyllm cannot "
                                  f"read yet (supported: {', '.join(TYPES)})")
            dst_type = _output_type(src_type, shape, out_type)
            read = (lambda name=name: g.tensor_bytes(name))
            sources.append((name, dst_type, shape, _encoder(read, src_type, dst_type, shape)))
        write_model(dst, cfg, tokenizer, sources, chat_template=_meta(g, "tokenizer.chat_template", None),
                    metadata={"name": _meta(g, "general.name", ""), "source": os.path.basename(g.path)},
                    progress=progress)


def write_model(dst: str | os.PathLike, cfg: ModelConfig, tokenizer: TokenizerData | None,
                sources: list[TensorSource], chat_template: str | None = None,
                metadata: dict[str, Any] | None = None, progress: bool = True) -> None:
    """Write a converted model with a progress line; every converter ends here."""
    total = sum(tensor_nbytes(type_name, tuple(shape)) for _, type_name, shape, _ in sources)
    bar = Progress(total, progress)
    write_weights(dst, cfg, tokenizer, sources, chat_template=chat_template,
                  metadata={**(metadata or {}), "converter_version": CONVERTER_VERSION}, progress=bar)
    bar.finish(os.fspath(dst))


def convert(src: str | os.PathLike, dst: str | os.PathLike, out_type: str | None = None,
            progress: bool = True, tokenizer: str | os.PathLike | None = None) -> None:
    """Convert a model to weights.bin, choosing the reader from what `src` is: a GGUF file, a
    Hugging Face model directory (or a .safetensors file in one), or a llama2.c checkpoint
    (`tokenizer`: its tokenizer.bin, by default the one beside it)."""
    if out_type is not None and out_type not in TYPES:
        raise ValueError(f"unknown output type {out_type!r}; choose from {', '.join(TYPES)}")
    src = os.fspath(src)
    if os.path.isdir(src) or src.endswith((".safetensors", ".safetensors.index.json")):
        from .hf_model import convert_hf
        return convert_hf(src, dst, out_type, progress)
    try:
        with open(src, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise FormatError(f"{src}: cannot open: {exc.strerror}") from None
    if magic == b"GGUF":
        return convert_gguf(src, dst, out_type, progress)
    if magic[:2] == b"PK" or magic[:1] == b"\x80":
        raise FormatError(f"{src}: a PyTorch pickle/zip checkpoint; pyllm never unpickles (it can run "
                          "code). Save the model as safetensors (save_pretrained(..., "
                          "safe_serialization=True)) and convert its directory")
    from .llama2c import convert_llama2c
    return convert_llama2c(src, dst, out_type, progress, tokenizer)
