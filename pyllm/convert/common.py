"""What every converter shares: the choice of each tensor's output type (and why), the q/k row
order for RoPE, the progress line, and the final write."""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import numpy as np

from ..core import ModelCore
from ..errors import FormatError, PyllmError
from ..formats.weights import TensorSource, tensor_nbytes, write_weights
from ..quant import TYPES
from ..types import ModelConfig, TokenizerData
from .recipe import OUT_TYPES, requested_types

CONVERTER_VERSION = 4  # bump when the output of a conversion changes


def check_out_type(out_type: str | None) -> None:
    """ValueError naming the choices when out_type is not a type or mixture the converter writes."""
    if out_type is not None and out_type not in OUT_TYPES:
        raise ValueError(f"unknown output type {out_type!r}; choose from {', '.join(OUT_TYPES)}")


def plan_types(source: str, tensors: dict[str, tuple[int, ...]], out_type: str | None,
               n_layers: int) -> dict[str, tuple[str, str]]:
    """Each matrix's requested type and why (recipe.requested_types), refusing, before any work, a
    request that needs a type the C core does not run (the converted model would not load)."""
    plan = requested_types(tensors, out_type, n_layers)
    missing = sorted({t for t, _ in plan.values() if t not in TYPES}, key=list(OUT_TYPES).index)
    if missing:
        raise ValueError(f"{source}: --type {out_type} needs {', '.join(t.upper() for t in missing)}, which "
                         f"this build of pyllm does not run (it runs {', '.join(TYPES)})")
    return plan


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
        """The closing line: what was written, how big, how long it took."""
        if self.enabled:
            end = "\n" if self.tty else ""
            sys.stderr.write(f"{end}wrote {path} ({self.total / 2**20:.1f} MiB) in "
                             f"{time.perf_counter() - self.start:.1f} s\n")


def choose_type(src: str, shape: tuple[int, ...], requested: tuple[str, str] | None,
                values: Callable[[], np.ndarray] | None = None) -> tuple[str, str]:
    """The type a tensor is written as, and why (the converters report it).

    `src` is the source type's lowercase name ("f32", "bf16", "q6_k", ...); `requested` is the
    tensor's entry of plan_types when --type was given; `values` decodes the tensor, needed only
    to tell whether a BF16 tensor fits f16 exactly."""
    if len(shape) == 1:
        return "f32", "vectors stay f32"
    if requested is not None:
        return requested
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


def pair_order(n_rows: int, n_heads: int, rotary_dim: int | None = None) -> np.ndarray:
    """Row gather index taking q/k rows from half-split RoPE pairs (x[i], x[i + r/2]: Hugging Face,
    GGUF's NeoX-style families) to the adjacent pairs (x[2i], x[2i+1]) the C core rotates. Only a
    head's first rotary_dim rows (all by default) rotate; the rest keep their order."""
    head_dim = n_rows // n_heads
    rot = head_dim if rotary_dim is None else rotary_dim
    within = np.concatenate([np.arange(rot).reshape(2, rot // 2).T.reshape(-1), np.arange(rot, head_dim)])
    return (np.arange(n_heads)[:, None] * head_dim + within).reshape(-1)


def report(notes: list[str], progress: bool) -> None:
    """Print each conversion note (a type change and its reason) to stderr."""
    if progress:
        for note in notes:
            print(f"convert: {note}", file=sys.stderr)


def write_model(source: str, dst: str | os.PathLike, cfg: ModelConfig, tokenizer: TokenizerData | None,
                sources: list[TensorSource], chat_template: str | None = None,
                metadata: dict[str, Any] | None = None, progress: bool = True) -> None:
    """Write a model converted from `source` with a progress line; every converter ends here.

    Before any tensor is written, the output is loaded as every model is (ModelCore: the file's
    validation, the family, the tokenizer, the C core's checks); the checks read no tensor data. A
    refusal is the source's fault, so the FormatError names the source."""

    def check(tmp: str) -> None:
        try:
            ModelCore(tmp, n_threads=1, n_ctx=1).close()
        except PyllmError as exc:
            problem = str(exc).removeprefix(f"{tmp}: ")
            raise FormatError(f"{source}: the model it converts to would not load: {problem}") from None

    total = sum(tensor_nbytes(type_name, tuple(shape)) for _, type_name, shape, _ in sources)
    bar = Progress(total, progress)
    write_weights(dst, cfg, tokenizer, sources, chat_template=chat_template,
                  metadata={**(metadata or {}), "converter_version": CONVERTER_VERSION}, progress=bar,
                  check=check)
    bar.finish(os.fspath(dst))
