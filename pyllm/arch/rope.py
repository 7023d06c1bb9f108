"""RoPE scaling: the rotation frequency of each pair of a head, computed from a config.json's
`rope_scaling` / `rope_parameters` or a GGUF's `rope_freqs` tensor and `rope.scaling.*` keys.

The C core rotates pair i by position * freq[i]; without scaling freq[i] = theta^(-2i / head_dim),
which it computes itself. A scaled model stores its frequencies as the weights.bin tensor
`rope_freq` (docs/format.md), so every scaling type is a computation here and the core stays one formula.
Types pyllm does not implement are refused by name.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import FormatError
from ..formats.gguf import GGUFFile
from ..formats.jsontext import JsonObject, short_repr

SCALED_TYPES = ("linear", "llama3", "yarn")  # yarn also scales cos and sin (rope_attn_factor)


def default_freqs(theta: float, head_dim: int) -> np.ndarray:
    """theta^(-2i / head_dim) for each pair, as the C core computes it without a frequency table
    (in double from theta as a float32, then rounded), so a table of these changes no bit."""
    base = float(np.float32(theta))
    return np.array([1.0 / math.pow(base, (2 * i) / head_dim) for i in range(head_dim // 2)], np.float32)


def torch_default_freqs(theta: float, head_dim: int) -> np.ndarray:
    """theta^(-2i / head_dim) in float32 operations, as transformers computes inv_freq."""
    exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    return np.float32(1.0) / np.power(np.float32(theta), exponent)


def linear_freqs(theta: float, head_dim: int, factor: float) -> np.ndarray:
    """Position interpolation: every frequency divided by `factor`."""
    return torch_default_freqs(theta, head_dim) / np.float32(factor)


def llama3_freqs(theta: float, head_dim: int, factor: float, low_freq_factor: float,
                 high_freq_factor: float, original_context: float) -> np.ndarray:
    """Llama 3.1's scaling, in transformers' float32 operations: wavelengths shorter than
    original_context / high_freq_factor keep their frequency, longer than original_context /
    low_freq_factor are divided by factor, and the band between is interpolated smoothly."""
    inv_freq = torch_default_freqs(theta, head_dim)
    f32 = np.float32
    low_wavelen, high_wavelen = original_context / low_freq_factor, original_context / high_freq_factor
    wavelen = f32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > f32(low_wavelen), inv_freq / f32(factor), inv_freq)
    smooth = (f32(original_context) / wavelen - f32(low_freq_factor)) / f32(high_freq_factor - low_freq_factor)
    smoothed = (f32(1) - smooth) * scaled / f32(factor) + smooth * scaled
    medium = ~(wavelen < f32(high_wavelen)) & ~(wavelen > f32(low_wavelen))
    return np.where(medium, smoothed, scaled).astype(np.float32)


def hf_rope_type(raw: JsonObject) -> str:
    """The RoPE type of a config.json: transformers 5's `rope_parameters`, else 4.x's `rope_scaling`."""
    rope, scaling = raw.obj("rope_parameters"), raw.obj("rope_scaling")
    kind = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if not isinstance(kind, str):
        raise raw.error("rope_scaling.rope_type", "a string", kind)
    return kind


def hf_freqs(raw: JsonObject, theta: float, head_dim: int,
             refuse: Callable[[str], FormatError]) -> np.ndarray | None:
    """The scaled frequencies a config.json asks for, or None for plain RoPE; refuse(what) for a
    scaling type pyllm does not implement. Parameters are read where transformers reads them: in
    `rope_parameters` (5.x) or `rope_scaling` (4.x), original_max_position_embeddings preferring
    the top level, then the scaling object, then max_position_embeddings."""
    kind = hf_rope_type(raw)
    if kind == "default":
        return None
    if kind not in SCALED_TYPES:
        raise refuse(f"RoPE scaling {short_repr(kind)} (pyllm implements {', '.join(SCALED_TYPES)})")
    params = scaling_params(raw)
    factor = params.number("factor", None, positive=True)
    if factor is None and kind == "yarn":  # transformers: the context's growth
        factor = raw.integer("max_position_embeddings", 2048) / original_context(raw)
    if factor is None:
        raise raw.fail(f"{params.where('factor')} is missing (RoPE scaling {kind} needs it)")
    with np.errstate(all="ignore"):  # hostile parameters give inf or NaN, refused below
        freqs = scaled_freqs(raw, params, kind, theta, head_dim, factor)
    if not np.all(np.isfinite(freqs) & (freqs >= 0)):
        raise raw.fail(f"{params.where('factor')}: the RoPE scaling parameters give frequencies that are not "
                       "finite non-negative float32 numbers")
    return freqs


def scaled_freqs(raw: JsonObject, params: JsonObject, kind: str, theta: float, head_dim: int,
                 factor: float) -> np.ndarray:
    """The frequencies of a config.json's linear or llama3 scaling (hf_freqs checks the result)."""
    if kind == "linear":
        return linear_freqs(theta, head_dim, factor)
    if kind == "yarn":
        truncate = params.flag("truncate", True)
        return yarn_freqs(theta, head_dim, factor, original_context(raw), params.number("beta_fast", 0.0) or 32.0,
                          params.number("beta_slow", 0.0) or 1.0, truncate)
    low, high = params.number("low_freq_factor", 1.0, positive=True), params.number("high_freq_factor", 4.0,
                                                                                    positive=True)
    if low >= high:
        raise raw.fail(f"{params.where('low_freq_factor')} {low} must be below high_freq_factor {high}")
    return llama3_freqs(theta, head_dim, factor, low, high, original_context(raw))


