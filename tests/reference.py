"""A plain numpy llama forward pass, written from the equations, to check the C engine against;
and a builder of small random-weight models in weights.bin form."""
from __future__ import annotations

import numpy as np

from pyllm.formats.weights import expected_tensors, write_weights
from pyllm.types import ModelConfig
from pyllm.quant import dequantize, quantize


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x: np.ndarray, positions: np.ndarray, theta: float, rot: int | None = None) -> np.ndarray:
    """Rotate adjacent pairs (x[2i], x[2i+1]) of each head's first `rot` dimensions (all by default)
    by angle pos * theta^(-2i/rot); the rest pass through.

    x: (T, n_heads, head_dim)."""
    hd = x.shape[-1] if rot is None else rot
    freq = (1.0 / theta ** (np.arange(0, hd, 2) / hd)).astype(np.float32)
    angle = (positions[:, None].astype(np.float32) * freq).astype(np.float64)  # (T, hd/2)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    a, b = x[..., 0:hd:2], x[..., 1:hd:2]
    out = x.copy()
    out[..., 0:hd:2] = a * cos - b * sin
    out[..., 1:hd:2] = a * sin + b * cos
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (PyTorch's gelu(approximate="tanh"), gelu_pytorch_tanh)."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def forward(w: dict[str, np.ndarray], cfg: ModelConfig, tokens: list[int]) -> np.ndarray:
    """Logits (T, vocab) for tokens at positions 0..T-1, in float64."""
    T, hd = len(tokens), cfg.head_dim
    group = cfg.n_heads // cfg.n_kv_heads
    pos = np.arange(T)
    x = w["token_embd.weight"][tokens].astype(np.float64)  # (T, dim)
    if cfg.embed_scale is not None:
        x = x * cfg.embed_scale
    causal = np.triu(np.full((T, T), -np.inf), k=1)
    # a sliding layer's query i sees keys j with i - window < j <= i
    windowed = causal + (np.tril(np.full((T, T), -np.inf), k=-cfg.sliding_window) if cfg.sliding_window else 0)
    scale = cfg.attn_scale if cfg.attn_scale is not None else 1 / np.sqrt(hd)
    for i in range(cfg.n_layers):
        sliding = cfg.sliding_window is not None and i not in cfg.full_attention_layers
        mask = windowed if sliding else causal
        theta = cfg.rope_theta_swa if sliding and cfg.rope_theta_swa is not None else cfg.rope_theta
        p = f"blk.{i}."
        h = rmsnorm(x, w[p + "attn_norm.weight"], cfg.norm_eps)
        q, k, v = (h @ w[p + f"attn_{n}.weight"].T for n in "qkv")
        if cfg.qkv_bias:
            q, k, v = q + w[p + "attn_q.bias"], k + w[p + "attn_k.bias"], v + w[p + "attn_v.bias"]
        q, k = q.reshape(T, cfg.n_heads, hd), k.reshape(T, cfg.n_kv_heads, hd)
        if cfg.qk_norm:  # every head on its own, before RoPE
            q = rmsnorm(q, w[p + "attn_q_norm.weight"], cfg.norm_eps)
            k = rmsnorm(k, w[p + "attn_k_norm.weight"], cfg.norm_eps)
        if i not in cfg.nope_layers:  # NoPE layers (SmolLM3) leave q and k unrotated
            q = rope(q, pos, theta, cfg.rotary_dim)                        # (T, nh, hd)
            k = rope(k, pos, theta, cfg.rotary_dim)                        # (T, nkv, hd)
        v = v.reshape(T, cfg.n_kv_heads, hd)
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)    # (T, nh, hd)
        att = np.einsum("thd,shd->hts", q, k) * scale + mask              # (nh, T, T)
        att = np.exp(att - att.max(axis=-1, keepdims=True))
        att /= att.sum(axis=-1, keepdims=True)
        y = np.einsum("hts,shd->thd", att, v).reshape(T, cfg.n_heads * hd)
        a = y @ w[p + "attn_output.weight"].T
        x = x + (rmsnorm(a, w[p + "post_attention_norm.weight"], cfg.norm_eps) if cfg.post_norms else a)
        h = rmsnorm(x, w[p + "ffn_norm.weight"], cfg.norm_eps)
        g, u = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        act = gelu_tanh(g) if cfg.activation == "gelu_tanh" else g / (1 + np.exp(-g))
        f = (act * u) @ w[p + "ffn_down.weight"].T
        x = x + (rmsnorm(f, w[p + "post_ffw_norm.weight"], cfg.norm_eps) if cfg.post_norms else f)
    x = rmsnorm(x, w["output_norm.weight"], cfg.norm_eps)
    out = w["token_embd.weight"] if cfg.tied_embeddings else w["output.weight"]
    return x @ out.T


def random_model(path, cfg: ModelConfig, type_name: str = "f32", seed: int = 0) -> dict[str, np.ndarray]:
    """Write a random-weight model to `path`; returns its weights as float arrays (after encoding)."""
    rng = np.random.default_rng(seed)
    weights, sources = {}, []
    for name, shape in expected_tensors(cfg).items():
        if name.endswith("norm.weight"):
            data = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            data = 0.1 * rng.standard_normal(shape)
        else:
            data = rng.standard_normal(shape) / np.sqrt(shape[-1]) * (3.0 if "token_embd" in name else 1.0)
        data = data.astype(np.float32)
        t = type_name if len(shape) == 2 else "f32"
        raw = quantize(data if data.ndim == 2 else data[None], t)
        weights[name] = dequantize(raw, t, shape).astype(np.float64)
        sources.append((name, t, shape, lambda raw=raw: raw))
    write_weights(path, cfg, None, sources)
    return weights
