#!/usr/bin/env python3
"""Measure a change: decode (tg) and prompt (pp512) speed of two source trees, paired. Each tree runs
in a process of its own that loads the model once; the two take turns at short runs (ABBA order),
so the two halves of a pair see the same machine: on shared hosts memory bandwidth can halve for
seconds at a time, which moves every speed far more than most changes do. The figure to read is
the median of the per-pair ratios new/old.

    python tools/ab_builds.py OLD_TREE NEW_TREE weights.bin [--pairs 40] [--tg 32] [--pp 0]
                              [--kernels auto] [-t 2] [--new-model new.bin] [--membw]

Each tree must be built in place (`python setup.py build_ext --inplace`; tools/compare_builds.sh
shows how to check out a revision into a temporary worktree). A decode run generates --tg tokens
greedily from an empty cache; a prompt run (with --pp N, after each decode pair) evaluates N tokens.
With --clock cpu, speeds are per second of the process's CPU time, not of the wall clock. With
--new-model the new tree runs another file (the same model converted by the new tree, when the old
one cannot read it). With --membw, tools/membw.c's two-thread bandwidth is measured between
pairs, and where it moved by more than 30% the paired ratios are also given for the pairs of the
high and of the low phase (tools/paired.py).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from paired import membw_program, phases, take_turns

WORKER = r'''
import sys, time
tree, path, kernels, threads, clock, tg, pp = sys.argv[1:8]
tg, pp, threads = int(tg), int(pp), int(threads)
clock = time.process_time if clock == "cpu" else time.perf_counter
sys.path.insert(0, tree)
import pyllm
assert pyllm.__file__.startswith(tree), f"imported {pyllm.__file__}, not the tree's pyllm"
m = pyllm.Model(path, n_threads=threads, n_ctx=max(tg, pp) + 8, kernels=kernels)
prompt = [100 + i % 1000 for i in range(pp)]
def decode():
    m.reset(); t = 1; t0 = clock()
    for _ in range(tg): t = int(m.eval([t]).argmax())
    return tg / (clock() - t0)
def read():
    m.reset(); t0 = clock(); m.eval(prompt)
    return pp / (clock() - t0)
runs = {"tg": decode, "pp": read}
decode(); pp and read()
print("ready", flush=True)
for line in sys.stdin:
    print(runs[line.strip()](), flush=True)
'''


class Worker:
    """One tree's process: it answers each request ("tg" or "pp") with the speed of one run."""

    def __init__(self, tree: str, model: str, args: argparse.Namespace) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, tree, model, args.kernels, str(args.threads), args.clock,
             str(args.tg), str(args.pp)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"the build in {tree} failed to load {model}")

    def run(self, kind: str) -> float:
        self.proc.stdin.write(kind + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("a worker stopped")
        return float(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def summary(name: str, old: list[float], new: list[float]) -> str:
    ratios = [n / o for o, n in zip(old, new)]
    q1, q2, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return (f"{name}: old median {statistics.median(old):.1f}, new median {statistics.median(new):.1f}; "
            f"paired new/old median {q2:.3f} (quartiles {q1:.3f}-{q3:.3f}), new faster in "
            f"{sum(r > 1 for r in ratios)} of {len(ratios)} pairs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="source tree of the old build")
    ap.add_argument("new", help="source tree of the new build")
    ap.add_argument("model", help="weights.bin (readable by both builds)")
    ap.add_argument("--new-model", help="the new tree's weights.bin, if not the same file")
    ap.add_argument("--pairs", type=int, default=40, help="decode pairs (default 40)")
    ap.add_argument("--tg", type=int, default=32, help="tokens per decode run (default 32)")
    ap.add_argument("--pp", type=int, default=0, help="also prompt runs of this many tokens (default: none)")
    ap.add_argument("--kernels", default="auto")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: the process's CPU time, which other processes on a busy machine do not "
                         "inflate (use with -t 1: with more threads it counts barrier spinning)")
    ap.add_argument("--membw", action="store_true", help="tag pairs with the memory bandwidth of the moment")
    args = ap.parse_args()
    kinds = ["tg"] + (["pp"] if args.pp else [])
    old = Worker(os.path.abspath(args.old), args.model, args)
    new = Worker(os.path.abspath(args.new), args.new_model or args.model, args)
    def report(i: int, a: dict, b: dict, bw: float | None) -> None:
        line = " | ".join(f"{k} old {a[k]:.1f} new {b[k]:.1f}" for k in kinds)
        print(f"pair {i + 1}: {line}" + (f" | membw after {bw:.1f} GB/s" if bw else ""), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        results, bandwidth = take_turns(lambda: {k: old.run(k) for k in kinds}, lambda: {k: new.run(k) for k in kinds},
                                        args.pairs, membw_program(tmp) if args.membw else None, report)
    old.close()
    new.close()
    for kind in kinds:
        print(summary(f"{kind}{args.tg if kind == 'tg' else args.pp}", [a[kind] for a, _ in results],
                      [b[kind] for _, b in results]))
        for label, idx in phases(bandwidth):
            print(summary(f"  {label}", [results[i][0][kind] for i in idx], [results[i][1][kind] for i in idx]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
