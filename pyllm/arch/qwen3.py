"""Qwen3 (dense): the llama decoder with an RMSNorm on each query and key head before RoPE, and a
head size of its own (head_dim need not be hidden_size / num_attention_heads)."""
from __future__ import annotations

from typing import Callable

from ..errors import FormatError
from ..formats.jsontext import JsonObject
from .family import Family


class Qwen3(Family):
    """Qwen3ForCausalLM; GGUF `qwen3` (attn_q_norm, attn_k_norm), whose q/k rows keep Hugging Face's
    half-split RoPE order as qwen2's do."""

    name = "qwen3"
    hf_classes = ("Qwen3ForCausalLM",)
    gguf_names = ("qwen3",)
    qk_norm = True
    gguf_half_split_rope = True
    hf_sliding = True  # with use_sliding_window

    def check_hf(self, raw: JsonObject, refuse: Callable[[str], FormatError]) -> None:
        """The llama refusals, and attention_bias: Qwen3 then also biases o_proj, which the decoder lacks."""
        super().check_hf(raw, refuse)
        if raw.flag("attention_bias"):
            raise refuse("attention biases (attention_bias true)")
