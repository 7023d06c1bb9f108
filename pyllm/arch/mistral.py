"""Mistral: the llama decoder with sliding-window attention (Mistral 7B v0.1: 4096 positions;
v0.2 and later attend to the whole context)."""
from .family import Family


class Mistral(Family):
    """MistralForCausalLM: config.json's sliding_window applies to every layer."""

    name = "mistral"
    hf_classes = ("MistralForCausalLM",)
    hf_sliding = True
    hf_window_by_default = True
