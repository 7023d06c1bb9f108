#!/usr/bin/env python3
"""Measure a change: prompt (pp512) and decode (tg128) speed of two source trees, each in its own
process, the trees alternating (ABBA order) so that drift in machine speed hits both alike.

    python tools/ab_builds.py OLD_TREE NEW_TREE weights.bin [--rounds 12] [--kernels auto] [-t 2]
                              [--new-model new.bin]

Each tree must be built in place (`python setup.py build_ext --inplace`; tools/compare_builds.sh
shows how to check out a revision into a temporary worktree). Each process loads the model, warms
up, and reports the median of 3 runs of each; the script prints every round and the medians and
ranges, and in how many paired rounds the new tree decoded faster. With --clock cpu, speeds are per
second of the process's CPU time, not of the wall clock. With --new-model the new tree
runs another file (the same model converted by the new tree, when the old one cannot read it: a
weight type it does not run).
"""
import argparse
import os
import statistics
import subprocess
import sys

MEASURE = r'''
import statistics, sys, time
tree, path, kernels, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
clock = time.process_time if sys.argv[5] == "cpu" else time.perf_counter
sys.path.insert(0, tree)
import pyllm
assert pyllm.__file__.startswith(tree), f"imported {pyllm.__file__}, not the tree's pyllm"
m = pyllm.Model(path, n_threads=threads, n_ctx=1024, kernels=kernels)
prompt = [100 + i % 1000 for i in range(512)]
def tg():
    m.reset(); t = 1
    for _ in range(128): t = int(m.eval([t]).argmax())
def pp():
    m.reset(); m.eval(prompt)
tg(); pp()
decode, read = [], []
for _ in range(3):
    t0 = clock(); tg(); decode.append(128 / (clock() - t0))
    t0 = clock(); pp(); read.append(512 / (clock() - t0))
print(statistics.median(decode), statistics.median(read))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="source tree of the old build")
    ap.add_argument("new", help="source tree of the new build")
    ap.add_argument("model", help="weights.bin (readable by both builds)")
    ap.add_argument("--new-model", help="the new tree's weights.bin, if not the same file")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--kernels", default="auto")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: the process's CPU time, which other processes on a busy machine do not "
                         "inflate (use with -t 1: with more threads it counts barrier spinning)")
    args = ap.parse_args()
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    models = {"old": args.model, "new": args.new_model or args.model}
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for k in order:
            out = subprocess.run([sys.executable, "-c", MEASURE, trees[k], models[k], args.kernels,
                                  str(args.threads), args.clock], capture_output=True, text=True)
            if out.returncode:
                print(f"{k} tree failed:\n{out.stderr}", file=sys.stderr)
                return 1
            tg, pp = map(float, out.stdout.split())
            got[k].append((tg, pp))
        (ot, op), (nt, np_) = got["old"][-1], got["new"][-1]
        print(f"round {r + 1}: tg128 old {ot:.1f} new {nt:.1f} | pp512 old {op:.1f} new {np_:.1f}", flush=True)
    for k, rows in got.items():
        tg, pp = [t for t, _ in rows], [p for _, p in rows]
        print(f"{k}: tg128 median {statistics.median(tg):.1f} [{min(tg):.1f}-{max(tg):.1f}]  "
              f"pp512 median {statistics.median(pp):.1f} [{min(pp):.1f}-{max(pp):.1f}]")
    faster = sum(n[0] > o[0] for o, n in zip(got["old"], got["new"]))
    print(f"tg128: new faster in {faster} of {args.rounds} paired rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
