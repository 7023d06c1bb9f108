"""Mistral: the llama decoder; its sliding-window attention is exact within one window."""
from ..formats.jsontext import JsonObject
from .family import Family


class Mistral(Family):
    """MistralForCausalLM. Within one window sliding-window attention is full attention, so the
    context is capped at the window, where the decoder is exact."""

    name = "mistral"
    hf_classes = ("MistralForCausalLM",)

    def hf_context(self, raw: JsonObject, max_seq: int, notes: list[str]) -> int:
        """The trained context, capped at the sliding window."""
        window = raw.integer("sliding_window", None)
        if window is not None and window < max_seq:
            notes.append(f"sliding-window attention ({window} tokens): context limited to {window}")
            return window
        return max_seq
