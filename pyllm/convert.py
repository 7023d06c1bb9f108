"""Convert model files to weights.bin (the command-line front is tools/convert.py).

Sources: GGUF v2/v3 (llama and qwen2 architectures, here), Hugging Face directories
(hf_model.py) and llama2.c checkpoints (llama2c.py). Every converter validates the whole source
before writing, streams tensor by tensor into a temporary file renamed at the end, and reports
each tensor whose type it changes and why.

GGUF: F32/F16/Q8_0/Q4_0/Q4_1 tensors are copied byte for byte unless `out_type` asks for another
type; BF16, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K are decoded exactly and re-encoded (choose_type).
llama GGUFs already use the C core's rotation convention (adjacent pairs); qwen2 GGUFs keep
Hugging Face's half-split pairs, so their q/k rows are reordered (a row gather, exact for any type).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import numpy as np

from .errors import FormatError
from .format import ModelConfig, TensorSource, TokenizerData, expected_tensors, tensor_nbytes, write_weights
from .gguf import GGML_TYPES, GGUFFile
from .quant import QK, TYPES, quantize

CONVERTER_VERSION = 1  # bump when the output of a conversion changes
GGUF_ARCHS = ("llama", "qwen2")
NEOX_ROPE = ("qwen2",)  # GGUF families whose q/k rows are in half-split RoPE order


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
    if arch not in GGUF_ARCHS:
        from .hf_model import MISSING
        need = f"it needs {MISSING[arch]}" if arch in MISSING else "pyllm runs llama-family decoders"
        raise FormatError(f"{g.path}: architecture {arch!r} is not supported: {need} "
                          f"(supported: {', '.join(GGUF_ARCHS)})")
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


def choose_type(src: str, shape: tuple[int, ...], out_type: str | None,
                values: Callable[[], np.ndarray] | None = None) -> tuple[str, str]:
    """The type a tensor is written as, and why (the converters report it).

    `src` is the source type's lowercase name ("f32", "bf16", "q6_k", ...); `values` decodes the
    tensor, needed only to tell whether a BF16 tensor fits f16 exactly."""
    if len(shape) == 1:
        return "f32", "vectors stay f32"
    if out_type is not None:
        if out_type not in ("f32", "f16") and shape[-1] % QK:
            return "f16", f"rows of {shape[-1]} values do not fill {out_type} blocks"
        return out_type, "requested"
    if src in TYPES:
        return src, "kept"
    if src == "bf16":
        if values is not None:
            x = values()
            with np.errstate(over="ignore"):
                if np.array_equal(x.astype(np.float16).astype(np.float32), x):
                    return "f16", "every BF16 value is exact in f16"
        return "f32", "BF16 widens to f32 exactly; f16 cannot hold every value"
    return "q8_0", f"pyllm does not run {src.upper()}; Q8_0 is finer, so it adds little error"


def _output_type(src_type: str, shape: tuple[int, ...], out_type: str | None) -> str:
    return choose_type(src_type, shape, out_type)[0]


def pair_order(n_rows: int, n_heads: int) -> np.ndarray:
    """Row gather index taking q/k rows from half-split RoPE pairs (x[i], x[i + d/2]: Hugging Face,
    GGUF's NeoX-style families) to the adjacent pairs (x[2i], x[2i+1]) the C core rotates."""
    head_dim = n_rows // n_heads
    return np.arange(n_rows).reshape(n_heads, 2, head_dim // 2).swapaxes(1, 2).reshape(-1)


def _report(notes: list[str], progress: bool) -> None:
    if progress:
        for note in notes:
            print(f"convert: {note}", file=sys.stderr)


def _gguf_source(g: GGUFFile, name: str, dst: str, permute_heads: int) -> Callable[[], Any]:
    """A function producing one tensor's bytes as `dst`: a byte copy when the type stays and
    no row reordering is needed, a row gather of the raw bytes when only the order changes,
    otherwise decoded to float32 and re-encoded."""
    from .gguf_decode import dequantize_gguf
    t = g.tensors[name]
    src = GGML_TYPES[t.type][0].lower()
    order = pair_order(t.shape[0], permute_heads) if permute_heads else None
    if src == dst:
        if order is None:
            return lambda: g.tensor_bytes(name)
        return lambda: np.frombuffer(g.tensor_bytes(name), np.uint8).reshape(t.shape[0], -1)[order]

    def make() -> np.ndarray:
        x = dequantize_gguf(g.tensor_bytes(name), t.type, t.shape)
        x = x[order] if order is not None else x
        return quantize(x.reshape(-1, t.shape[-1]), dst)
    return make


def convert_gguf(src: str | os.PathLike, dst: str | os.PathLike, out_type: str | None = None,
                 progress: bool = True) -> None:
    """Convert a llama or qwen2 GGUF to weights.bin. Tensors keep their type unless out_type is
    given; types pyllm does not run (BF16, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) are decoded exactly and
    re-encoded, and each such choice is reported."""
    from .gguf_decode import DECODABLE, dequantize_gguf
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
        # NeoX-style families store q/k rows as half-split RoPE pairs; the C core rotates adjacent ones
        neox = cfg.architecture in NEOX_ROPE
        sources: list[TensorSource] = []
        notes: list[str] = []
        for name, shape in expected.items():
            t = g.tensors.get(name)
            if t is None:
                raise FormatError(f"{g.path}: tensor {name} is missing")
            if tuple(t.shape) != shape:
                raise FormatError(f"{g.path}: tensor {name} has shape {tuple(t.shape)}, the config needs {shape}")
            if t.type not in DECODABLE:
                raise FormatError(f"{g.path}: tensor {name} has type {t.type_name}, which pyllm cannot "
                                  f"read (it reads {', '.join(DECODABLE.values())})")
            src_type = t.type_name.lower()
            dst_type, why = choose_type(src_type, shape, out_type,
                                        lambda t=t: dequantize_gguf(g.tensor_bytes(t.name), t.type, t.shape))
            if dst_type != src_type and why != "vectors stay f32":
                notes.append(f"{name}: {t.type_name} -> {dst_type} ({why})")
            heads = {"attn_q": cfg.n_heads, "attn_k": cfg.n_kv_heads}.get(name.split(".")[-2], 0) if neox else 0
            sources.append((name, dst_type, shape, _gguf_source(g, name, dst_type, heads)))
        _report(notes, progress)
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
    # A pickle starts with PROTO (0x80, version) and then an opcode, never a zero byte; a llama2.c
    # header starts with dim as int32, which may also begin 0x80 (dim 640) but then has zeros.
    if magic[:2] == b"PK" or (magic[:1] == b"\x80" and magic[2:4] != b"\0\0"):
        raise FormatError(f"{src}: a PyTorch pickle/zip checkpoint; pyllm never unpickles (it can run "
                          "code). Save the model as safetensors (save_pretrained(..., "
                          "safe_serialization=True)) and convert its directory")
    from .llama2c import convert_llama2c
    return convert_llama2c(src, dst, out_type, progress, tokenizer)
