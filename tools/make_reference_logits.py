#!/usr/bin/env python3
"""Make tests/data/smollm2_hf_logits.npz: Hugging Face transformers' float32 logits for
SmolLM2-135M-Instruct, loaded from the same GGUF pyllm converts (transformers dequantizes it).

    pip install torch transformers gguf          # reference libraries, not pyllm dependencies
    python tools/make_reference_logits.py SmolLM2-135M-Instruct.Q4_1.gguf tests/data/smollm2_hf_logits.npz

Stored per prompt i: ids_i (token ids from the GGUF's tokenizer as transformers builds it),
logits_i_cols (every position, the columns in `cols`: every 8th id plus each position's top 64),
logits_i_last (the full last row). Also text_ids: tests/data/shakespeare-tail.txt tokenized
without special tokens, for agreement tests over a few thousand positions.
"""
import argparse
import os

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is Paris, and the capital of Germany is",
    "<|im_start|>user\nWrite a haiku about autumn leaves.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Hi",
    "In 1969, 3 astronauts flew 384,400 km to the Moon; 2 of them walked on it.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("output")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    torch.set_num_threads(2)

    ids_list, logits_list = [], []
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok(p)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            ids_list.append(np.array(ids, dtype=np.int32))
            logits_list.append(logits)
    vocab = logits_list[0].shape[1]
    top = [np.argsort(-lg, axis=1)[:, :64].ravel() for lg in logits_list]
    cols = np.unique(np.concatenate([np.arange(0, vocab, 8)] + top)).astype(np.int64)

    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "tests", "data", "shakespeare-tail.txt"), encoding="utf-8") as f:
        text_ids = np.array(tok(f.read(), add_special_tokens=False)["input_ids"], dtype=np.int32)

    out = {"prompts": np.array(PROMPTS), "cols": cols, "text_ids": text_ids,
           "meta": np.array(f"transformers {transformers.__version__}, torch {torch.__version__}, {name}")}
    for i, (ids, lg) in enumerate(zip(ids_list, logits_list)):
        out[f"ids_{i}"] = ids
        out[f"logits_{i}_cols"] = lg[:, cols].astype(np.float32)
        out[f"logits_{i}_last"] = lg[-1].astype(np.float32)
        print(f"prompt {i}: {len(ids)} tokens, next: {tok.decode([int(lg[-1].argmax())])!r}")
    np.savez_compressed(args.output, **out)
    print(f"text_ids: {len(text_ids)} tokens; wrote {args.output} ({os.path.getsize(args.output) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
