#!/usr/bin/env python3
"""Tokenizer speed: pyllm's SmolLM2 tokenizer against Hugging Face `tokenizers` (if installed) on
about 1 MB of English prose (the public-domain tiny-Shakespeare head, repeated to 1 MB).

    python tools/bench_tokenizer.py [TEXT_FILE] [--reps 3]
    python tools/bench_tokenizer.py --tokenizer tests/data/gemma3-tokenizer.gguf.xz   # another vocabulary
    python tools/bench_tokenizer.py --worst     # one "word" of random letters, no spaces, 10 kB to 1 MB

pyllm is timed on a fresh tokenizer (its word cache empty), so the first pass pays for building
the pre-tokenizer's Unicode classes and every BPE merge; `tokenizers` encodes the text in one call.
"""
import argparse
import gzip
import lzma
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyllm.tokenizer import Tokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TEXT = os.path.join(HERE, "..", "..", "shared", "data", "shakespeare-head.txt")
TOKENIZER = os.path.join(HERE, "..", "tests", "data", "smollm2-tokenizer.json.gz")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("text", nargs="?", default=DEFAULT_TEXT)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokenizer", default=TOKENIZER,
                    help="any file Tokenizer.from_file reads, .gz or .xz compressed or not (default: SmolLM2's "
                         "tokenizer.json; Hugging Face tokenizers is compared on tokenizer.json files only)")
    ap.add_argument("--worst", action="store_true",
                    help="time one word of random letters (no spaces) at growing sizes instead")
    args = ap.parse_args()
    if args.worst:
        return worst_case()
    with open(args.text, encoding="utf-8") as f:
        base = f.read()
    text = (base * (1_000_000 // len(base) + 1))[:1_000_000]
    mb = len(text.encode("utf-8")) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, os.path.basename(args.tokenizer).removesuffix(".gz").removesuffix(".xz"))
        opener = {".gz": gzip.open, ".xz": lzma.open}.get(os.path.splitext(args.tokenizer)[1], open)
        with opener(args.tokenizer, "rb") as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        cold, warm = [], []
        for _ in range(args.reps):
            tok = Tokenizer.from_file(path)
            t0 = time.perf_counter()
            ids = tok.encode(text)
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tok.encode(text)
            warm.append(time.perf_counter() - t0)
        print(f"text: {mb:.2f} MB, {len(ids)} tokens")
        print(f"pyllm, fresh tokenizer: {mb / statistics.median(cold):.2f} MB/s")
        print(f"pyllm, second pass:     {mb / statistics.median(warm):.2f} MB/s")
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError:
            print("Hugging Face tokenizers not installed: no comparison")
            return 0
        if not path.endswith(".json"):
            return 0
        hf = HFTokenizer.from_file(path)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            hf_ids = hf.encode(text).ids
            times.append(time.perf_counter() - t0)
        print(f"HF tokenizers, one call: {mb / statistics.median(times):.2f} MB/s (same ids: {hf_ids == ids})")
        print(f"ratio pyllm fresh / HF: {statistics.median(times) / statistics.median(cold):.2f}x")
    return 0


def worst_case() -> int:
    """BPE's worst case: pre-tokenization leaves a whole text of letters as one word to merge.
    Prints seconds and microseconds per character at each size (linear growth keeps the latter flat)."""
    import random
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        with gzip.open(TOKENIZER, "rb") as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        try:
            from tokenizers import Tokenizer as HFTokenizer
            hf = HFTokenizer.from_file(path)
        except ImportError:
            hf = None
        rng = random.Random(0)
        print("| characters | pyllm s | pyllm us/char |" + (" HF tokenizers s | same ids |" if hf else ""))
        print("|---|---|---|" + ("---|---|" if hf else ""))
        for n in (10_000, 100_000, 300_000, 1_000_000):
            text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
            tok = Tokenizer.from_file(path)
            t0 = time.perf_counter()
            ids = tok.encode(text)
            took = time.perf_counter() - t0
            row = f"| {n} | {took:.2f} | {took / n * 1e6:.2f} |"
            if hf:
                t0 = time.perf_counter()
                hf_ids = hf.encode(text).ids
                row += f" {time.perf_counter() - t0:.2f} | {hf_ids == ids} |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
