#!/usr/bin/env python3
"""Make a Hugging Face directory of SmolLM2-135M-Instruct from its GGUF, the way users get one.

transformers reads the GGUF (dequantizing every tensor to float32 and undoing llama.cpp's q/k row
order) and `save_pretrained` writes config.json, model.safetensors and the tokenizer files. The
converter must turn that directory into a weights.bin whose F32 logits equal those of the GGUF's
own F32 conversion. Needs transformers, torch and gguf (reference tools, not pyllm dependencies):

    python tools/make_hf_smollm2.py OUT_DIR [--gguf PATH]   # default GGUF: python -m pyllm.fetch --gguf
    python tools/make_hf_smollm2.py OUT_DIR --digests tests/data/smollm2_hf_digests.json

With --digests it also records, per tensor, the dtype, shape and SHA-256 of the bytes transformers
wrote, and its small JSON/Jinja files (not tokenizer.json), so a test can rebuild the same directory without transformers.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="directory to write")
    ap.add_argument("--gguf", help="the SmolLM2 Q4_1 GGUF (default: fetched into the pyllm cache)")
    ap.add_argument("--digests", help="also write per-tensor SHA-256 digests and config.json here")
    args = ap.parse_args()
    gguf = args.gguf or subprocess.run([sys.executable, "-m", "pyllm.fetch", "--gguf"], check=True,
                                       capture_output=True, text=True).stdout.strip().splitlines()[-1]
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, name = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(d, gguf_file=name)
    # transformers tags GGUF-loaded models as quantized and refuses to save them; the weights are
    # plain float32 by now, so copy them into an untagged model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = type(model)(config)
    clean.load_state_dict(model.state_dict())
    clean.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.digests:
        from pyllm.formats.safetensors import SafetensorsFile
        with SafetensorsFile(os.path.join(args.out, "model.safetensors")) as f:
            tensors = {n: {"dtype": t.dtype, "shape": list(t.shape),
                           "sha256": hashlib.sha256(f.tensor_bytes(n)).hexdigest()}
                       for n, t in sorted(f.tensors.items())}
        files = {}
        for name in sorted(os.listdir(args.out)):
            if name.endswith((".json", ".jinja")) and name != "tokenizer.json":
                with open(os.path.join(args.out, name), encoding="utf-8") as c:
                    files[name] = c.read()
        with open(args.digests, "w") as out:
            json.dump({"files": files, "tensors": tensors}, out, indent=1, sort_keys=True)
            out.write("\n")
        print(f"wrote {args.digests}", file=sys.stderr)


if __name__ == "__main__":
    main()
