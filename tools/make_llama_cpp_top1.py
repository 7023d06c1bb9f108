#!/usr/bin/env python3
"""Make tests/data/smollm2_llama_cpp_top1.npz: llama.cpp's greedy predictions over the text of
tests/data/smollm2_hf_logits.npz (text_ids), in independent chunks of 512 tokens, for the shipped
Q4_1 GGUF and for the Q8_0 GGUF that llama.cpp's quantizer makes from it
(tools/make_bench_ggufs.py). The tests hold pyllm's quantized models to agreeing with the float32
model at least as often as llama.cpp's do, give or take sampling noise.

    pip install llama-cpp-python          # a reference, not a pyllm dependency
    python tools/make_llama_cpp_top1.py Q4_1.gguf Q8_0.gguf tests/data/smollm2_llama_cpp_top1.npz
"""
import argparse
import os

import llama_cpp
import numpy as np

CHUNK = 512
HF_FIXTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "smollm2_hf_logits.npz")


def top1(gguf: str, ids: np.ndarray) -> np.ndarray:
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=CHUNK, n_batch=CHUNK, n_ubatch=CHUNK, n_threads=2,
                          logits_all=True, verbose=False)
    preds = []
    for start in range(0, len(ids) // CHUNK * CHUNK, CHUNK):
        llm.reset()
        llm.eval([int(t) for t in ids[start:start + CHUNK]])
        preds.append(np.asarray(llm.scores[:CHUNK]).argmax(-1).astype(np.int32))
        print(f"{os.path.basename(gguf)}: {start + CHUNK}/{len(ids)} tokens", flush=True)
    return np.concatenate(preds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("q4_1_gguf")
    ap.add_argument("q8_0_gguf")
    ap.add_argument("output")
    args = ap.parse_args()
    with np.load(HF_FIXTURE) as z:
        ids = z["text_ids"]
    np.savez_compressed(args.output, chunk=CHUNK, q4_1=top1(args.q4_1_gguf, ids),
                        q8_0=top1(args.q8_0_gguf, ids), llama_cpp_version=llama_cpp.__version__)


if __name__ == "__main__":
    main()
