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
one cannot read it). With --membw, tools/membw.c's two-thread bandwidth is measured every fourth
pair, and where it moved by more than 30% the paired ratios are also given for the pairs of the
high and of the low phase.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

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


def membw_program(tmp: str) -> str:
    """tools/membw.c built into tmp."""
    exe = os.path.join(tmp, "membw")
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(["gcc", "-O2", "-mavx2", "-fopenmp", os.path.join(here, "membw.c"), "-o", exe], check=True)
    return exe


def two_thread_bandwidth(exe: str) -> float:
    """GB/s that tools/membw.c reads on two threads right now."""
    out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
    return float(next(line for line in out.splitlines() if line.startswith("2 threads")).split()[2])


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
    got = {k: {"old": [], "new": []} for k in kinds}
    bandwidth: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        membw = membw_program(tmp) if args.membw else None
        for i in range(args.pairs):
            if membw and i % 4 == 0:
                bw = two_thread_bandwidth(membw)
            bandwidth.append(bw if membw else 0.0)
            for kind in kinds:
                order = (("old", old), ("new", new)) if i % 2 == 0 else (("new", new), ("old", old))
                for name, worker in order:
                    got[kind][name].append(worker.run(kind))
            line = " | ".join(f"{k} old {got[k]['old'][-1]:.1f} new {got[k]['new'][-1]:.1f}" for k in kinds)
            print(f"pair {i + 1}: {line}" + (f" | membw {bw:.1f} GB/s" if membw else ""), flush=True)
    old.close()
    new.close()
    for kind in kinds:
        print(summary(f"{kind}{args.tg if kind == 'tg' else args.pp}", got[kind]["old"], got[kind]["new"]))
        if membw and max(bandwidth) > 1.3 * min(bandwidth):  # two phases: split halfway between
            cut = (max(bandwidth) + min(bandwidth)) / 2
            for label, keep in ((f"  membw over {cut:.0f} GB/s", lambda b: b > cut),
                                (f"  membw under {cut:.0f} GB/s", lambda b: b <= cut)):
                idx = [i for i, b in enumerate(bandwidth) if keep(b)]
                print(summary(label, [got[kind]["old"][i] for i in idx], [got[kind]["new"][i] for i in idx]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
