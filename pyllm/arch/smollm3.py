"""SmolLM3: the llama decoder (tied embeddings by default) in which some layers skip RoPE (NoPE):
config.json's `no_rope_layers` holds one entry per layer, 1 to rotate q and k, 0 not to; without it
every `no_rope_layer_interval`-th layer (default 4th: layers 3, 7, ...) has no rotation.

A GGUF `smollm3` (llama.cpp's converter writes it as a llama: q/k rows in adjacent pairs) lists
no NoPE layers; llama.cpp runs every 4th layer without RoPE (its n_no_rope_layer_step, fixed at 4
for smollm3), as SmolLM3-3B is built, and pyllm reads it the same way."""
from __future__ import annotations

from typing import Callable

from ..errors import FormatError
from ..formats.jsontext import JsonObject
from .family import Family


class SmolLM3(Family):
    """SmolLM3ForCausalLM; GGUF `smollm3`, whose NoPE layers are llama.cpp's every 4th."""

    name = "smollm3"
    hf_classes = ("SmolLM3ForCausalLM",)
    hf_tied_by_default = True
    hf_default_theta = 2000000.0
    gguf_names = ("smollm3",)
    gguf_nope_interval = 4  # llama.cpp's n_no_rope_layer_step for smollm3

    def check_hf(self, raw: JsonObject, refuse: Callable[[str], FormatError]) -> None:
        """The llama refusals, and attention_bias: SmolLM3 then also biases o_proj, which the decoder lacks."""
        super().check_hf(raw, refuse)
        if raw.flag("attention_bias"):
            raise refuse("attention biases (attention_bias true)")

    def hf_nope_layers(self, raw: JsonObject, n_layers: int) -> tuple[int, ...]:
        """Indices of the layers without RoPE, from no_rope_layers (0 = no RoPE) or no_rope_layer_interval."""
        if raw.get("no_rope_layers") is None:
            interval = raw.integer("no_rope_layer_interval", 4)
            return tuple(i for i in range(n_layers) if (i + 1) % interval == 0)
        flags = raw.array("no_rope_layers")
        if len(flags) != n_layers or any(f not in (0, 1) or isinstance(f, float) for f in flags):
            raise raw.error("no_rope_layers", f"a list of {n_layers} entries (num_hidden_layers), each 0 or 1",
                            flags)
        return tuple(i for i, f in enumerate(flags) if not f)

    def gguf_nope_layers(self, n_layers: int) -> tuple[int, ...]:
        """Every 4th layer (3, 7, ...), as llama.cpp runs a smollm3 GGUF: its metadata lists none."""
        return tuple(i for i in range(n_layers) if (i + 1) % self.gguf_nope_interval == 0)
