"""Phi-3 and Phi-4-mini: the llama decoder with fused projections, partial rotary embeddings and
LongRoPE.

- q, k and v come from one matrix (qkv_proj; GGUF attn_qkv), gate and up from another
  (gate_up_proj; GGUF ffn_up, twice the MLP width): split by rows at conversion.
- `partial_rotary_factor` (Phi-4-mini: 0.75) rotates only each head's first
  int(head_dim * factor) dimensions (config.rope_dim); the q/k rows of that part are reordered
  into adjacent pairs, the rest stay as they are.
- LongRoPE (`rope_type` longrope, or su / yarn, which transformers' Phi3Config reads as longrope)
  divides each pair's frequency by short_factor or long_factor and scales cos and sin by an
  attention factor. Both tables are stored (rope_freq, rope_freq_long); a session uses the long
  one when its context (n_ctx) is longer than original_max_position_embeddings, as llama.cpp
  chooses by context size. transformers chooses by the length of the sequence in each forward
  call, so the two agree whenever the sequence and the context are on the same side of the
  original context (a context that holds the whole sequence, and no more than it needs).
- `sliding_window`, which transformers applies to every layer of Phi-3 whenever it is set
  (Phi-3-mini-4k: 2047), is sliding-window attention as for Mistral (llama.cpp ignores it for phi3).
"""
from __future__ import annotations

import dataclasses
import math
import numpy as np

from ..errors import FormatError
from ..formats.gguf import GGUFFile
from ..formats.jsontext import JsonObject
from ..formats.weights import check_config
from ..types import ModelConfig
from . import rope
from .family import Family

PHI3_ORIGINAL_CONTEXT = 4096  # Phi3Config's original_max_position_embeddings when config.json leaves it out


