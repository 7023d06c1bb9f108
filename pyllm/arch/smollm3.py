"""SmolLM3: the llama decoder (tied embeddings by default) in which some layers skip RoPE (NoPE):
config.json's `no_rope_layers` holds one entry per layer, 1 to rotate q and k, 0 not to; without it
every `no_rope_layer_interval`-th layer (default 4th: layers 3, 7, ...) has no rotation."""
from __future__ import annotations

from typing import Callable

from ..errors import FormatError
from ..formats.jsontext import JsonObject
from .family import Family


class SmolLM3(Family):
    """SmolLM3ForCausalLM. GGUF `smollm3` is refused (pyllm/arch/unsupported.py): llama.cpp stores
    no NoPE layer list in its metadata."""

    name = "smollm3"
    hf_classes = ("SmolLM3ForCausalLM",)
    hf_tied_by_default = True
    hf_default_theta = 2000000.0

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
