#!/usr/bin/env python3
"""Make tests/data/gemma3_270m_references.npz: Hugging Face transformers' float32 model (loading the
Gemma 3 270M Q4_K_M GGUF, dequantized) and llama.cpp (the same GGUF) on the perplexity text, as the
references pyllm's Gemma 3 is held to.

    python tools/make_gemma3_references.py GGUF OUT.npz [--llama-cpp ~/.cache/llama.cpp-ref]

The text is tests/data/shakespeare-tail.txt (the last 40,000 characters of the shared Shakespeare
text), tokenized by transformers' tokenizer from the GGUF with BOS in front, then cut the way
llama.cpp's llama-perplexity cuts it: chunks of 512 tokens, the first of each replaced by BOS.
Stored:
- `chunks` (n, 512): the token ids; `text_ids`: the text's ids without BOS.
- `hf_top1`, `llama_cpp_top1` (n, 512): each engine's argmax at every position, chunks independent.
- `hf_logits_cols` (64, 256) at columns `cols`, and `hf_logits_last` (262144,) of position 63, of the
  first chunk: float32 logits for an exactness check of a float32 conversion.
- `greedy_prompt` (BOS + the first 600 text tokens, past the 512-token window) and the 32 greedy
  tokens after it from each engine: `hf_greedy`, `llama_cpp_greedy`.
- Seven more greedy prompts past the window, BOS + 580 to 940 text tokens from seven places spread
  over the text (the first prompt is prompt 0): `greedy_prompts` (all of them end to end),
  `greedy_prompt_lengths`, and each engine's 32 tokens per prompt, `hf_greedy_all` and
  `llama_cpp_greedy_all` (8, 32).
- `llama_cpp_forced_top1` (8, 32): llama.cpp's argmax at each of those 32 positions when it reads
  transformers' greedy text (prompt + `hf_greedy_all`), so its agreement with transformers past
  the window counts every position, not only those before the first near tie it takes otherwise.
Needs torch, transformers (with accelerate and gguf) and llama.cpp built by
../shared/tools/build-llama-cpp.sh; none of them are pyllm dependencies.
"""
import argparse
import os
import subprocess
import tempfile

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = os.path.join(HERE, "..", "tests", "data", "shakespeare-tail.txt")
CHUNK, GREEDY_PROMPT, GREEDY_TOKENS, LOGIT_ROWS = 512, 600, 32, 64
MORE_GREEDY_PROMPTS = 7


def greedy_prompts(ids: np.ndarray) -> list[np.ndarray]:
    """BOS + the first GREEDY_PROMPT text tokens, then MORE_GREEDY_PROMPTS prompts of BOS + 520 + 60 k
    text tokens starting at k / 7 of the way through the text (k = 1 .. 7): all past the window."""
    text = ids[1:]
    prompts = [ids[: GREEDY_PROMPT + 1]]
    for k in range(1, MORE_GREEDY_PROMPTS + 1):
        start, length = k * (len(text) - 1000) // MORE_GREEDY_PROMPTS, 520 + 60 * k
        prompts.append(np.concatenate([ids[:1], text[start:start + length]]).astype(np.int32))
    return prompts


def build_reference_program(llama_cpp: str, tmp: str) -> str:
    """tools/llama_cpp_ref.c compiled against llama.cpp's library."""
    exe = os.path.join(tmp, "llama_cpp_ref")
    lib = os.path.join(llama_cpp, "build", "bin")
    subprocess.run(["cc", "-O2", os.path.join(HERE, "llama_cpp_ref.c"), "-I", os.path.join(llama_cpp, "include"),
                    "-I", os.path.join(llama_cpp, "ggml", "include"), "-L", lib, "-lllama", f"-Wl,-rpath,{lib}",
                    "-o", exe], check=True)
    return exe


