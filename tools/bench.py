#!/usr/bin/env python3
"""Benchmark pyllm like llama-bench: prompt processing (pp) and token generation (tg), tokens/s.

    python tools/bench.py [weights.bin ...] [--threads N] [--reps 5] [--pp 512] [--tg 128]

Without a file it benchmarks the default model (SmolLM2-135M-Instruct, Q4_1). pp evaluates a
prompt of --pp tokens from an empty cache in one call; tg generates --tg tokens one at a time
from an empty cache (feeding back the greedy choice). Each figure is the median of --reps runs.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyllm import Model  # noqa: E402
from pyllm.fetch import default_model  # noqa: E402


def machine() -> str:
    """CPU model, SIMD flags that matter here, cores visible to this process."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "f16c", "avx512f", "asimd", "asimddp") if f in flags]
    return f"{name}; {', '.join(simd) or 'no SIMD flags'}; {len(os.sched_getaffinity(0))} cores"


def bench_pp(model: Model, n: int, reps: int) -> float:
    tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, n)
    times = []
    for _ in range(reps):
        model.reset()
        t0 = time.perf_counter()
        model.eval(tokens)
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def bench_tg(model: Model, n: int, reps: int) -> float:
    times = []
    for _ in range(reps):
        model.reset()
        token = 1
        t0 = time.perf_counter()
        for _ in range(n):
            token = int(model.eval([token]).argmax())
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="weights.bin files (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--kernels", default="auto", help="auto, avx2, neon or portable")
    args = ap.parse_args()
    paths = args.models or [str(default_model())]

    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d')}, python {platform.python_version()}\n")
    print("| model | type | kernels | threads | test | tokens/s |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        with Model(path, n_threads=args.threads, n_ctx=max(args.pp, args.tg), kernels=args.kernels) as m:
            kind = m.file.tensors["blk.0.attn_q.weight"].type
            name = m.file.metadata.get("name") or os.path.basename(path)
            for test, fn, n in (("pp", bench_pp, args.pp), ("tg", bench_tg, args.tg)):
                rate = fn(m, n, args.reps)
                print(f"| {name} | {kind} | {m.kernels} | {m.n_threads} | {test}{n} | {rate:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
