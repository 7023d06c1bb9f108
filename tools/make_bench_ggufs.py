#!/usr/bin/env python3
"""Make F16, Q8_0 and Q4_0 GGUFs of SmolLM2-135M-Instruct with llama.cpp's own quantizer, from the
shipped Q4_1 GGUF, so pyllm and llama.cpp can be benchmarked on the same weights per type.

    pip install llama-cpp-python      # a reference, not a pyllm dependency
    python tools/make_bench_ggufs.py SmolLM2-135M-Instruct.Q4_1.gguf OUT_DIR

Every matrix gets the target type; the tied token embedding (also the classifier) stays Q8_0 as
in the shipped file (F16 in the F16 file), so both engines do the same work.
"""
import argparse
import ctypes
import os

import llama_cpp

TARGETS = {"f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
           "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1}
GGML_Q8_0 = 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for name, ftype in TARGETS.items():
        out = os.path.join(args.out_dir, f"SmolLM2-135M-Instruct.{name}.gguf")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        params.nthread = 2
        if name != "f16":  # keep the embedding/classifier at Q8_0 like the shipped file
            params.token_embedding_type = GGML_Q8_0
            params.output_tensor_type = GGML_Q8_0
        rc = llama_cpp.llama_model_quantize(args.gguf.encode(), out.encode(), ctypes.byref(params))
        print(f"{out}: {'ok' if rc == 0 else f'failed ({rc})'}")


if __name__ == "__main__":
    main()
