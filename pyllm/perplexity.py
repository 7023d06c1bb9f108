"""Perplexity of a model on a text, computed the way llama.cpp's `llama-perplexity` computes it.

    pyllm perplexity weights.bin text.txt [--ctx 512] [--threads N]    (or python -m pyllm.perplexity)

The whole text is tokenized once (with BOS only if the model adds one), cut into non-overlapping
chunks of n_ctx tokens (a partial last chunk is dropped), and each chunk is evaluated from an empty
cache; only the predictions in the second half of a chunk are scored, so every scored token sees
at least n_ctx/2 tokens of context. With a BOS-adding model the first token of each chunk is
replaced by BOS, as llama.cpp does. Prints the running estimate per chunk, then `PPL = <value>`.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Callable

import numpy as np

from .errors import PyllmError, describe
from .model import Model


def chunk_nll(logits: np.ndarray, tokens: np.ndarray, first: int) -> np.ndarray:
    """-log p(next token) at positions first .. n-2 of one chunk (logits: (n, vocab))."""
    rows = logits[first:-1].astype(np.float64)               # (n - 1 - first, vocab)
    targets = tokens[first + 1:]
    top = rows.max(axis=1)
    logz = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
    return logz - rows[np.arange(len(targets)), targets]


def perplexity(model: Model, tokens: list[int] | np.ndarray, n_ctx: int = 512,
               on_chunk: Callable[[int, int, float], None] | None = None) -> tuple[float, float]:
    """(perplexity, standard error of the mean NLL) over the chunks of `tokens`."""
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 3:
        # the second half of a chunk, less its last position, must hold a prediction to score
        raise ValueError(f"the chunk size (--ctx) must be an integer of at least 3, got {n_ctx!r}")
    tokens = np.asarray(tokens, dtype=np.int32)
    n_chunks = len(tokens) // n_ctx
    if n_chunks < 1:
        raise PyllmError(f"the text has {len(tokens)} tokens, fewer than one chunk of {n_ctx}")
    bos = model.tokenizer.bos_id if model.tokenizer.add_bos else None
    nlls: list[np.ndarray] = []
    total, count = 0.0, 0
    for c in range(n_chunks):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
        if bos is not None:
            chunk[0] = bos
        nll = chunk_nll(model.logits(chunk), chunk, n_ctx // 2)
        nlls.append(nll)
        total, count = total + float(nll.sum()), count + len(nll)
        if on_chunk:
            on_chunk(c, n_chunks, math.exp(total / count))
    allnll = np.concatenate(nlls)
    stderr = float(allnll.std(ddof=1) / math.sqrt(len(allnll))) if len(allnll) > 1 else 0.0
    return math.exp(total / count), stderr


DESCRIPTION = __doc__.split("\n\n")[0]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The command's arguments: model, text, chunk size, threads."""
    ap.add_argument("model", help="weights.bin")
    ap.add_argument("text", help="UTF-8 text file")
    ap.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default 512)")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    ap.add_argument("--kv-type", default="f32", choices=["f32", "f16"], help="how the KV cache stores keys and values")


def run(args: argparse.Namespace) -> int:
    """The command, on parsed arguments: the running estimate per chunk, then PPL = <value>."""
    try:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
        t0 = time.perf_counter()
        with Model(args.model, n_threads=args.threads, n_ctx=args.ctx, kv_type=args.kv_type) as model:
            tokens = model.tokenize(text)
            print(f"{len(tokens)} tokens, {len(tokens) // args.ctx} chunks of {args.ctx}", file=sys.stderr)

            def show(c: int, n: int, ppl: float) -> None:
                rate = (c + 1) * args.ctx / (time.perf_counter() - t0)
                print(f"[{c + 1}/{n}] {ppl:.4f}  ({rate:.0f} tokens/s)", file=sys.stderr, flush=True)

            ppl, err = perplexity(model, tokens, args.ctx, show)
    except (OSError, UnicodeDecodeError, PyllmError, ValueError) as exc:
        print(f"pyllm perplexity: {describe(exc)}", file=sys.stderr)
        return 1
    print(f"PPL = {ppl:.4f} +/- {ppl * err:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pyllm.perplexity`: the same command as `pyllm perplexity`."""
    ap = argparse.ArgumentParser(prog="python -m pyllm.perplexity", description=DESCRIPTION)
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
