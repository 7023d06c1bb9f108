#!/usr/bin/env python3
"""Make tests/data/family_tokenizer_cases.json: the ids that each family's own Hugging Face tokenizer
gives for the tokenizer corpus (tests/data/tokenizer_cases.json), with the vocabularies of llama.cpp's
tokenizer suite.

llama.cpp's suite checks a GGUF pre-tokenizer name against 46 strings; this checks it against the
model family's tokenizer class in transformers (its normaliser, pre-tokenizer and BPE settings),
built from the GGUF's tokens and merges, on 240 more: decomposed accents, every script, digits,
whitespace. Control tokens are plain text here; the GGUF's user-defined tokens are added whole, as
the hub's tokenizer.json files list them.

    pip install transformers tokenizers gguf     # reference libraries, not pyllm dependencies
    python tools/make_family_tokenizer_fixtures.py SUITE_DIR tests/data
"""
import argparse
import json
import os

from gguf import GGUFReader

# GGUF pre-tokenizer name -> (suite vocabulary, transformers tokenizer class). Not qwen35: its class
# normalises to NFC, but llama.cpp's suite, made with Qwen3.5's own tokenizer, shows no normaliser.
FAMILIES = {
    "gpt-2": ("gpt-2", "GPT2Tokenizer"),
    "mpt": ("mpt", "GPTNeoXTokenizer"),
    "command-r": ("command-r", "CohereTokenizer"),
    "qwen2": ("qwen2", "Qwen2Tokenizer"),
}


def family_tokenizer(gguf_path: str, class_name: str):
    """transformers' tokenizer class for the family, over the GGUF's vocabulary and merges; its
    backend `tokenizers.Tokenizer`, with control-token text read as plain text."""
    import transformers
    from tokenizers import AddedToken

    r = GGUFReader(gguf_path)

    def field(key):
        f = r.fields[key]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(p).decode("utf-8") for p in field("tokenizer.ggml.tokens")]
    types = [int(p[0]) for p in field("tokenizer.ggml.token_type")]
    merges = [tuple(bytes(p).decode("utf-8").split(" ", 1)) for p in field("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    hf = getattr(transformers, class_name)(vocab=vocab, merges=merges).backend_tokenizer
    hf.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == 4])
    hf.encode_special_tokens = True
    return hf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite_dir", help="llama.cpp's models/ directory (ggml-vocab-*.gguf)")
    ap.add_argument("out_dir")
    args = ap.parse_args()
    with open(os.path.join(args.out_dir, "tokenizer_cases.json"), encoding="utf-8") as f:
        strings = json.load(f)["strings"][:-1]  # all but the 40 kB text (its first 3000 characters stay)
    import tokenizers
    import transformers
    out = {"about": f"ids of each family's tokenizer class in transformers {transformers.__version__} (tokenizers "
                    f"{tokenizers.__version__}) over the GGUF vocabularies of llama.cpp's suite; made by "
                    "tools/make_family_tokenizer_fixtures.py",
           "strings": strings, "families": {}}
    for name, (vocab, class_name) in FAMILIES.items():
        hf = family_tokenizer(os.path.join(args.suite_dir, f"ggml-vocab-{vocab}.gguf"), class_name)
        out["families"][name] = {"vocab": vocab, "class": class_name,
                                 "ids": [hf.encode(s, add_special_tokens=False).ids for s in strings]}
        print(f"{name}: {class_name}, normalizer {type(hf.normalizer).__name__ if hf.normalizer else None}")
    with open(os.path.join(args.out_dir, "family_tokenizer_cases.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
