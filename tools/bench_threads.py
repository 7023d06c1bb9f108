#!/usr/bin/env python3
"""Decoding speed in the three situations that decide how the C core's threads wait: one thread
using the model, the model used by a second thread after the first, and the cores shared with other
busy processes.

    python tools/bench_threads.py weights.bin [--tree SRC] [-t 2] [--tokens 128] [--hogs 2]

--tree imports pyllm from another source tree built in place (to compare two builds in one run).
Prints tokens/s for: "alone" (Model.generate), "second thread" (an Engine on its own thread after
Model.generate ran on this one), and "with N hogs" (Model.generate while N processes spin on the
CPU).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time


def hog(stop) -> None:
    while not stop.is_set():
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tree", help="a source tree built in place to import pyllm from")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--hogs", type=int, default=2)
    args = ap.parse_args()
    if args.tree:
        sys.path.insert(0, os.path.abspath(args.tree))
    import pyllm
    prompt = "Once upon a time, there was a cat who lived in a small village near the sea. Every morning the cat"
    options = dict(max_tokens=args.tokens, temperature=0, logit_bias={2: -1e9})
    with pyllm.Model(args.model, n_threads=args.threads, n_ctx=1024) as m:
        options["logit_bias"] = {t: -1e9 for t in pyllm.generation.stop_tokens(m)}

        def alone() -> float:
            t0 = time.perf_counter()
            g = m.generate(prompt, **options)
            g.text()
            return len(g.tokens) / (time.perf_counter() - t0)

        alone()  # warm up
        print(f"{pyllm.__file__}")
        print(f"alone          {alone():7.1f} tok/s")
        with pyllm.Engine(m, max_running=1, kv_budget=64 << 20) as engine:
            engine.submit(prompt, max_tokens=4, temperature=0).text()
            t0 = time.perf_counter()
            stream = engine.submit(prompt, **options)
            stream.text()
            print(f"second thread  {stream.usage.completion_tokens / (time.perf_counter() - t0):7.1f} tok/s")
        stop = multiprocessing.Event()
        hogs = [multiprocessing.Process(target=hog, args=(stop,)) for _ in range(args.hogs)]
        for p in hogs:
            p.start()
        try:
            print(f"with {args.hogs} hogs    {alone():7.1f} tok/s")
        finally:
            stop.set()
            for p in hogs:
                p.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