def scaling_params(raw: JsonObject) -> JsonObject:
    """The object holding a config.json's RoPE parameters: rope_parameters (5.x), else rope_scaling."""
    return raw.obj("rope_parameters") if raw.get("rope_parameters") is not None else raw.obj("rope_scaling")


def original_context(raw: JsonObject) -> int:
    """original_max_position_embeddings as transformers 5 finds it: the top level, the RoPE
    parameters, else max_position_embeddings."""
    original = raw.integer("original_max_position_embeddings", None)
    if original is None:
        original = scaling_params(raw).integer("original_max_position_embeddings", None)
    return raw.integer("max_position_embeddings", 2048) if original is None else original


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature for a context grown by `scale`."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def hf_attention_factor(raw: JsonObject) -> float | None:
    """The factor by which YaRN scales cos and sin (transformers' attention_scaling), or None for
    other RoPE types: attention_factor if given, else from mscale / mscale_all_dim or the factor."""
    if hf_rope_type(raw) != "yarn":
        return None
    params = scaling_params(raw)
    given = params.number("attention_factor", None, positive=True)
    if given is not None:
        return given
    factor = params.number("factor", None, positive=True)
    if factor is None:
        factor = raw.integer("max_position_embeddings", 2048) / original_context(raw)
    mscale, mscale_all_dim = params.number("mscale", 0.0), params.number("mscale_all_dim", 0.0)
    if mscale and mscale_all_dim:
        return yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
    return yarn_mscale(factor)


def yarn_freqs(theta: float, head_dim: int, factor: float, original_context: int, beta_fast: float,
               beta_slow: float, truncate: bool) -> np.ndarray:
    """YaRN's frequencies, in transformers' operations: pairs rotating more than beta_fast times
    over the original context keep their frequency, fewer than beta_slow times are divided by
    factor, with a linear ramp between (the attention factor is hf_attention_factor's)."""
    def correction_dim(rotations: float) -> float:
        return head_dim * math.log(original_context / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # as transformers avoids the singularity
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    extrapolation = np.float32(1) - ramp.astype(np.float32)
    pos_freqs = np.power(np.float32(theta), np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))
    extrapolated = np.float32(1) / pos_freqs
    interpolated = np.float32(1) / (np.float32(factor) * pos_freqs)
    return interpolated * (np.float32(1) - extrapolation) + extrapolated * extrapolation


def gguf_scaling(g: GGUFFile, arch: str) -> str | None:
    """The RoPE scaling of a GGUF ("linear", "llama3", or both as "linear+llama3"), or None.
    llama.cpp's converter writes Llama 3.1's scaling as `rope_freqs.weight`, head_dim / 2 factors
    that divide the base frequencies, and linear scaling as `rope.scaling.type` "linear" with
    `rope.scaling.factor`. Other types are refused by name."""
    key = f"{arch}.rope.scaling."
    kind = g.meta(key + "type", "none", kind=str)
    if kind not in ("none", "linear"):
        raise FormatError(f"{g.path}: RoPE scaling {kind!r} ({key}type) is not supported by pyllm "
                          "(from a GGUF it reads linear scaling and llama3's rope_freqs)")
    names = (["linear"] if kind == "linear" else []) + (["llama3"] if "rope_freqs.weight" in g.tensors else [])
    return "+".join(names) or None


