#!/usr/bin/env python3
"""Convert a model file to pyllm's weights.bin.

    python tools/convert.py model.gguf weights.bin [--type f32|f16|q8_0|q4_0|q4_1]

Without --type, tensors keep their type (norms are always f32); with it, every matrix is
re-encoded to that type. The output is written to a temporary file and renamed at the end.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyllm.convert import convert  # noqa: E402
from pyllm.errors import PyllmError  # noqa: E402
from pyllm.quant import TYPES  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="model file to read (GGUF v2/v3, llama architecture)")
    ap.add_argument("output", help="weights.bin to write")
    ap.add_argument("--type", choices=list(TYPES), help="re-encode every matrix to this type")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = ap.parse_args()
    try:
        convert(args.source, args.output, args.type, progress=not args.quiet)
    except (PyllmError, ValueError) as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
