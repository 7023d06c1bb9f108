"""Convert a GGUF file (v2/v3) of a family pyllm runs to weights.bin.

Tensors of the types the engine runs (F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) are
copied byte for byte unless `out_type` asks for another type (recipe.py); BF16 is decoded exactly and
re-encoded (choose_type), and each such choice is reported. Families whose GGUF q/k rows keep
Hugging Face's half-split RoPE pairs (qwen2) have those rows reordered (a row gather, exact for any
type).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from .. import arch
from ..errors import FormatError
from ..formats.gguf import GGUFFile
from ..formats.weights import TensorSource
from ..quant import ALL_TYPES, dequantize, quantize
from ..types import ModelConfig
from .common import check_out_type, choose_type, pair_order, plan_types, report, write_model


def gguf_config(g: GGUFFile) -> ModelConfig:
    """The model config from a GGUF's metadata, through its family; refuses what pyllm cannot run."""
    name = g.meta("general.architecture", kind=str)
    family = arch.by_gguf_name(name)
    if family is None:
        supported = ", ".join(n for f in arch.FAMILIES for n in f.gguf_names)
        raise FormatError(f"{g.path}: architecture {name!r} is not supported: {arch.unsupported_reason(name)} "
                          f"(supported: {supported})")
    return family.config_from_gguf(g)


def _gguf_source(g: GGUFFile, name: str, dst: str, permute_heads: int, rows: tuple[int, int] | None,
                 rotary_dim: int) -> Callable[[], Any]:
    """A function producing one tensor's bytes (its rows `rows` of a fused tensor) as `dst`: a
    byte copy when the type stays and no row reordering is needed, a row gather of the raw bytes
    when only the order changes or a part is taken, otherwise decoded to float32 and re-encoded."""
    t = g.tensors[name]
    src = t.type_name.lower()
    first, end = rows if rows is not None else (0, t.shape[0])
    order = np.arange(first, end)
    if permute_heads:
        order = order[pair_order(end - first, permute_heads, rotary_dim)]
    whole = rows is None and not permute_heads
    if src == dst:
        if whole:
            return lambda: g.tensor_bytes(name)
        return lambda: np.frombuffer(g.tensor_bytes(name), np.uint8).reshape(t.shape[0], -1)[order]

    def make() -> np.ndarray:
        x = dequantize(g.tensor_bytes(name), src, t.shape)
        x = x if whole else x[order]
        return quantize(x.reshape(-1, t.shape[-1]), dst)
    return make


def convert_gguf(src: str | os.PathLike, dst: str | os.PathLike, out_type: str | None = None,
                 progress: bool = True) -> None:
    """Convert a GGUF of a family pyllm runs to weights.bin. Tensors keep their type unless out_type is
    given; types pyllm does not run are decoded exactly and re-encoded, and each such choice is reported."""
    check_out_type(out_type)
    with GGUFFile(src) as g:
        cfg = gguf_config(g)
        family = arch.by_name(cfg.architecture)
        tokenizer = g.tokenizer()
        if len(tokenizer.tokens) != cfg.vocab_size:
            raise FormatError(f"{g.path}: {len(tokenizer.tokens)} tokens but token_embd has "
                              f"{cfg.vocab_size} rows")
        expected = family.tensors(cfg)
        computed = family.gguf_computed_tensors(g, cfg)  # a scaled RoPE's frequencies
        where = {name: family.gguf_source(name, cfg) for name in expected if name not in computed}
        fused_rows: dict[str, int] = {}  # rows of each fused tensor (phi3's attn_qkv): the end of its last part
        for src_name, _, rows in where.values():
            if rows is not None:
                fused_rows[src_name] = max(fused_rows.get(src_name, 0), rows[1])
        used = {src_name for src_name, _, _ in where.values()}
        unknown = [n for n in g.tensors if n not in used and n not in family.gguf_consumed]
        if unknown:
            raise FormatError(f"{g.path}: tensors pyllm does not know: {', '.join(unknown[:5])}")
        plan = plan_types(g.path, expected, out_type, cfg.n_layers)
        sources: list[TensorSource] = []
        notes: list[str] = []
        for name, shape in expected.items():
            if name in computed:
                sources.append((name, "f32", shape, lambda a=computed[name]: a))
                notes.append(f"{name}: RoPE frequencies with {cfg.rope_scaling} scaling, from the GGUF")
                continue
            src_name, heads, rows = where[name]
            t = g.tensors.get(src_name)
            if t is None:
                raise FormatError(f"{g.path}: tensor {src_name} is missing")
            want = shape if rows is None else (fused_rows[src_name],) + shape[1:]
            if tuple(t.shape) != want:
                raise FormatError(f"{g.path}: tensor {src_name} has shape {tuple(t.shape)}, the config needs {want}")
            src_type = t.type_name.lower()
            if not ALL_TYPES[src_type].decodable:
                readable = ", ".join(n.upper() for n, w in ALL_TYPES.items() if w.decodable)
                raise FormatError(f"{g.path}: tensor {src_name} has type {t.type_name}, which pyllm cannot "
                                  f"read (it reads {readable})")
            dst_type, why = choose_type(src_type, shape, plan.get(name),
                                        lambda t=t: dequantize(g.tensor_bytes(t.name), t.type_name.lower(), t.shape))
            if dst_type != src_type and why != "vectors stay f32":
                notes.append(f"{name}: {t.type_name} -> {dst_type} ({why})")
            sources.append((name, dst_type, shape, _gguf_source(g, src_name, dst_type, heads, rows, cfg.rotary_dim)))
        report(notes, progress)
        write_model(g.path, dst, cfg, tokenizer, sources,
                    chat_template=g.meta("tokenizer.chat_template", "", kind=str) or None,
                    metadata={"name": g.meta("general.name", "", kind=str), "source": os.path.basename(g.path)},
                    progress=progress)
