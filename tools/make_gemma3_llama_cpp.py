#!/usr/bin/env python3
"""Make tests/data/gemma3_llama_cpp_greedy.json: llama.cpp's greedy run of Gemma 3 270M Q4_K_M on a
prompt longer than its 512-position sliding window (the first 2,600 characters of
tests/data/shakespeare-tail.txt, ~700 tokens): the prompt's ids by llama.cpp's tokenizer, llama.cpp's
argmax after every prompt position, and 32 greedy tokens with each step's top-two logit margin.
tests/test_gemma3.py holds pyllm to them.

    python tools/make_gemma3_llama_cpp.py gemma-3-270m-q4_k_m.gguf [LLAMA_CPP_DIR]

LLAMA_CPP_DIR (default ~/.cache/llama.cpp-ref) is a llama.cpp tree built with CMake (build/bin holds
libllama); tools/llama_cpp_greedy.c is compiled against it.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = os.path.join(HERE, "..", "tests", "data", "shakespeare-tail.txt")
OUT = os.path.join(HERE, "..", "tests", "data", "gemma3_llama_cpp_greedy.json")
PROMPT_CHARS, N_PREDICT, N_CTX = 2600, 32, 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("llama_cpp", nargs="?", default=os.path.expanduser("~/.cache/llama.cpp-ref"))
    args = ap.parse_args()
    lib = os.path.join(args.llama_cpp, "build", "bin")
    with open(TEXT, encoding="utf-8") as f:
        prompt = f.read()[:PROMPT_CHARS]
    with tempfile.TemporaryDirectory() as tmp:
        exe, prompt_file = os.path.join(tmp, "greedy"), os.path.join(tmp, "prompt.txt")
        subprocess.run(["cc", "-O2", os.path.join(HERE, "llama_cpp_greedy.c"),
                        "-I" + os.path.join(args.llama_cpp, "include"),
                        "-I" + os.path.join(args.llama_cpp, "ggml", "include"),
                        "-L" + lib, "-lllama", f"-Wl,-rpath,{lib}", "-o", exe], check=True)
        with open(prompt_file, "w", encoding="utf-8") as f:
            f.write(prompt)
        out = subprocess.run([exe, args.gguf, prompt_file, str(N_PREDICT), str(N_CTX), "2"], check=True,
                             capture_output=True, text=True).stdout
    result = json.loads(out)
    with open(args.gguf, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    result = {"prompt_chars": PROMPT_CHARS, "n_ctx": N_CTX, "gguf_sha256": digest, **result}
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(result, f)
        f.write("\n")
    print(f"{len(result['prompt_ids'])} prompt tokens, {len(result['generated_ids'])} generated", file=sys.stderr)


if __name__ == "__main__":
    main()
