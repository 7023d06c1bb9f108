"""Convert a model to pyllm's weights.bin.

    pyllm convert SOURCE weights.bin [--type TYPE] [--tokenizer tokenizer.bin]
    (or python -m pyllm.convert ...)

SOURCE is a GGUF file, a Hugging Face model directory (config.json + safetensors) or a llama2.c
checkpoint (with its tokenizer.bin beside it or given by --tokenizer), of a family pyllm runs.
Without --type, tensors keep their type where pyllm runs it (norms are always f32) and the
converter reports every tensor it re-encodes and why; with --type, every matrix is re-encoded to
that type (f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k; rows that do not fill its blocks
fall back as llama.cpp's quantizer does), or to llama.cpp's Q4_K_M mixture (q4_k_m: Q6_K for the
classifier and some attn_v and ffn_down layers, Q4_K elsewhere; see pyllm/convert/recipe.py). The
output is written to a temporary file and renamed at the end.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import PyllmError, describe
from . import convert
from .recipe import OUT_TYPES

DESCRIPTION = __doc__.split("\n\n")[0]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The command's arguments: source, output, type, llama2.c tokenizer, quiet."""
    ap.add_argument("source", help="GGUF file, Hugging Face model directory or llama2.c checkpoint")
    ap.add_argument("output", help="weights.bin to write")
    ap.add_argument("--type", choices=list(OUT_TYPES),
                    help="re-encode every matrix to this type, or to llama.cpp's Q4_K_M mixture (q4_k_m)")
    ap.add_argument("--tokenizer", help="llama2.c tokenizer.bin (default: the one beside the checkpoint)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    """The command, on parsed arguments; returns the exit status."""
    try:
        convert(args.source, args.output, args.type, progress=not args.quiet, tokenizer=args.tokenizer)
    except (PyllmError, ValueError, OSError) as exc:  # OSError: the output cannot be written
        print(f"pyllm convert: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pyllm convert: interrupted; {args.output} was not written", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pyllm.convert`: the same command as `pyllm convert`."""
    ap = argparse.ArgumentParser(prog="python -m pyllm.convert", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run(ap.parse_args(argv))