class Phi3(Family):
    """Phi3ForCausalLM; GGUF `phi3`, whose fused q/k rows keep Hugging Face's half-split order."""

    name = "phi3"
    hf_classes = ("Phi3ForCausalLM",)
    gguf_names = ("phi3",)
    partial_rotary = True
    gguf_half_split_rope = True
    hf_sliding = True
    hf_window_by_default = True
    hf_rope_types = ("default",) + rope.LONGROPE_NAMES
    gguf_consumed = ("rope_factors_short.weight", "rope_factors_long.weight")

    # -- Hugging Face ------------------------------------------------------------------------------

    def config_from_hf(self, raw: JsonObject, n_tensors: int, n_bytes: int) -> tuple[ModelConfig, list[str]]:
        """The llama decoder's config with Phi-3's rotary part and LongRoPE (see the module)."""
        cfg, notes = super().config_from_hf(raw, n_tensors, n_bytes)
        params = rope.scaling_params(raw)
        partial = params.number("partial_rotary_factor", raw.number("partial_rotary_factor", 1.0, positive=True),
                                positive=True)
        rope_dim = int(cfg.head_dim * partial)
        if rope_dim < 2 or rope_dim % 2 or rope_dim > cfg.head_dim:
            raise raw.fail(f"config.json: partial_rotary_factor {partial} rotates {rope_dim} of each head's "
                           f"{cfg.head_dim} dimensions; RoPE needs an even number from 2 to {cfg.head_dim}")
        changes: dict = {"rope_dim": None if rope_dim == cfg.head_dim else rope_dim}
        if cfg.rope_scaling is not None:  # longrope, su or yarn: all LongRoPE for Phi-3
            original = self.hf_original_context(raw)
            factor = params.number("factor", None, positive=True)
            if factor is None:
                factor = cfg.max_seq_len / original
            attention = params.number("attention_factor", None, positive=True)
            changes.update(rope_scaling="longrope", rope_long_context=original,
                           rope_attn_factor=rope.longrope_attention_factor(factor, original)
                           if attention is None else attention)
            notes.append(f"LongRoPE: a context (n_ctx) longer than {original} positions uses the long factors, "
                         "a shorter one the short factors")
        cfg = dataclasses.replace(cfg, **changes)
        try:
            check_config(cfg)
        except ValueError as exc:
            raise raw.fail(f"config.json gives {exc}") from None
        return cfg, notes

    @staticmethod
    def hf_original_context(raw: JsonObject) -> int:
        """original_max_position_embeddings as Phi3Config holds it: the top level of config.json,
        else its class default (4096), which transformers puts over the RoPE parameters' own."""
        return raw.integer("original_max_position_embeddings", PHI3_ORIGINAL_CONTEXT)

    def hf_computed_tensors(self, raw: JsonObject, cfg: ModelConfig) -> dict[str, np.ndarray]:
        """LongRoPE's short and long frequency tables (rope_freq, rope_freq_long), or none."""
        if cfg.rope_scaling is None:
            return {}
        params, pairs = rope.scaling_params(raw), cfg.rotary_dim // 2
        tables = {}
        for key, name in (("short_factor", "rope_freq"), ("long_factor", "rope_freq_long")):
            factors = params.array(key)
            if len(factors) != pairs or any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in factors):
                raise params.error(key, f"a list of {pairs} numbers (one per rotated pair)", factors)
            with np.errstate(all="ignore"):
                freqs = rope.longrope_freqs(cfg.rope_theta, cfg.rotary_dim, np.array(factors, np.float64))
            if not np.all(np.isfinite(freqs) & (freqs > 0)):
                raise raw.fail(f"{params.where(key)}: the factors give frequencies that are not finite positive "
                               "float32 numbers")
            tables[name] = freqs
        return tables

    def hf_tensor_names(self, cfg: ModelConfig) -> dict[str, tuple]:
        """The llama names, with q, k, v rows of qkv_proj and gate, up rows of gate_up_proj."""
        names = super().hf_tensor_names(cfg)
        q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        for i in range(cfg.n_layers):
            hf, ours = f"model.layers.{i}.", f"blk.{i}."
            qkv, gate_up = hf + "self_attn.qkv_proj.weight", hf + "mlp.gate_up_proj.weight"
            names.update({
                ours + "attn_q.weight": (qkv, cfg.n_heads, (0, q_dim)),
                ours + "attn_k.weight": (qkv, cfg.n_kv_heads, (q_dim, q_dim + kv_dim)),
                ours + "attn_v.weight": (qkv, 0, (q_dim + kv_dim, q_dim + 2 * kv_dim)),
                ours + "ffn_gate.weight": (gate_up, 0, (0, cfg.hidden_dim)),
                ours + "ffn_up.weight": (gate_up, 0, (cfg.hidden_dim, 2 * cfg.hidden_dim)),
            })
        return names

    # -- GGUF --------------------------------------------------------------------------------------

    def config_from_gguf(self, g: GGUFFile) -> ModelConfig:
        """The llama decoder's config with phi3's rope.dimension_count and LongRoPE factors."""
        cfg = super().config_from_gguf(g)
        tables = rope.gguf_longrope(g, "phi3", cfg.rope_theta, cfg.rotary_dim)
        if tables is None:
            return cfg
        key = "phi3.rope.scaling.original_context_length"
        if key not in g.metadata:
            raise FormatError(f"{g.path}: metadata key {key} is missing; LongRoPE's factors need the original "
                              "context length")
        original = g.meta(key, kind=int)
        if not 1 <= original < 1 << 31:
            raise FormatError(f"{g.path}: metadata {key} is {original}, not a positive count")
        attention = float(g.meta("phi3.rope.scaling.attn_factor", 1.0, kind=(int, float)))
        if not 0 < attention < math.inf:
            raise FormatError(f"{g.path}: metadata phi3.rope.scaling.attn_factor is {attention}, not a finite "
                              "positive number")
        cfg = dataclasses.replace(cfg, rope_scaling="longrope", rope_long_context=original,
                                  rope_attn_factor=attention)
        try:
            check_config(cfg)
        except ValueError as exc:
            raise FormatError(f"{g.path}: {exc}") from None
        return cfg

    def gguf_computed_tensors(self, g: GGUFFile, cfg: ModelConfig) -> dict[str, np.ndarray]:
        """LongRoPE's short and long frequency tables from rope_factors_short/long, or none."""
        tables = rope.gguf_longrope(g, "phi3", cfg.rope_theta, cfg.rotary_dim)
        return {} if tables is None else {"rope_freq": tables[0], "rope_freq_long": tables[1]}

    def gguf_source(self, name: str, cfg: ModelConfig) -> tuple[str, int, tuple[int, int] | None]:
        """q, k, v from rows of attn_qkv; gate and up from the two halves of ffn_up."""
        if not name.startswith("blk."):
            return super().gguf_source(name, cfg)
        q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        block, part = ".".join(name.split(".")[:2]), name.split(".")[-2]
        parts: dict[str, tuple[str, int, tuple[int, int]]] = {
            "attn_q": (block + ".attn_qkv.weight", cfg.n_heads, (0, q_dim)),
            "attn_k": (block + ".attn_qkv.weight", cfg.n_kv_heads, (q_dim, q_dim + kv_dim)),
            "attn_v": (block + ".attn_qkv.weight", 0, (q_dim + kv_dim, q_dim + 2 * kv_dim)),
            "ffn_gate": (block + ".ffn_up.weight", 0, (0, cfg.hidden_dim)),
            "ffn_up": (block + ".ffn_up.weight", 0, (cfg.hidden_dim, 2 * cfg.hidden_dim)),
        }
        return parts.get(part) or super().gguf_source(name, cfg)

