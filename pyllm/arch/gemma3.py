"""Gemma 3 (text): the llama decoder with a GELU-gated MLP, RMSNorm weights applied as (1 + w),
embeddings scaled by sqrt(dim), RMSNorms after attention and after the MLP as well as before, q/k
norms, an attention scale of query_pre_attn_scalar^-0.5, and sliding-window ("local") layers with
their own RoPE base between global ones (five local, one global by default).

The (1 + w) is folded into every norm weight at conversion from Hugging Face (llama.cpp's GGUF
already holds the folded weights: convert_hf_to_gguf.py's Gemma3Model adds 1), so the C core runs
plain RMSNorm.

config.json comes in two spellings: transformers 4.x and the hub's files (rope_theta,
rope_local_base_freq, rope_scaling for the global layers, sliding_window_pattern or layer_types),
and transformers 5 (rope_parameters with a full_attention and a sliding_attention entry, layer_types).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from ..errors import FormatError
from ..formats.gguf import GGUFFile
from ..formats.jsontext import JsonObject, short_repr
from ..types import ModelConfig
from . import rope
from .family import Family, sliding_of

# Gemma3TextConfig's defaults, for fields a config.json leaves out
HF_DEFAULTS = {"head_dim": 256, "num_key_value_heads": 4, "max_position_embeddings": 131072,
               "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
DEFAULT_THETA, DEFAULT_LOCAL_THETA = 1_000_000.0, 10_000.0
DEFAULT_PATTERN, DEFAULT_WINDOW, DEFAULT_QUERY_SCALAR = 6, 4096, 256
FREQUENCY_ONLY = ("linear", "llama3")  # RoPE scalings of the global layers that change frequencies only


class Gemma3(Family):
    """Gemma3ForCausalLM (model_type gemma3_text); GGUF `gemma3`, whose q/k rows keep Hugging Face's
    half-split RoPE order (llama.cpp rotates them NeoX style). The multimodal
    Gemma3ForConditionalGeneration is refused (pyllm/arch/unsupported.py)."""

    name = "gemma3"
    hf_classes = ("Gemma3ForCausalLM",)
    gguf_names = ("gemma3",)
    qk_norm = True
    gguf_half_split_rope = True
    hf_sliding = True
    hf_tied_by_default = True
    hf_default_theta = DEFAULT_THETA
    gguf_default_pattern = DEFAULT_PATTERN  # llama.cpp's for gemma3: layers 5, 11, ... global

    # -- Hugging Face ---------------------------------------------------------------------------

    def config_from_hf(self, raw: JsonObject, n_tensors: int, n_bytes: int) -> tuple[ModelConfig, list[str]]:
        """The llama reading of config.json seen through the global layers' RoPE parameters and
        Gemma 3's defaults, plus Gemma's own fields."""
        flat = global_view(raw)
        cfg, notes = super().config_from_hf(flat, n_tensors, n_bytes)
        local = local_rope(raw)
        cfg = dataclasses.replace(
            cfg, activation="gelu_tanh", post_norms=True,
            embed_scale=float(np.float32(math.sqrt(cfg.dim))),  # as transformers: a float32 tensor
            attn_scale=raw.number("query_pre_attn_scalar", DEFAULT_QUERY_SCALAR, positive=True) ** -0.5,
            rope_theta_swa=local.number("rope_theta", DEFAULT_LOCAL_THETA, positive=True)
            if cfg.sliding_window is not None else None)
        return cfg, notes

    def check_hf(self, raw: JsonObject, refuse: Callable[[str], FormatError]) -> None:
        """Gemma 3 features the decoder lacks, by name (raw is the global layers' view)."""
        act = raw.get("hidden_activation", "gelu_pytorch_tanh")
        if act != "gelu_pytorch_tanh":
            raise refuse(f"activation {short_repr(act)} (Gemma 3 runs with gelu_pytorch_tanh)")
        for key in ("final_logit_softcapping", "attn_logit_softcapping"):
            if raw.get(key) is not None:
                raise refuse(f"{key} {short_repr(raw.get(key))} (logit soft-capping)")
        if raw.flag("use_bidirectional_attention"):
            raise refuse("bidirectional attention (use_bidirectional_attention)")
        if raw.flag("attention_bias"):
            raise refuse("attention biases (attention_bias true)")
        kind = rope.hf_rope_type(raw)
        if kind not in ("default",) + FREQUENCY_ONLY:
            raise refuse(f"RoPE scaling {short_repr(kind)} on the global layers (pyllm implements "
                         f"{', '.join(FREQUENCY_ONLY)} there)")

    def hf_sliding_layers(self, raw: JsonObject, n_layers: int) -> tuple[int | None, tuple[int, ...]]:
        """Local layers from layer_types, else every layer but each sliding_window_pattern-th (6th)."""
        window = raw.integer("sliding_window", DEFAULT_WINDOW)
        if raw.strings("layer_types"):
            return sliding_of(window, self.hf_layer_types(raw, n_layers, 0))
        pattern = raw.integer("sliding_window_pattern", DEFAULT_PATTERN)  # layer i global when pattern | i + 1
        return sliding_of(window, ["sliding_attention" if (i + 1) % pattern else "full_attention"
                                   for i in range(n_layers)])

    def hf_tensor_names(self, cfg: ModelConfig) -> dict[str, tuple[str, int]]:
        """Llama's names, with the norm before the MLP (pre_feedforward_layernorm) and the two post-norms;
        Gemma's post_attention_layernorm is the post-attention norm, not the MLP's input norm."""
        names = super().hf_tensor_names(cfg)
        for i in range(cfg.n_layers):
            hf, ours = f"model.layers.{i}.", f"blk.{i}."
            names[ours + "ffn_norm.weight"] = (hf + "pre_feedforward_layernorm.weight", 0)
            names[ours + "post_attention_norm.weight"] = (hf + "post_attention_layernorm.weight", 0)
            names[ours + "post_ffw_norm.weight"] = (hf + "post_feedforward_layernorm.weight", 0)
        return names

    def hf_value_shift(self, name: str) -> float:
        """1 for every RMSNorm weight: Gemma3RMSNorm multiplies by (1 + w), in float32."""
        return 1.0 if name.endswith("norm.weight") else 0.0

    def hf_computed_tensors(self, raw: JsonObject, cfg: ModelConfig) -> dict[str, np.ndarray]:
        """The global layers' scaled RoPE frequencies, from their RoPE parameters."""
        return super().hf_computed_tensors(global_view(raw), cfg)

    # -- GGUF -----------------------------------------------------------------------------------

    def config_from_gguf(self, g: GGUFFile) -> ModelConfig:
        """The llama reading of the metadata (local layers by attention.sliding_window_pattern,
        default 6), with Gemma 3's fields as llama.cpp sets them: the local layers' RoPE base
        rope.freq_base_swa (default 10000), the attention scale head_dim^-0.5 (the 27B model, 62
        layers: (dim / heads)^-0.5)."""
        p = "gemma3."
        softcap = g.meta(p + "final_logit_softcapping", 0.0, kind=(int, float))
        if softcap:
            raise FormatError(f"{g.path}: final logit soft-capping ({p}final_logit_softcapping {softcap}) "
                              "is not supported by pyllm")
        if g.meta(p + "rope.scaling.type", "none", kind=str) not in ("none", "linear"):
            raise FormatError(f"{g.path}: RoPE scaling {g.meta(p + 'rope.scaling.type', kind=str)!r} "
                              f"({p}rope.scaling.type) is not supported by pyllm for gemma3")
        cfg = super().config_from_gguf(g)
        theta_swa = float(g.meta(p + "rope.freq_base_swa", DEFAULT_LOCAL_THETA, kind=(int, float)))
        if not 0 < theta_swa < math.inf:
            raise FormatError(f"{g.path}: metadata {p}rope.freq_base_swa is {theta_swa}, not a finite positive number")
        head = cfg.dim // cfg.n_heads if cfg.n_layers == 62 else cfg.head_dim
        return dataclasses.replace(
            cfg, activation="gelu_tanh", post_norms=True,
            embed_scale=float(np.float32(math.sqrt(cfg.dim))), attn_scale=float(np.float32(1.0 / math.sqrt(head))),
            rope_theta_swa=theta_swa if cfg.sliding_window is not None else None)


def global_view(raw: JsonObject) -> JsonObject:
    """config.json as the llama reading needs it: the global (full_attention) layers' RoPE
    parameters as the only ones (rope_parameters.full_attention in transformers 5; rope_theta and
    rope_scaling in 4.x), and Gemma3TextConfig's defaults where fields are missing."""
    params = raw.obj("rope_parameters")
    flat = {k: v for k, v in raw.raw.items() if k not in ("rope_parameters", "rope_scaling", "rope_theta")}
    for key, value in HF_DEFAULTS.items():
        if flat.get(key) is None:
            flat[key] = value
    if raw.get("rope_parameters") is not None:
        if not set(params.raw) <= {"full_attention", "sliding_attention"}:
            raise raw.error("rope_parameters", "an object of full_attention and sliding_attention parameters",
                            raw.get("rope_parameters"))
        full = dict(params.obj("full_attention").raw)
    else:
        full = dict(raw.obj("rope_scaling").raw)
        full["rope_theta"] = raw.number("rope_theta", DEFAULT_THETA, positive=True)
    full.setdefault("rope_theta", DEFAULT_THETA)
    flat["rope_parameters"] = full
    return JsonObject(flat, raw.label, raw.fail, raw.prefix)


def local_rope(raw: JsonObject) -> JsonObject:
    """The local (sliding_attention) layers' RoPE parameters: rope_theta from
    rope_parameters.sliding_attention (5.x) or rope_local_base_freq (4.x); plain RoPE only."""
    if raw.get("rope_parameters") is not None:
        local = raw.obj("rope_parameters").obj("sliding_attention")
    else:
        theta = raw.number("rope_local_base_freq", DEFAULT_LOCAL_THETA, positive=True)
        local = JsonObject({"rope_type": "default", "rope_theta": theta}, raw.label, raw.fail, raw.prefix)
    kind = local.get("rope_type", "default")
    if kind != "default":
        raise raw.fail(f"Gemma3ForCausalLM with RoPE scaling {short_repr(kind)} on the sliding-window layers "
                       "is not supported by pyllm")
    return local
