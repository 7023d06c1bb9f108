#!/usr/bin/env python3
"""Make a random-weight model at Llama-3.2-1B shapes as llama.cpp users get it: transformers random
init -> llama.cpp's convert_hf_to_gguf.py (F16) -> llama-quantize (Q4_K_M, and any other types asked).

    python tools/make_1b_shape.py OUT_DIR [--llama-cpp ~/.cache/llama.cpp-ref] [--types Q4_K_M Q4_0]

Shapes: 16 layers, dim 2048, 32 query / 8 key-value heads (head_dim 64), hidden 8192, tied
embeddings, rope_theta 500000 with Llama 3's `llama3` RoPE scaling, as Llama-3.2-1B's config has them.
The vocabulary is a SentencePiece model trained here on the speed text (2,000 pieces, padded to
32,000 by the converter): the speed benchmarks care about the matrices, not the words. Needs torch,
transformers and sentencepiece (the reference environment), never pyllm's dependencies.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = os.path.join(HERE, "..", "..", "shared", "data", "shakespeare-head.txt")


def train_tokenizer(out_dir: str, text: str) -> None:
    """A 2,000-piece SentencePiece BPE model at out_dir/tokenizer.model, with byte fallback."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(input=text, model_prefix=os.path.join(out_dir, "tokenizer"), vocab_size=2000,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   bos_id=1, eos_id=2, unk_id=0, minloglevel=2)


def make_hf(out_dir: str, seed: int) -> None:
    """A randomly initialised LlamaForCausalLM at 1B shapes, saved as F16 safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         rope_theta=500000.0, bos_token_id=1, eos_token_id=2,
                         rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    model = LlamaForCausalLM(config).to(torch.float16)
    model.save_pretrained(out_dir, safe_serialization=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--llama-cpp", default=os.path.expanduser("~/.cache/llama.cpp-ref"))
    ap.add_argument("--types", nargs="+", default=["Q4_K_M"], help="llama-quantize types (default Q4_K_M)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    hf = os.path.join(args.out_dir, "hf")
    os.makedirs(hf, exist_ok=True)
    train_tokenizer(hf, TEXT)
    make_hf(hf, args.seed)
    f16 = os.path.join(args.out_dir, "llama-1b-shape.f16.gguf")
    env = {**os.environ, "PYTHONPATH": os.path.join(args.llama_cpp, "gguf-py")}
    subprocess.run([sys.executable, os.path.join(args.llama_cpp, "convert_hf_to_gguf.py"), hf, "--outtype", "f16",
                    "--outfile", f16], check=True, env=env)
    for t in args.types:
        out = os.path.join(args.out_dir, f"llama-1b-shape.{t.lower()}.gguf")
        subprocess.run([os.path.join(args.llama_cpp, "build", "bin", "llama-quantize"), f16, out, t, "2"], check=True)
        print(out)


if __name__ == "__main__":
    main()