def gguf_freqs(g: GGUFFile, arch: str, theta: float, head_dim: int) -> np.ndarray | None:
    """The scaled frequencies of a GGUF (see gguf_scaling), or None for plain RoPE: the base
    frequencies divided by rope.scaling.factor and by each pair's rope_freqs factor."""
    if gguf_scaling(g, arch) is None:
        return None
    key = f"{arch}.rope.scaling."
    freqs = default_freqs(theta, head_dim)
    if g.meta(key + "type", "none", kind=str) == "linear":
        factor = float(g.meta(key + "factor", 1.0, kind=(int, float)))
        if not 0 < factor < math.inf:
            raise FormatError(f"{g.path}: metadata {key}factor is {factor}, not a finite positive number")
        freqs = freqs / np.float32(factor)
    factors = g.tensors.get("rope_freqs.weight")
    if factors is not None:
        if tuple(factors.shape) != (head_dim // 2,) or factors.type_name != "F32":
            raise FormatError(f"{g.path}: tensor rope_freqs.weight is {factors.type_name} {tuple(factors.shape)}; "
                              f"it must be F32 ({head_dim // 2},), one factor per rotation pair")
        divisors = np.frombuffer(g.tensor_bytes("rope_freqs.weight"), np.float32)
        if not np.all(np.isfinite(divisors) & (divisors > 0)):
            raise FormatError(f"{g.path}: tensor rope_freqs.weight holds factors that are not finite and positive")
        freqs = freqs / divisors
    return freqs.astype(np.float32)


# -- LongRoPE (Phi-3, Phi-4-mini) ----------------------------------------------------------------

LONGROPE_NAMES = ("longrope", "su", "yarn")  # transformers' Phi3Config reads "su" and "yarn" as longrope


def longrope_freqs(theta: float, rotary_dim: int, factors: np.ndarray) -> np.ndarray:
    """LongRoPE's frequencies, in transformers' float32 operations: each pair's base frequency
    theta^(-2i / rotary_dim) divided by its factor (short_factor or long_factor)."""
    exponent = np.arange(0, rotary_dim, 2, dtype=np.float32) / np.float32(rotary_dim)
    return np.float32(1.0) / (factors.astype(np.float32) * np.power(np.float32(theta), exponent))


def longrope_attention_factor(factor: float, original_context: int) -> float:
    """The factor LongRoPE scales cos and sin by when not given: sqrt(1 + ln(factor) / ln(original
    context)) for a context grown by `factor`, else 1 (transformers and llama.cpp's converter)."""
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original_context))


def gguf_longrope(g: GGUFFile, arch: str, theta: float, rotary_dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The (short, long) frequencies of a GGUF's LongRoPE, from the tensors rope_factors_short.weight
    and rope_factors_long.weight (llama.cpp divides each pair's base frequency by them), or None."""
    names = ("rope_factors_short.weight", "rope_factors_long.weight")
    present = [n for n in names if n in g.tensors]
    if not present:
        return None
    if len(present) == 1:
        raise FormatError(f"{g.path}: tensor {present[0]} is present without its pair "
                          f"({' and '.join(names)} go together)")
    tables = []
    for name in names:
        t = g.tensors[name]
        if tuple(t.shape) != (rotary_dim // 2,) or t.type_name != "F32":
            raise FormatError(f"{g.path}: tensor {name} is {t.type_name} {tuple(t.shape)}; it must be F32 "
                              f"({rotary_dim // 2},), one factor per rotation pair")
        factors = np.frombuffer(g.tensor_bytes(name), np.float32)
        if not np.all(np.isfinite(factors) & (factors > 0)):
            raise FormatError(f"{g.path}: tensor {name} holds factors that are not finite and positive")
        tables.append((default_freqs(theta, rotary_dim) / factors).astype(np.float32))
    return tables[0], tables[1]
