"""Pick the JSON Schemas of tests/data/schemas from a checkout of guidance-ai/jsonschemabench.

    python tools/pick_schemas.py /path/to/jsonschemabench [--out tests/data/schemas]

From four of its collections (function calling, Kubernetes, JSON Schema Store, Snowplow), the
schemas of at most MAX_BYTES that parse as JSON, in name order, taken evenly spaced: COUNTS of each.
The files are copied byte for byte; tests/data/schemas/SOURCES.md records where they come from.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

COUNTS = {"Glaiveai2K": 40, "Kubernetes": 25, "JsonSchemaStore": 25, "Snowplow": 25}
MAX_BYTES = 2500


def pick(root: str, collection: str, count: int) -> list[str]:
    """`count` evenly spaced small schema files of one collection, in name order."""
    folder = os.path.join(root, "data", collection)
    names = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.getsize(path) > MAX_BYTES:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                if not isinstance(json.load(f), dict):
                    continue
        except ValueError:
            continue
        names.append(path)
    step = max(len(names) / count, 1.0)
    return [names[int(i * step)] for i in range(min(count, len(names)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="a checkout of guidance-ai/jsonschemabench")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "schemas"))
    args = ap.parse_args()
    for collection, count in COUNTS.items():
        os.makedirs(os.path.join(args.out, collection), exist_ok=True)
        chosen = pick(args.root, collection, count)
        for path in chosen:
            shutil.copyfile(path, os.path.join(args.out, collection, os.path.basename(path)))
        print(f"{collection}: {len(chosen)}")


if __name__ == "__main__":
    main()
