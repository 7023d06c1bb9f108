"""The model families pyllm runs, one module each, and a registry by name, Hugging Face class and
GGUF architecture name.

Every family runs on the one decoder of csrc/model.c. A family's module knows how its source files
name tensors and spell hyperparameters, translates them into a ModelConfig and weights.bin tensor
names, and refuses (saying what is missing) what the decoder cannot run exactly. Adding a family
means adding a module and a line in FAMILIES.
"""
from __future__ import annotations

from .family import Family
from .gemma3 import Gemma3
from .llama import Llama
from .mistral import Mistral
from .phi3 import Phi3
from .qwen2 import Qwen2
from .qwen3 import Qwen3
from .smollm3 import SmolLM3
from .unsupported import UNSUPPORTED

FAMILIES: tuple[Family, ...] = (Llama(), Mistral(), Qwen2(), Qwen3(), SmolLM3(), Phi3(), Gemma3())

_BY_NAME = {f.name: f for f in FAMILIES}
_BY_HF_CLASS = {cls: f for f in FAMILIES for cls in f.hf_classes}
_BY_GGUF_NAME = {name: f for f in FAMILIES for name in f.gguf_names}


def by_name(name: str) -> Family | None:
    """The family a weights.bin names in config.architecture, or None."""
    return _BY_NAME.get(name)


def by_hf_class(classes: list[str]) -> Family | None:
    """The family of a Hugging Face config.json's `architectures` list, or None."""
    return next((_BY_HF_CLASS[c] for c in classes if c in _BY_HF_CLASS), None)


def by_gguf_name(name: str) -> Family | None:
    """The family of a GGUF's general.architecture, or None."""
    return _BY_GGUF_NAME.get(name)


def unsupported_reason(name: str) -> str:
    """Why a family pyllm does not run is refused (what the decoder lacks), for error messages."""
    need = UNSUPPORTED.get(name)
    if need:
        return f"it needs {need}, which pyllm does not implement"
    return "pyllm runs llama-family decoders: " + ", ".join(_BY_NAME)


__all__ = ["FAMILIES", "Family", "by_name", "by_hf_class", "by_gguf_name", "unsupported_reason"]
