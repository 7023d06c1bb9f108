"""SmolLM2 as a Hugging Face directory. transformers turns the GGUF into config.json +
model.safetensors (tools/make_hf_smollm2.py); the SHA-256 of every tensor it wrote and its small
files are in tests/data/smollm2_hf_digests.json. The test rebuilds that directory from the GGUF
without transformers, proves it byte-identical through the digests, converts it, and requires
the F32 logits to equal those of the GGUF's own F32 conversion."""
import gzip
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from pyllm import Model
from pyllm import arch
from pyllm.convert import convert
from pyllm.convert.gguf import gguf_config
from pyllm.fetch import default_model, fetch_gguf
from pyllm.formats.gguf import GGUFFile
from pyllm.quant import BY_ID, dequantize
from safetensors_writer import write_safetensors

DATA = os.path.join(os.path.dirname(__file__), "data")


def halves_order(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order: adjacent pairs back to Hugging Face's half-split pairs."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    with open(os.path.join(DATA, "smollm2_hf_digests.json"), encoding="utf-8") as f:
        expected = json.load(f)
    root = tmp_path_factory.mktemp("smollm2-hf")
    for name, text in expected["files"].items():
        (root / name).write_text(text, encoding="utf-8")
    with gzip.open(os.path.join(DATA, "smollm2-tokenizer.json.gz")) as src, open(root / "tokenizer.json", "wb") as dst:
        shutil.copyfileobj(src, dst)

    tensors = {}
    with GGUFFile(fetch_gguf(quiet=True)) as g:
        cfg = gguf_config(g)
        for ours, (hf, heads) in arch.by_name(cfg.architecture).hf_tensor_names(cfg).items():
            t = g.tensors[ours]
            w = dequantize(g.tensor_bytes(ours), BY_ID[t.type].name, t.shape).reshape(t.shape)
            tensors[hf] = halves_order(w, heads) if heads else w
    assert sorted(tensors) == sorted(expected["tensors"])
    for name, a in tensors.items():
        want = expected["tensors"][name]
        assert (want["dtype"], want["shape"]) == ("F32", list(a.shape)), name
        digest = hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()
        assert digest == want["sha256"], f"{name} differs from what transformers wrote"
    write_safetensors(root / "model.safetensors", tensors)
    return root


def test_hf_directory_converts_to_the_same_model(hf_dir, tmp_path):
    out = tmp_path / "hf.bin"
    convert(hf_dir, out, progress=False)
    text = "The quick brown fox jumps over the lazy dog.\nThen it said: 'hello, world' 123"
    with Model(out, n_ctx=64) as a, Model(default_model("f32", quiet=True), n_ctx=64) as b:
        assert a.config == b.config
        tokens = a.tokenize(text)
        assert tokens == b.tokenize(text)
        la, lb = a.logits(tokens), b.logits(tokens)
        assert np.array_equal(la, lb), np.abs(la - lb).max()
        messages = [{"role": "user", "content": "What is 2 + 2?"}]
        assert a.chat_prompt(messages) == b.chat_prompt(messages)
        assert (a.file.tokenizer.bos_id, a.file.tokenizer.eos_id) == (1, 2)
