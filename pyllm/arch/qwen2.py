"""Qwen2 (and Qwen2.5): the llama decoder with biases on the q, k and v projections."""
from .family import Family


class Qwen2(Family):
    """Qwen2ForCausalLM; GGUF `qwen2`, whose q/k rows keep Hugging Face's half-split RoPE order."""

    name = "qwen2"
    hf_classes = ("Qwen2ForCausalLM",)
    gguf_names = ("qwen2",)
    qkv_bias = True
    gguf_half_split_rope = True
    hf_sliding = True  # with use_sliding_window
