"""Measure a model's speed like llama-bench: prompt processing (pp) and token generation (tg), tokens/s.

    pyllm bench [weights.bin ...] [-p 512] [-n 128] [-r 5] [-t THREADS] [--kernels auto]

pp evaluates a prompt of -p random tokens from an empty cache in one call; tg generates -n tokens
one at a time from an empty cache, through the C core (`eval` + argmax) and through `generate`
(the Python sampling loop users call). Each figure is the median of -r runs, the measurements
alternating within each repetition so that a machine that speeds up or slows down during the
benchmark (shared virtual machines do) shifts them alike. Without a weights file it measures the
default model. tools/bench.py adds llama.cpp on the same file, cache depths and start-up.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

from .errors import PyllmError, describe
from .fetch import DEFAULT_MODEL, KNOWN_MODELS, model_path
from .model import Model

DESCRIPTION = __doc__.split("\n\n")[0]
Runs = dict[str, tuple[int, Callable[[], Any]]]  # name -> (tokens per run, run)


def machine() -> str:
    """CPU model, the SIMD flags that matter here, cores visible to this process."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "asimd", "asimddp") if f in flags]
    return f"{name}; {' '.join(simd) or 'no SIMD flags'}; {len(os.sched_getaffinity(0))} cores"


def timed_rate(tokens: int, run: Callable[[], Any]) -> float:
    """tokens/s of one run: by the seconds it returns if it times itself (another engine's
    benchmark program), else by its wall time."""
    t0 = time.perf_counter()
    seconds = run()
    return tokens / (time.perf_counter() - t0 if seconds is None else seconds)


def interleaved_rate_lists(runs: Runs, reps: int, before_each: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """tokens/s of each run (timed_rate) in each repetition, the runs alternating within a
    repetition, so that drift in machine speed hits every one alike (before_each, if given, runs
    first in each)."""
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        if before_each:
            before_each()
        for k, (tokens, fn) in runs.items():
            rates[k].append(timed_rate(tokens, fn))
    return rates


def interleaved_rates(runs: Runs, reps: int) -> dict[str, float]:
    """tokens/s (median) of each run, as interleaved_rate_lists measures them."""
    return {k: statistics.median(v) for k, v in interleaved_rate_lists(runs, reps).items()}


def prompt_tokens(n: int, vocab: int) -> list[int]:
    """n reproducible random token ids (above the first 100, where control tokens usually sit)."""
    return [int(t) for t in np.random.default_rng(0).integers(100, vocab, n)]


def model_runs(m: Model, pp: int, tg: int) -> Runs:
    """pp and tg through the C core, and tg through generate(), each from an empty cache."""
    toks = prompt_tokens(pp, m.config.vocab_size)

    def prompt() -> None:
        m.reset()
        m.eval(toks)

    def decode() -> None:
        m.reset()
        token = 1
        for _ in range(tg):
            token = int(m.eval([token]).argmax())

    def generate() -> None:
        m.reset()
        eos = m.tokenizer.eos_id
        m.generate([1], max_tokens=tg, temperature=0.8, seed=0,
                   logit_bias={eos: float("-inf")} if eos is not None else None).text()

    return {"pp": (pp, prompt), "tg": (tg, decode), "tg_py": (tg, generate)}


def weight_type(m: Model) -> str:
    """The type of the model's matrices, as its first attention projection has it."""
    return m.file.tensors["blk.0.attn_q.weight"].type.upper()


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The command's arguments: models, prompt and generation lengths, repetitions, threads, kernels."""
    ap.add_argument("models", nargs="*", help="weights.bin files or names of known models (default: smollm2)")
    ap.add_argument("-p", "--pp", type=int, default=512, help="prompt tokens (default 512)")
    ap.add_argument("-n", "--tg", type=int, default=128, help="generated tokens (default 128)")
    ap.add_argument("-r", "--reps", type=int, default=5, help="repetitions, median reported (default 5)")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    ap.add_argument("--kernels", default="auto", help="auto, avx512, avx2, neon or portable")


def run(args: argparse.Namespace) -> int:
    """The command, on parsed arguments: one markdown table row per model."""
    for name in ("pp", "tg", "reps"):
        if getattr(args, name) < 1:
            print(f"pyllm bench: --{name} must be at least 1", file=sys.stderr)
            return 2
    try:
        paths = [str(model_path(p, quiet=True)) if p in KNOWN_MODELS and not os.path.exists(p) else p
                 for p in args.models or [DEFAULT_MODEL]]
        print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d')}; python {platform.python_version()}\n")
        print(f"| model | type | kernels | threads | pp{args.pp} tok/s | tg{args.tg} tok/s | tg{args.tg} via generate() |")
        print("|---|---|---|---|---|---|---|")
        for path in paths:
            with Model(path, n_threads=args.threads, n_ctx=args.pp + args.tg + 8, kernels=args.kernels) as m:
                rates = interleaved_rates(model_runs(m, args.pp, args.tg), args.reps)
                print(f"| {os.path.basename(path)} | {weight_type(m)} | {m.kernels} | {m.n_threads} | "
                      f"{rates['pp']:.1f} | {rates['tg']:.1f} | {rates['tg_py']:.1f} |", flush=True)
    except (PyllmError, ValueError, OSError) as exc:
        print(f"pyllm bench: {describe(exc)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pyllm.bench`: the same command as `pyllm bench`."""
    ap = argparse.ArgumentParser(prog="python -m pyllm.bench", description=DESCRIPTION)
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
