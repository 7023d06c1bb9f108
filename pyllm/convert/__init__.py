"""Convert model files to weights.bin: GGUF (convert/gguf.py), Hugging Face directories
(convert/hf.py) and llama2.c checkpoints (convert/llama2c.py).

Every converter validates the whole source before writing, streams tensor by tensor into a
temporary file renamed at the end, and reports each tensor whose type it changes and why.
`python -m pyllm.convert` (or `pyllm convert`) is the command line.
"""
from __future__ import annotations

import os

from ..errors import FormatError
from ..formats.mapped import read_head
from .common import CONVERTER_VERSION, check_out_type, choose_type
from .gguf import convert_gguf
from .hf import convert_hf
from .llama2c import convert_llama2c

__all__ = ["convert", "convert_gguf", "convert_hf", "convert_llama2c", "choose_type", "CONVERTER_VERSION"]


def convert(src: str | os.PathLike, dst: str | os.PathLike, out_type: str | None = None,
            progress: bool = True, tokenizer: str | os.PathLike | None = None) -> None:
    """Convert a model to weights.bin, choosing the reader from what `src` is: a GGUF file, a
    Hugging Face model directory (or a .safetensors file in one), or a llama2.c checkpoint
    (`tokenizer`: its tokenizer.bin, by default the one beside it)."""
    check_out_type(out_type)
    src = os.fspath(src)
    if os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst):  # also via links
        raise ValueError(f"{dst}: the output would overwrite the source {src}; choose another path")
    if os.path.isdir(src) or src.endswith((".safetensors", ".safetensors.index.json")):
        return convert_hf(src, dst, out_type, progress)
    magic = read_head(src)
    if magic == b"GGUF":
        return convert_gguf(src, dst, out_type, progress)
    # A pickle starts with PROTO (0x80, version) and then an opcode, never a zero byte; a llama2.c
    # header starts with dim as int32, which may also begin 0x80 (dim 640) but then has zeros.
    if magic[:2] == b"PK" or (magic[:1] == b"\x80" and magic[2:4] != b"\0\0"):
        raise FormatError(f"{src}: a PyTorch pickle/zip checkpoint; pyllm never unpickles (it can run "
                          "code). Save the model as safetensors (save_pretrained(..., "
                          "safe_serialization=True)) and convert its directory")
    return convert_llama2c(src, dst, out_type, progress, tokenizer)