def llama_cpp(exe: str, mode: str, gguf: str, ids: np.ndarray, count: int, tmp: str) -> np.ndarray:
    """The reference program's output on `ids` (top1: argmax per position; greedy: count tokens)."""
    path = os.path.join(tmp, "ids.txt")
    np.savetxt(path, ids.reshape(-1), fmt="%d")
    out = subprocess.run([exe, mode, gguf, path, str(count), "2"], check=True, capture_output=True, text=True).stdout
    return np.array(out.split(), dtype=np.int32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("output")
    ap.add_argument("--llama-cpp", default=os.path.expanduser("~/.cache/llama.cpp-ref"))
    args = ap.parse_args()
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    with open(TEXT, encoding="utf-8") as f:
        text_ids = np.array(tok(f.read(), add_special_tokens=False)["input_ids"], dtype=np.int32)
    bos = tok.bos_token_id
    ids = np.concatenate([[bos], text_ids]).astype(np.int32)
    chunks = ids[: len(ids) // CHUNK * CHUNK].reshape(-1, CHUNK).copy()
    chunks[:, 0] = bos

    hf_top1 = []
    cols = np.random.default_rng(0).choice(model.config.vocab_size, 256, replace=False)
    with torch.no_grad():
        for i, chunk in enumerate(chunks):
            logits = model(torch.tensor(chunk[None], dtype=torch.long)).logits[0].float().numpy()
            hf_top1.append(logits.argmax(-1).astype(np.int32))
            if i == 0:
                logits_cols, logits_last = logits[:LOGIT_ROWS, cols].copy(), logits[LOGIT_ROWS - 1].copy()
            print(f"transformers: chunk {i + 1}/{len(chunks)}", flush=True)
        prompts = greedy_prompts(ids)
        hf_greedy = np.stack([
            model.generate(torch.tensor(p[None], dtype=torch.long), max_new_tokens=GREEDY_TOKENS,
                           do_sample=False, min_new_tokens=GREEDY_TOKENS)[0, len(p):].numpy() for p in prompts])

    with tempfile.TemporaryDirectory() as tmp:
        exe = build_reference_program(args.llama_cpp, tmp)
        cpp_top1 = llama_cpp(exe, "top1", args.gguf, chunks, CHUNK, tmp).reshape(chunks.shape)
        cpp_greedy = np.stack([llama_cpp(exe, "greedy", args.gguf, p, GREEDY_TOKENS, tmp) for p in prompts])
        forced = [np.concatenate([p, h[:-1]]).astype(np.int32) for p, h in zip(prompts, hf_greedy)]
        cpp_forced = np.stack([llama_cpp(exe, "top1", args.gguf, f, len(f), tmp)[-GREEDY_TOKENS:] for f in forced])
    hf_top1 = np.stack(hf_top1)
    same = [int(np.cumprod(c == h).sum()) for c, h in zip(cpp_greedy, hf_greedy)]
    print(f"top-1 agreement of llama.cpp with transformers f32: {(cpp_top1 == hf_top1).mean():.4f} "
          f"over {hf_top1.size} positions; greedy equal for {same} tokens of {GREEDY_TOKENS}; "
          f"on transformers' greedy text {int((cpp_forced == hf_greedy).sum())} of {hf_greedy.size}")
    np.savez_compressed(args.output, chunks=chunks, text_ids=text_ids, hf_top1=hf_top1, llama_cpp_top1=cpp_top1,
                        cols=cols.astype(np.int32), hf_logits_cols=logits_cols, hf_logits_last=logits_last,
                        greedy_prompt=prompts[0], hf_greedy=hf_greedy[0].astype(np.int32),
                        llama_cpp_greedy=cpp_greedy[0], greedy_prompts=np.concatenate(prompts),
                        greedy_prompt_lengths=np.array([len(p) for p in prompts], dtype=np.int32),
                        hf_greedy_all=hf_greedy.astype(np.int32), llama_cpp_greedy_all=cpp_greedy,
                        llama_cpp_forced_top1=cpp_forced,
                        transformers_version=transformers.__version__)


if __name__ == "__main__":
    main()
