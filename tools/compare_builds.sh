#!/bin/sh
# Measure a change: build git revision REV (e.g. HEAD~1) in a temporary worktree and alternate
# tools/bench.py between that build and this checkout's, ROUNDS times, so that drift in machine
# speed hits both alike. Each tools/bench.py imports the pyllm of its own tree.
#
#     tools/compare_builds.sh HEAD~1 model.bin [ROUNDS] [bench.py options...]
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 REV weights.bin [ROUNDS] [bench.py options...]" >&2
    exit 2
fi
rev=$1 model=$2
shift 2
rounds=2
if [ $# -gt 0 ]; then rounds=$1; shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
old=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$old" >/dev/null 2>&1 || true' EXIT
git -C "$here" worktree add --detach -q "$old" "$rev"
(cd "$old" && "$python" setup.py -q build_ext --inplace >/dev/null 2>&1) || { echo "$0: cannot build $rev" >&2; exit 1; }
(cd "$here" && "$python" setup.py -q build_ext --inplace >/dev/null 2>&1) || { echo "$0: cannot build the checkout" >&2; exit 1; }
for i in $(seq "$rounds"); do
    for tree in "$old" "$here"; do
        label=$([ "$tree" = "$here" ] && echo "checkout" || echo "$rev")
        echo "== $label, round $i"
        "$python" "$tree/tools/bench.py" "$model" "$@" | grep '^|' | tail -n 1
    done
done
