#!/usr/bin/env python3
"""How far a change of rounding alone moves Gemma 3 270M's logits: two source trees (each built in
place, as tools/ab_builds.py takes them) read the 23 chunks of 512 tokens in
tests/data/gemma3_270m_references.npz; at every position, the gap between the first tree's two best
tokens is measured again in the second tree's logits. Prints the spread of that change and how
many positions swap their two best tokens. The tests' NEAR_TIE (tests/test_gemma3_270m.py) is read
against it: a split between engines is rounding when its gap lies within what rounding moves.

    python tools/rounding_spread.py OLD_TREE NEW_TREE [--threads 2]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

REFERENCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                          "gemma3_270m_references.npz")

# Run in a process per tree (each imports its own pyllm): with ids, the logits at those token ids;
# without, each position's two best ids and their logits.
WORKER = r'''
import sys
import numpy as np
tree, refs_path, out, threads = sys.argv[1:5]
ids_path = sys.argv[5] if len(sys.argv) > 5 else None
sys.path.insert(0, tree)
from pyllm import Model
from pyllm.fetch import GEMMA3_270M, model_path
assert __import__("pyllm").__file__.startswith(tree)
with np.load(refs_path) as z:
    chunks = z["chunks"]
ids = np.load(ids_path)["ids"] if ids_path else None
found, logits, pos = [], [], 0
with Model(model_path(GEMMA3_270M.name, quiet=True), n_ctx=1024, n_threads=int(threads)) as m:
    for chunk in chunks:
        lg = m.logits(chunk.tolist())
        if ids is None:
            top = np.stack([np.argpartition(row, -2)[-2:] for row in lg])
            vals = np.take_along_axis(lg, top, -1)
            top = np.where(vals[:, :1] >= vals[:, 1:], top, top[:, ::-1])
            found.append(top)
        else:
            top = ids[pos:pos + len(lg)]
        logits.append(np.take_along_axis(lg, top, -1))
        pos += len(lg)
np.savez(out, ids=np.concatenate(found) if found else ids, logits=np.concatenate(logits))
'''


def run(tree: str, out: str, threads: int, ids: str | None = None) -> None:
    """One tree's pass over the chunks, in its own process."""
    cmd = [sys.executable, "-c", WORKER, os.path.abspath(tree), REFERENCES, out, str(threads)] + ([ids] if ids else [])
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old_tree")
    ap.add_argument("new_tree")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old, new = os.path.join(tmp, "old.npz"), os.path.join(tmp, "new.npz")
        run(args.old_tree, old, args.threads)
        run(args.new_tree, new, args.threads, ids=old)
        a, b = np.load(old)["logits"], np.load(new)["logits"]
    gap_old, gap_new = a[:, 0] - a[:, 1], b[:, 0] - b[:, 1]
    change = np.abs(gap_new - gap_old)
    swapped = gap_new < 0
    pct = np.percentile(change, [50, 90, 99, 99.9])
    print(f"{len(change)} positions; change of the gap between the old tree's two best tokens: "
          f"median {pct[0]:.3f}, 90% {pct[1]:.3f}, 99% {pct[2]:.3f}, 99.9% {pct[3]:.3f}, max {change.max():.3f}")
    print(f"the two swap at {int(swapped.sum())} positions; the largest old gap among them "
          f"{gap_old[swapped].max() if swapped.any() else 0.0:.3f}")


if __name__ == "__main__":
    main()
