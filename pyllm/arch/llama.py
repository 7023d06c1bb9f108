"""Llama (1, 2, and Llama-architecture models such as SmolLM2 and TinyLlama): the decoder itself."""
from typing import Callable

from ..errors import FormatError
from ..formats.jsontext import JsonObject
from .family import Family


class Llama(Family):
    """LlamaForCausalLM; GGUF `llama`, whose q/k rows already rotate adjacent pairs."""

    name = "llama"
    hf_classes = ("LlamaForCausalLM",)
    gguf_names = ("llama",)

    def check_hf(self, raw: JsonObject, refuse: Callable[[str], FormatError]) -> None:
        """The decoder's refusals, and Llama's optional biases on every attention projection."""
        super().check_hf(raw, refuse)
        if raw.flag("attention_bias"):
            raise refuse("attention output biases (attention_bias)")
