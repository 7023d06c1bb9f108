#!/usr/bin/env python3
"""Convert a model to pyllm's weights.bin.

    python tools/convert.py SOURCE weights.bin [--type f32|f16|q8_0|q4_0|q4_1] [--tokenizer tokenizer.bin]

SOURCE is a GGUF file (llama, qwen2), a Hugging Face model directory (config.json + safetensors;
llama, mistral, qwen2) or a llama2.c checkpoint (with its tokenizer.bin beside it or given by
--tokenizer). Without --type, tensors keep their type where pyllm runs it (norms are always f32)
and the converter reports every tensor it re-encodes and why; with --type, every matrix is
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
    ap.add_argument("source", help="GGUF file, Hugging Face model directory or llama2.c checkpoint")
    ap.add_argument("output", help="weights.bin to write")
    ap.add_argument("--type", choices=list(TYPES), help="re-encode every matrix to this type")
    ap.add_argument("--tokenizer", help="llama2.c tokenizer.bin (default: the one beside the checkpoint)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = ap.parse_args()
    try:
        convert(args.source, args.output, args.type, progress=not args.quiet, tokenizer=args.tokenizer)
    except (PyllmError, ValueError) as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"convert: interrupted; {args.output} was not written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
