"""Convert a llama2.c checkpoint (legacy, version 1 or 2) and its tokenizer.bin to weights.bin.

Version 2 checkpoints store int8 values with one fp32 scale per group (runq.c). Groups of 32 are
Q8_0 blocks once the scale is rounded to f16, so they are kept as such; other group sizes are
decoded exactly to f32. The file layouts are described in formats/llama2c.py.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

import numpy as np

from ..errors import FormatError
from ..formats.llama2c import Llama2cFile, read_tokenizer_bin
from ..formats.weights import TensorSource, expected_tensors
from ..quant import TYPES, quantize
from .common import check_out_type, choose_type, plan_types, report, write_model

GROUPS_ARE_BLOCKS = "each group is a Q8_0 block, its scale rounded to f16"
Q8_0_BLOCK = TYPES["q8_0"].block  # a group of this size is a Q8_0 block


def _plan(ck: Llama2cFile, name: str, shape: tuple[int, ...],
          requested: tuple[str, str] | None) -> tuple[str, str, str, Callable[[], Any]]:
    """(source type label, output type, why, function producing the bytes) for one tensor;
    `requested`: its type under --type, if given."""
    if len(shape) == 1 or ck.version < 2:
        dst, why = choose_type("f32", shape, requested)
        if dst == "f32":
            return "F32", dst, why, lambda: ck.floats(name).view(np.uint8)
        return "F32", dst, why, lambda: quantize(ck.floats(name), dst)
    gs = ck.group_size
    label = f"INT8/{gs}"
    if requested is not None:
        dst, why = choose_type("q8_0" if gs == Q8_0_BLOCK else "int8", shape, requested)
    elif gs == Q8_0_BLOCK:
        dst, why = "q8_0", GROUPS_ARE_BLOCKS
    else:
        dst, why = "f32", f"groups of {gs} are not Q8_0 blocks of {Q8_0_BLOCK}; decoded exactly"
    if dst == "q8_0" and gs == Q8_0_BLOCK:
        if ck.scales_fit_f16(name):
            return label, dst, GROUPS_ARE_BLOCKS, lambda: ck.q8_0_blocks(name)
        dst = requested[0] if requested else "f32"
        why = f"its scales overflow f16; decoded{' and re-encoded' if requested else ''}"
    if dst == "f32":
        return label, dst, why, lambda: ck.dequantized(name)
    return label, dst, why, lambda: quantize(ck.dequantized(name), dst)


def convert_llama2c(src: str | os.PathLike, dst: str | os.PathLike, out_type: str | None = None,
                    progress: bool = True, tokenizer: str | os.PathLike | None = None) -> None:
    """Convert a llama2.c checkpoint (legacy, version 1 or 2) and its tokenizer.bin (by default the
    one beside it; without one the model has no tokenizer) to weights.bin."""
    check_out_type(out_type)
    src = os.fspath(src)
    with Llama2cFile(src) as ck:
        cfg = ck.config
        tok_path = os.fspath(tokenizer) if tokenizer is not None else \
            os.path.join(os.path.dirname(os.path.abspath(src)), "tokenizer.bin")
        if tokenizer is None and not os.path.isfile(tok_path):
            print(f"convert: no tokenizer.bin beside {src}: the model file has no tokenizer "
                  "(give one with --tokenizer)", file=sys.stderr)
            tok = None
        else:
            tok = read_tokenizer_bin(tok_path)
            if len(tok.tokens) != cfg.vocab_size:
                raise FormatError(f"{tok_path}: {len(tok.tokens)} tokens, but the vocabulary of {src} "
                                  f"has {cfg.vocab_size}")
        notes: list[str] = []
        sources: list[TensorSource] = []
        blocks = 0
        plan = plan_types(src, expected_tensors(cfg), out_type, cfg.n_layers)
        for name, shape in expected_tensors(cfg).items():
            label, dst_type, why, make = _plan(ck, name, shape, plan.get(name))
            if why == GROUPS_ARE_BLOCKS:
                blocks += 1
            elif why not in ("kept", "vectors stay f32"):
                notes.append(f"{name}: {label} -> {dst_type} ({why})")
            sources.append((name, dst_type, shape, make))
        if blocks:
            notes.insert(0, f"{blocks} matrices INT8/{Q8_0_BLOCK} -> q8_0 ({GROUPS_ARE_BLOCKS})")
        report(notes, progress)
        base = os.path.basename(src)
        write_model(src, dst, cfg, tok, sources,
                    metadata={"name": os.path.splitext(base)[0], "source": base, "format": ck.description},
                    progress=progress)
