"""Convert a Hugging Face model directory (config.json + safetensors) to weights.bin.

The family (arch/) is chosen by config.json's `architectures` and translates the config and the
tensor names; weights may be F32, F16 or BF16 (kept, or BF16 to F16 when exact, else F32).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from .. import arch
from ..formats.hf_dir import (Fail, chat_template, open_shards, read_config, read_tokenizer, stored_size,
                              tokenizer_config)
from ..formats.safetensors import FLOAT_DTYPES, SafetensorsFile
from ..formats.weights import TensorSource
from ..quant import quantize
from .common import choose_type, pair_order, plan_types, report, write_model


def convert_hf(src: str | os.PathLike, dst: str | os.PathLike, out_type: str | None = None,
               progress: bool = True) -> None:
    """Convert a Hugging Face model directory (or a .safetensors file inside one) to weights.bin."""
    root = os.fspath(src)
    if not os.path.isdir(root):
        root = os.path.dirname(os.path.abspath(root))
    fail = Fail(root)
    if not os.path.exists(os.path.join(root, "config.json")):
        raise fail("no config.json: not a Hugging Face model directory")
    raw = read_config(root, "config.json", fail)
    family = arch.by_hf_class(raw.strings("architectures"))
    if family is None:
        archs, model_type = raw.strings("architectures"), raw.text("model_type", "?")
        name = archs[0] if archs else model_type
        raise fail(f"architecture {name} (model_type {model_type!r}) is not supported: "
                   f"{arch.unsupported_reason(model_type)}")
    tok_cfg = tokenizer_config(root, fail)

    owner, files = open_shards(root, fail)
    try:
        cfg, notes = family.config_from_hf(raw, *stored_size(owner))  # counts bounded by the shards
        tokenizer = read_tokenizer(root, cfg.vocab_size, tok_cfg, fail)
        if tokenizer is None:
            notes.append("no tokenizer.json or tokenizer.model: the model file has no tokenizer")
        names = family.hf_tensor_names(cfg)
        used = {source[0] for source in names.values()}
        fused_rows: dict[str, int] = {}  # rows of each fused tensor: the end of its last part
        for source in names.values():
            if len(source) > 2:
                fused_rows[source[0]] = max(fused_rows.get(source[0], 0), source[2][1])
        ignorable = family.hf_ignored_suffixes + (("lm_head.weight",) if cfg.tied_embeddings else ())
        unknown = [n for n in owner if n not in used and not n.endswith(ignorable)]
        if unknown:
            raise fail(f"tensors pyllm does not know (a feature it lacks?): {', '.join(unknown[:5])}")
        computed = family.hf_computed_tensors(raw, cfg)  # a scaled RoPE's frequencies
        plan = plan_types(root, family.tensors(cfg), out_type, cfg.n_layers)
        sources: list[TensorSource] = []
        for name, shape in family.tensors(cfg).items():
            if name in computed:
                sources.append((name, "f32", shape, lambda a=computed[name]: a))
                notes.append(f"{name}: RoPE frequencies with {cfg.rope_scaling} scaling, from config.json")
                continue
            hf_name, permute_heads, *part = names[name]
            rows = part[0] if part else None  # a part of a fused tensor (Phi-3's qkv_proj, gate_up_proj)
            f = owner.get(hf_name)
            if f is None:
                raise fail(f"tensor {hf_name} is missing")
            t = f.tensors[hf_name]
            want = shape if rows is None else (fused_rows[hf_name],) + shape[1:]
            if t.shape != want:
                raise fail(f"tensor {hf_name} in {os.path.basename(f.path)} has shape {list(t.shape)}, "
                           f"the config needs {list(want)}")
            if t.dtype not in FLOAT_DTYPES:
                raise fail(f"tensor {hf_name} is {t.dtype}; weights must be {', '.join(FLOAT_DTYPES)}")
            dst_type, why = choose_type(t.dtype.lower(), shape, plan.get(name), lambda f=f, n=hf_name: f.array(n))
            if dst_type != t.dtype.lower() and why != "vectors stay f32":
                notes.append(f"{name}: {t.dtype} -> {dst_type} ({why})")
            order = pair_order(shape[0], permute_heads, cfg.rotary_dim) if permute_heads else None
            sources.append((name, dst_type, shape,
                            _encoder(f, hf_name, order, rows, dst_type, family.hf_value_shift(name))))
        report(notes, progress)
        write_model(root, dst, cfg, tokenizer, sources, chat_template=chat_template(root, tok_cfg),
                    metadata={"name": os.path.basename(os.path.normpath(root)), "source": "huggingface"},
                    progress=progress)
    finally:
        for f in files:
            f.close()


def _encoder(f: SafetensorsFile, name: str, order: np.ndarray | None, rows: tuple[int, int] | None,
             dst_type: str, shift: float) -> Callable[[], Any]:
    """A function producing one tensor's bytes: rows of a fused tensor, q/k rows reordered, a constant
    added (Gemma's 1 + w, in float32 as the model computes it), encoded."""
    def make() -> Any:
        w = f.array(name)
        if rows is not None:
            w = w[rows[0]:rows[1]]
        if order is not None:
            w = w[order]
        w = np.ascontiguousarray(w, dtype=np.float32)
        if shift:
            w = w + np.float32(shift)
        return quantize(w.reshape(-1, w.shape[-1]), dst_type)
    return make
