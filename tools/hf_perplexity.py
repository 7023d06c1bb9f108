#!/usr/bin/env python3
"""Perplexity of a GGUF model under Hugging Face transformers (float32), by llama.cpp's method:
non-overlapping chunks of n_ctx tokens, the second half of each chunk scored. Produces the
transformers reference number that tests/test_perplexity.py compares pyllm's F32 result with.

    pip install torch transformers gguf         # reference libraries, not pyllm dependencies
    python tools/hf_perplexity.py SmolLM2-135M-Instruct.Q4_1.gguf tests/data/shakespeare-tail.txt
"""
import argparse
import math
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=512)
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ids = tok(open(args.text, encoding="utf-8").read(), add_special_tokens=False)["input_ids"]
    n_chunks, first = len(ids) // args.ctx, args.ctx // 2
    nll, count = 0.0, 0
    with torch.no_grad():
        for c in range(n_chunks):
            chunk = torch.tensor([ids[c * args.ctx:(c + 1) * args.ctx]])
            logp = torch.log_softmax(model(chunk).logits[0].double(), dim=-1)
            targets = chunk[0, first + 1:]
            nll -= logp[first:-1].gather(1, targets[:, None]).sum().item()
            count += len(targets)
            print(f"[{c + 1}/{n_chunks}] {math.exp(nll / count):.4f}", flush=True)
    print(f"{len(ids)} tokens, {n_chunks} chunks of {args.ctx}: PPL = {math.exp(nll / count):.4f}")


if __name__ == "__main__":
    main()
