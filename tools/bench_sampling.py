#!/usr/bin/env python3
"""Per-token cost of the Python sampler, before and after top-k-off sampling sorted only the head
of the vocabulary, on real logits (ms per token, one core).

    python tools/bench_sampling.py [weights.bin ...] [--tokens 64] [--reps 5]

Without arguments: SmolLM2-135M-Instruct (49,152 tokens) and Gemma 3 270M (262,144) from the model
cache. The logits are those of a few prompts continued by sampling at temperature 1 without
truncation (so the distributions are the model's, flat ones included). "before" is the candidate
chain the Sampler ran until then (top-k by argpartition, or a sort of the whole vocabulary when k
is 0, then top_p, min_p, draw), "after" the Sampler; their runs alternate and each figure is the median over
--reps of the mean over all logits. Both must pick the same tokens from the same seed; the tool
counts any difference. The last column times token_logprobs(logits, token, 20) (OpenAI's largest
top_logprobs).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyllm import Model  # noqa: E402
from pyllm.fetch import cache_dir  # noqa: E402
from pyllm.sampling import Sampler, SamplingParams, draw, min_p, token_logprobs, top_p  # noqa: E402

PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):", "Write a poem about the sea.\n"]
SETTINGS = [  # (label, options); the rest are SamplingParams' defaults
    ("defaults (top-k 40, top-p 0.95, min-p 0.05, temp 0.8)", {}),
    ("top-k 0, top-p 0.9, min-p 0", {"top_k": 0, "top_p": 0.9, "min_p": 0.0}),
    ("top-k 0, top-p 0.95, min-p 0", {"top_k": 0, "top_p": 0.95, "min_p": 0.0}),
    ("top-k 0, top-p 1.0, min-p 0", {"top_k": 0, "top_p": 1.0, "min_p": 0.0}),
    ("top-k 0, top-p 1.0, min-p 0.05", {"top_k": 0, "top_p": 1.0, "min_p": 0.05}),
    ("top-k 0, top-p 0.95, min-p 0.05", {"top_k": 0}),
    ("OpenAI defaults (top-k 0, top-p 1, min-p 0, temp 1)",
     {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "temperature": 1.0}),
]


def top_k_before(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k as it was: argpartition for 0 < k < vocab, else a stable sort of the whole vocabulary."""
    n = logits.shape[0]
    ids = np.argpartition(logits, n - k)[n - k:] if 0 < k < n else np.arange(n)
    order = np.argsort(-logits[ids], kind="stable")
    return ids[order], logits[ids[order]]


class ChainBefore:
    """The Sampler as it was: the candidate chain on the old top-k's sorted list (no penalties here)."""

    def __init__(self, params: SamplingParams):
        self.params, self.rng = params, np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history: list) -> int:
        logits = np.array(logits, dtype=np.float32)
        top = logits.max()
        assert not np.isnan(top) and top > -np.inf
        ids, cand = top_k_before(logits, self.params.top_k)
        if self.params.top_p < 1.0:
            ids, cand = top_p(ids, cand, self.params.top_p)
        if self.params.min_p > 0.0:
            ids, cand = min_p(ids, cand, self.params.min_p)
        return draw(ids, cand, self.params.temperature, self.rng)


def collect_logits(path: str, tokens: int) -> np.ndarray:
    """Logits of the prompts continued by untruncated sampling at temperature 1, one row per token."""
    model = Model(path)
    rows = []
    per_prompt = -(-tokens // len(PROMPTS))
    for i, prompt in enumerate(PROMPTS):
        session = model.session(n_ctx=64 + per_prompt)
        history = model.tokenizer.encode(prompt)
        logits = session.prefill(history)
        sampler = Sampler(SamplingParams(seed=i, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0))
        for _ in range(per_prompt):
            rows.append(np.array(logits, dtype=np.float32))
            history.append(sampler(logits, history))
            logits = session.eval([history[-1]])
        session.close()
    return np.stack(rows[:tokens])


def mean_ms(make, rows: np.ndarray) -> tuple[float, list[int]]:
    """Mean ms per token of a fresh sampler over all rows, and the tokens it picked."""
    sampler = make()
    t0 = time.perf_counter()
    picked = [sampler(row, []) for row in rows]
    return (time.perf_counter() - t0) / len(rows) * 1e3, picked


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="weights.bin files (default: SmolLM2 Q4_1 and Gemma 3 Q4_K_M)")
    ap.add_argument("--tokens", type=int, default=64, help="logits rows per model")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    models = args.models or [os.path.join(cache_dir(), f) for f in
                             ("SmolLM2-135M-Instruct.q4_1.v1.4.bin", "gemma-3-270m.q4_k_m.v1.4.bin")]
    print("| vocabulary | settings | before ms/token | after ms/token | speed-up | same tokens |")
    print("|---|---|---|---|---|---|")
    for path in models:
        rows = collect_logits(path, args.tokens)
        vocab = rows.shape[1]
        for label, options in SETTINGS:
            params = SamplingParams(seed=1234, **options)
            before, after, same = [], [], True
            for _ in range(args.reps):
                t_b, tok_b = mean_ms(lambda: ChainBefore(params), rows)
                t_a, tok_a = mean_ms(lambda: Sampler(params), rows)
                before.append(t_b)
                after.append(t_a)
                same = same and tok_a == tok_b
            b, a = statistics.median(before), statistics.median(after)
            print(f"| {vocab:,} | {label} | {b:.3f} | {a:.3f} | {b / a:.1f}x | {'yes' if same else 'NO'} |",
                  flush=True)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            for row in rows:
                token_logprobs(row, int(np.argmax(row)), 20)
            times.append((time.perf_counter() - t0) / len(rows) * 1e3)
        print(f"| {vocab:,} | token_logprobs(logits, token, 20) | | {statistics.median(times):.3f} | | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
