#!/usr/bin/env python3
"""Make tests/data/quant_recipe_types.json: the type llama-quantize gives every tensor of SmolLM2-135M and
Gemma 3 270M for Q4_K_M (its mixture) and for plain Q4_K, Q5_K and Q6_K (`--pure`: one type, with its
fallback for rows that do not fill 256-value blocks), with each tensor's shape and the model's layer
count: the reference for the converter's choices in tests/test_convert_types.py.

Runs llama.cpp's llama-quantize (a reference build, not a pyllm dependency) with --allow-requantize
on GGUFs already quantized (the choice of types depends on names, shapes and layer counts, not on the
values), and reads the results with the `gguf` package:

    python tools/make_quant_recipe_types.py [llama-quantize] [SmolLM2 GGUF] [Gemma 3 270M GGUF]
"""
import json
import os
import subprocess
import sys
import tempfile

from gguf import GGUFReader

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quant_recipe_types.json")
QUANTIZE = os.path.expanduser("~/.cache/llama.cpp-ref/build/bin/llama-quantize")
MODELS = {"smollm2-135m": os.path.expanduser("~/.cache/pyllm/SmolLM2-135M-Instruct.Q4_1.gguf"),
          "gemma-3-270m": os.path.expanduser("~/.cache/pyllm/gemma-3-270m-q4_k_m.gguf")}
RUNS = {"q4_k_m": ["Q4_K_M"], "q4_k": ["--pure", "Q4_K"], "q5_k": ["--pure", "Q5_K"], "q6_k": ["--pure", "Q6_K"]}


def tensor_types(path: str) -> dict[str, str]:
    return {t.name: t.tensor_type.name.lower() for t in GGUFReader(path).tensors}


def main() -> None:
    quantize = sys.argv[1] if len(sys.argv) > 1 else QUANTIZE
    paths = dict(zip(MODELS, sys.argv[2:4])) if len(sys.argv) > 2 else MODELS
    out = {}
    for model, src in paths.items():
        reader = GGUFReader(src)
        arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")
        n_layers = int(reader.fields[f"{arch}.block_count"].parts[-1][0])
        # GGUF lists ne[0] (the row length) first; shapes here are numpy's (rows, cols)
        shapes = {t.name: [int(n) for n in reversed(t.shape.tolist())] for t in reader.tensors}
        entry = {"architecture": arch, "n_layers": n_layers, "shapes": shapes, "types": {}}
        for run, args in RUNS.items():
            with tempfile.TemporaryDirectory() as tmp:
                dst = os.path.join(tmp, "out.gguf")
                subprocess.run([quantize, "--allow-requantize", *args[:-1], src, dst, args[-1], "2"], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                entry["types"][run] = tensor_types(dst)
        out[model] = entry
        print(f"{model}: {len(shapes)} tensors, {n_layers} layers")
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
