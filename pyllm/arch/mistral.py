"""Mistral: the llama decoder with sliding-window attention (Mistral 7B v0.1: 4096 positions;
v0.2 and later attend to the whole context)."""
from .family import Family


class Mistral(Family):
    """MistralForCausalLM. Within one window sliding-window attention is full attention, so the
    window is recorded and pyllm refuses contexts longer than it (Family.hf_sliding_window)."""

    name = "mistral"
    hf_classes = ("MistralForCausalLM",)
    hf_window_by_default = True
