"""The type `--type` asks for, tensor by tensor: one type for every matrix, or llama.cpp's Q4_K_M mixture.

Both follow llama.cpp's quantizer (src/llama-quant.cpp): a matrix whose rows do not fill the type's
blocks falls back as tensor_type_fallback does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and F16 when
rows do not fill 32-value blocks either), and Q4_K_M picks each tensor's type as
llama_tensor_get_type_impl does for LLAMA_FTYPE_MOSTLY_Q4_K_M on a dense model:

- the classifier (output.weight; token_embd.weight when the embeddings are tied): Q6_K, or Q8_0 when
  its rows do not fill 256-value blocks;
- attn_v of layer i and ffn_down of layer i: Q6_K where use_more_bits(i, n) holds (the first and
  last eighth of the n layers, and every third layer between), else Q4_K;
- every other matrix, token_embd.weight of an untied model included: Q4_K.

llama.cpp counts attn_v and ffn_down tensors in its tensor order, which sorts by layer: the count is
the layer index read from the name here. Rules for architectures pyllm does not run (Falcon, mixtures
of experts, fused QKV) and llama.cpp's 70B special case for attn_v are left out.
"""
from __future__ import annotations

import re

from ..quant import ALL_TYPES, ENCODABLE

MIXTURES = {"q4_k_m": "q4_k"}  # mixture -> the type of the matrices it does not single out
OUT_TYPES = (*ENCODABLE, *MIXTURES)  # what --type accepts
FALLBACK = {"q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}  # llama.cpp's tensor_type_fallback

_LAYER = re.compile(r"^blk\.(\d+)\.")


def fits(type_name: str, cols: int) -> bool:
    """Whether rows of `cols` values fill whole blocks of the type."""
    return cols % ALL_TYPES[type_name].block == 0


def with_fallback(type_name: str, cols: int, why: str) -> tuple[str, str]:
    """The type itself if rows of `cols` values fill its blocks, else llama.cpp's fallback (then F16)."""
    if fits(type_name, cols):
        return type_name, why
    other = FALLBACK.get(type_name)
    if other is not None and fits(other, cols):
        return other, f"{why}; rows of {cols} values do not fill {type_name} blocks of 256, so {other} as llama.cpp does"
    return "f16", f"{why}; rows of {cols} values do not fill {type_name} blocks"


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers, and every third one between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _q4_k_m(name: str, n_layers: int, n_attn_v: int, tied: bool, cols: int) -> tuple[str, str]:
    """Q4_K_M's type for one matrix, before the fallback."""
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        if not fits("q6_k", cols):
            return "q8_0", "Q4_K_M: the classifier, rows not filling 256-value blocks"
        return "q6_k", "Q4_K_M: the classifier"
    m = _LAYER.match(name)
    if m is not None and name.endswith("attn_v.weight") and use_more_bits(int(m.group(1)), n_attn_v):
        return "q6_k", "Q4_K_M: attn_v of a layer that gets more bits"
    if m is not None and "ffn_down" in name and use_more_bits(int(m.group(1)), n_layers):
        return "q6_k", "Q4_K_M: ffn_down of a layer that gets more bits"
    return "q4_k", "Q4_K_M"


def requested_types(tensors: dict[str, tuple[int, ...]], out_type: str | None,
                    n_layers: int) -> dict[str, tuple[str, str]]:
    """Each matrix's type under `--type out_type`, and why; {} without out_type. Vectors are not listed
    (they stay f32). `tensors` maps every tensor name of the converted model to its shape; a model
    without output.weight ties its classifier to token_embd.weight."""
    if out_type is None:
        return {}
    if out_type not in OUT_TYPES:
        raise ValueError(f"unknown output type {out_type!r}; choose from {', '.join(OUT_TYPES)}")
    matrices = {name: shape for name, shape in tensors.items() if len(shape) >= 2}
    if out_type not in MIXTURES:
        return {name: with_fallback(out_type, shape[-1], "requested") for name, shape in matrices.items()}
    tied = "output.weight" not in tensors
    n_attn_v = sum(name.endswith("attn_v.weight") for name in tensors)
    out = {}
    for name, shape in matrices.items():
        type_name, why = _q4_k_m(name, n_layers, n_attn_v, tied, shape[-1])
        out[name] = with_fallback(type_name, shape[-1], why)
    return out
