"""What a model family tells pyllm: how its Hugging Face config.json and its GGUF metadata spell the
decoder's hyperparameters, what its tensors are called there, what it needs that the decoder lacks
(refused, saying what), and how its config becomes the C core's structs.

`Family` implements the llama decoder (RMSNorm, RoPE over the whole head, grouped-query attention,
SwiGLU). A family module subclasses it and overrides only what differs.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from ..errors import FormatError
from ..formats.gguf import GGUFFile
from ..formats.jsontext import JsonObject, short_repr
from ..formats.weights import check_config, expected_tensors
from ..types import ModelConfig
from . import rope


class Family:
    """The llama decoder as a family: subclasses set their names and override what differs."""

    name = "llama"
    hf_classes: tuple[str, ...] = ()   # config.json "architectures" entries
    gguf_names: tuple[str, ...] = ()   # general.architecture values
    qkv_bias = False                   # q/k/v projections carry biases
    qk_norm = False                    # each q and k head is RMSNormed before RoPE (q_norm, k_norm)
    gguf_half_split_rope = False       # GGUF q/k rows rotate halves (NeoX style), not adjacent pairs
    hf_sliding = False                 # config.json's sliding_window can apply (else refused when asked for)
    hf_window_by_default = False       # config.json's sliding_window applies without use_sliding_window
    hf_tied_by_default = False         # tie_word_embeddings when config.json leaves it out
    hf_default_theta = 10000.0         # rope_theta when config.json leaves it out
    partial_rotary = False             # RoPE may rotate only the leading part of each head (rope_dim)
    hf_rope_types: tuple[str, ...] = ("default",) + rope.SCALED_TYPES  # config.json RoPE types read

    # -- Hugging Face config.json -> ModelConfig --------------------------------------------------

    def config_from_hf(self, raw: JsonObject, n_tensors: int, n_bytes: int) -> tuple[ModelConfig, list[str]]:
        """The ModelConfig of a config.json (`raw`, labelled and failing with the directory's name),
        and notes on choices made; refuses what the decoder cannot run, saying what is missing.
        Counts are bounded by what the safetensors files hold (n_tensors tensors, n_bytes bytes of
        data) before anything proportional to them is built."""
        arch = next((a for a in raw.strings("architectures") if a in self.hf_classes), self.name)
        notes: list[str] = []

        def refuse(what: str) -> FormatError:
            return raw.fail(f"{arch} with {what} is not supported by pyllm")

        self.check_hf(raw, refuse)
        n_layers = raw.integer("num_hidden_layers")
        if n_layers > n_tensors:
            raise raw.fail(f"config.json: num_hidden_layers {n_layers} is more than the {n_tensors} tensors "
                           "the safetensors files hold")
        dim, n_heads = raw.integer("hidden_size"), raw.integer("num_attention_heads")
        head_dim = raw.integer("head_dim", None)
        if head_dim is None:
            if dim % n_heads:
                raise raw.fail(f"config.json: num_attention_heads {n_heads} does not divide hidden_size {dim} "
                               "(and head_dim is not given)")
            head_dim = dim // n_heads
        n_kv_heads = raw.integer("num_key_value_heads", n_heads)
        if head_dim % 2 or n_heads % n_kv_heads:
            raise raw.fail(f"config.json: head size {head_dim} and heads {n_heads}/{n_kv_heads} "
                           "do not form a valid attention layout")
        max_seq = raw.integer("max_position_embeddings", 2048)
        theta = raw.obj("rope_parameters").number("rope_theta", raw.number("rope_theta", self.hf_default_theta, positive=True),
                                                  positive=True)
        rope_type = rope.hf_rope_type(raw)
        window, full_layers = self.hf_sliding_layers(raw, n_layers)
        cfg = ModelConfig(
            dim=dim, hidden_dim=raw.integer("intermediate_size"), n_layers=n_layers,
            n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
            vocab_size=raw.integer("vocab_size"), max_seq_len=max_seq,
            rope_theta=theta, norm_eps=raw.number("rms_norm_eps", 1e-6),
            tied_embeddings=raw.flag("tie_word_embeddings", self.hf_tied_by_default), qkv_bias=self.qkv_bias,
            architecture=self.name, sliding_window=window, full_attention_layers=full_layers,
            rope_scaling=None if rope_type == "default" else rope_type,
            rope_attn_factor=rope.hf_attention_factor(raw), qk_norm=self.qk_norm,
            nope_layers=self.hf_nope_layers(raw, n_layers),
        )
        need = 2 * sum(math.prod(shape) for name, shape in self.tensors(cfg).items()  # 16-bit weights at least
                       if not name.startswith("rope_freq"))  # of the tensors read, not computed
        if need > n_bytes:
            raise raw.fail(f"config.json: hidden_size {dim}, intermediate_size {cfg.hidden_dim}, num_hidden_layers "
                           f"{n_layers}, vocab_size {cfg.vocab_size} and the heads ({n_heads}/{n_kv_heads} of "
                           f"size {head_dim}) need at least {need} bytes of weights, but the safetensors "
                           f"files hold {n_bytes}")
        try:
            check_config(cfg)  # the bounds every reader applies (e.g. float32 range), named as weights.bin names them
        except ValueError as exc:
            raise raw.fail(f"config.json gives {exc}") from None
        return cfg, notes

    def check_hf(self, raw: JsonObject, refuse: Callable[[str], FormatError]) -> None:
        """Raise refuse(what) for a config.json feature the decoder does not have."""
        act = raw.get("hidden_act", raw.get("hidden_activation", "silu"))
        if act != "silu":
            raise refuse(f"activation {short_repr(act)} (only SiLU/SwiGLU)")
        rope_type = rope.hf_rope_type(raw)
        if rope_type not in self.hf_rope_types:
            implemented = ", ".join(t for t in self.hf_rope_types if t != "default")
            raise refuse(f"RoPE scaling {short_repr(rope_type)} (pyllm implements {implemented})")
        if raw.number("partial_rotary_factor", 1.0) != 1.0 and not self.partial_rotary:
            raise refuse("partial rotary embeddings")
        if raw.flag("mlp_bias"):
            raise refuse("MLP biases")
        if not self.hf_sliding and (any(t != "full_attention" for t in raw.strings("layer_types"))
                                    or raw.flag("use_sliding_window")):
            raise refuse("sliding-window attention layers")

    def hf_nope_layers(self, raw: JsonObject, n_layers: int) -> tuple[int, ...]:
        """The layers whose q and k config.json leaves unrotated: none in the llama decoder."""
        return ()

    def hf_sliding_layers(self, raw: JsonObject, n_layers: int) -> tuple[int | None, tuple[int, ...]]:
        """The attention window of config.json (or None) and the layers that still see every position.
        transformers applies `sliding_window` only where the family's config turns it on: Mistral
        always, to every layer (v0.2+ sets it to null); Qwen2 and Qwen3 with `use_sliding_window`
        (default false), to the layers `layer_types` marks, else to those from max_window_layers
        (default 28) on; Llama never."""
        window = raw.integer("sliding_window", None)
        if not self.hf_sliding or window is None or not raw.flag("use_sliding_window", self.hf_window_by_default):
            return None, ()
        if self.hf_window_by_default:  # Mistral: one mask for every layer, layer_types or not
            return window, ()
        types = self.hf_layer_types(raw, n_layers, raw.integer("max_window_layers", 28, lo=0))
        return sliding_of(window, types)

    def hf_layer_types(self, raw: JsonObject, n_layers: int, first_sliding: int) -> list[str]:
        """config.json's layer_types (checked), else every layer from first_sliding on sliding."""
        types = raw.strings("layer_types")
        if not types:
            return ["sliding_attention" if i >= first_sliding else "full_attention" for i in range(n_layers)]
        if len(types) != n_layers or any(t not in ("sliding_attention", "full_attention") for t in types):
            raise raw.error("layer_types", f"a list of {n_layers} entries (num_hidden_layers), each "
                            "sliding_attention or full_attention", types)
        return types

    def hf_tensor_names(self, cfg: ModelConfig) -> dict[str, tuple]:
        """weights.bin tensor name -> (Hugging Face name, heads whose rows to reorder, or 0), or
        (name, heads, (first row, end row)) for a part of a fused Hugging Face tensor.

        Hugging Face rotates the two halves of each head's rotated part (x[i], x[i + r/2]); the
        decoder rotates adjacent pairs (x[2i], x[2i+1]), so q and k rows (and biases) are reordered
        per head (common.pair_order)."""
        names = {"token_embd.weight": ("model.embed_tokens.weight", 0),
                 "output_norm.weight": ("model.norm.weight", 0)}
        if not cfg.tied_embeddings:
            names["output.weight"] = ("lm_head.weight", 0)
        for i in range(cfg.n_layers):
            hf, ours = f"model.layers.{i}.", f"blk.{i}."
            names.update({
                ours + "attn_norm.weight": (hf + "input_layernorm.weight", 0),
                ours + "attn_q.weight": (hf + "self_attn.q_proj.weight", cfg.n_heads),
                ours + "attn_k.weight": (hf + "self_attn.k_proj.weight", cfg.n_kv_heads),
                ours + "attn_v.weight": (hf + "self_attn.v_proj.weight", 0),
                ours + "attn_output.weight": (hf + "self_attn.o_proj.weight", 0),
                ours + "ffn_norm.weight": (hf + "post_attention_layernorm.weight", 0),
                ours + "ffn_gate.weight": (hf + "mlp.gate_proj.weight", 0),
                ours + "ffn_up.weight": (hf + "mlp.up_proj.weight", 0),
                ours + "ffn_down.weight": (hf + "mlp.down_proj.weight", 0),
            })
            if cfg.qkv_bias:
                names.update({
                    ours + "attn_q.bias": (hf + "self_attn.q_proj.bias", cfg.n_heads),
                    ours + "attn_k.bias": (hf + "self_attn.k_proj.bias", cfg.n_kv_heads),
                    ours + "attn_v.bias": (hf + "self_attn.v_proj.bias", 0),
                })
            if cfg.qk_norm:  # one head's weight, reordered like each head's rows
                names.update({
                    ours + "attn_q_norm.weight": (hf + "self_attn.q_norm.weight", 1),
                    ours + "attn_k_norm.weight": (hf + "self_attn.k_norm.weight", 1),
                })
        return names

    def hf_computed_tensors(self, raw: JsonObject, cfg: ModelConfig) -> dict[str, np.ndarray]:
        """weights.bin tensors computed from config.json rather than read: a scaled RoPE's frequencies."""
        def refuse(what: str) -> FormatError:
            return raw.fail(f"{self.name} with {what} is not supported by pyllm")

        freqs = rope.hf_freqs(raw, cfg.rope_theta, cfg.rotary_dim, refuse)
        return {} if freqs is None else {"rope_freq": freqs}

    def hf_value_shift(self, name: str) -> float:
        """A constant added (in float32) to every value of weights.bin tensor `name` read from
        Hugging Face: 0 in the llama decoder (Gemma folds the 1 of its (1 + w) norms in here)."""
        return 0.0

    # Hugging Face tensors that carry nothing the decoder needs
    hf_ignored_suffixes: tuple[str, ...] = ("rotary_emb.inv_freq",)

    # -- GGUF metadata -> ModelConfig -------------------------------------------------------------

    def config_from_gguf(self, g: GGUFFile) -> ModelConfig:
        """The ModelConfig of a GGUF of this family; refuses what the decoder cannot run, and any
        hyperparameter out of range, naming its key."""
        arch = g.meta("general.architecture", kind=str)
        p = arch + "."

        def count(key: str, default: int | None = None) -> int:
            v = g.meta(p + key, default, kind=int)
            if not 1 <= v < 1 << 31:
                raise FormatError(f"{g.path}: metadata {p + key} is {v}, not a positive count")
            return v

        def number(key: str, default: float) -> float:
            v = float(g.meta(p + key, default, kind=(int, float)))
            if not 0 <= v < float("inf"):
                raise FormatError(f"{g.path}: metadata {p + key} is {v}, not a finite non-negative number")
            return v

        n_layers = count("block_count")
        if n_layers > len(g.tensors):  # before anything builds a per-layer table
            raise FormatError(f"{g.path}: metadata {p}block_count is {n_layers}, but the file has only "
                              f"{len(g.tensors)} tensors")
        dim, n_heads = count("embedding_length"), count("attention.head_count")
        head_dim = count("attention.key_length", max(dim // n_heads, 1))
        if count("attention.value_length", head_dim) != head_dim:
            raise FormatError(f"{g.path}: key and value head sizes differ, which pyllm does not support")
        rope_dim = count("rope.dimension_count", head_dim)
        if rope_dim != head_dim and not (self.partial_rotary and rope_dim <= head_dim and rope_dim % 2 == 0):
            raise FormatError(f"{g.path}: partial rotary embeddings (rope.dimension_count {rope_dim}, head size "
                              f"{head_dim}) are not supported for {arch}")
        if "token_embd.weight" not in g.tensors:
            raise FormatError(f"{g.path}: tensor token_embd.weight is missing")
        cfg = ModelConfig(
            dim=dim,
            hidden_dim=count("feed_forward_length"),
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=count("attention.head_count_kv", n_heads),
            head_dim=head_dim,
            vocab_size=g.tensors["token_embd.weight"].shape[0],
            max_seq_len=count("context_length", 2048),
            rope_theta=number("rope.freq_base", 10000.0),
            norm_eps=number("attention.layer_norm_rms_epsilon", 1e-5),
            tied_embeddings="output.weight" not in g.tensors,
            qkv_bias="blk.0.attn_q.bias" in g.tensors,
            architecture=self.name,
            sliding_window=g.meta(p + "attention.sliding_window", 0, kind=int) or None,  # 0: none
            full_attention_layers=(),
            rope_scaling=rope.gguf_scaling(g, arch),
            qk_norm=self.qk_norm,
            nope_layers=self.gguf_nope_layers(n_layers),
            rope_dim=None if rope_dim == head_dim else rope_dim,
        )
        if cfg.sliding_window is not None:
            window, full = self.gguf_sliding_layers(g, cfg.sliding_window, n_layers)
            cfg = dataclasses.replace(cfg, sliding_window=window, full_attention_layers=full)
        try:
            check_config(cfg)
        except ValueError as exc:
            raise FormatError(f"{g.path}: {exc}") from None
        return cfg

    def gguf_nope_layers(self, n_layers: int) -> tuple[int, ...]:
        """The layers a GGUF of this family runs without RoPE: none in the llama decoder."""
        return ()

    gguf_default_pattern: int | None = None  # llama.cpp's sliding-window pattern when the file has none

    def gguf_sliding_layers(self, g: GGUFFile, window: int, n_layers: int) -> tuple[int | None, tuple[int, ...]]:
        """(window, full-attention layers) as llama.cpp reads them: attention.sliding_window_pattern,
        one flag per layer (true: sliding) or a count n (layer i slides when i % n < n - 1), else the
        family's default pattern, else every layer slides."""
        key = g.meta("general.architecture", kind=str) + ".attention.sliding_window_pattern"
        if key not in g.metadata:
            if self.gguf_default_pattern is None:
                return window, ()
        pattern = g.meta(key, self.gguf_default_pattern, kind=(int, list))
        if isinstance(pattern, list):
            if len(pattern) != n_layers or any(not isinstance(f, bool) for f in pattern):
                raise FormatError(f"{g.path}: metadata {key} must hold one flag per layer ({n_layers})")
            types = ["sliding_attention" if f else "full_attention" for f in pattern]
        else:
            if isinstance(pattern, bool) or not 1 <= pattern < 1 << 31:
                raise FormatError(f"{g.path}: metadata {key} is {pattern!r}, not a positive count or a list of flags")
            types = ["sliding_attention" if i % pattern < pattern - 1 else "full_attention" for i in range(n_layers)]
        return sliding_of(window, types)

    # GGUF tensors read into others: llama.cpp's RoPE factors become the rope_freq frequencies
    gguf_consumed: tuple[str, ...] = ("rope_freqs.weight",)

    def gguf_source(self, name: str, cfg: ModelConfig) -> tuple[str, int, tuple[int, int] | None]:
        """Where weights.bin tensor `name` comes from in a GGUF: (GGUF tensor, heads whose rows to
        reorder into adjacent RoPE pairs or 0, (first row, end row) of a fused tensor or None)."""
        return name, self.gguf_row_heads(name, cfg), None

    def gguf_computed_tensors(self, g: GGUFFile, cfg: ModelConfig) -> dict[str, np.ndarray]:
        """weights.bin tensors computed from a GGUF rather than copied: a scaled RoPE's frequencies."""
        freqs = rope.gguf_freqs(g, g.meta("general.architecture", kind=str), cfg.rope_theta, cfg.rotary_dim)
        return {} if freqs is None else {"rope_freq": freqs}

    def gguf_row_heads(self, name: str, cfg: ModelConfig) -> int:
        """Heads over which a GGUF tensor's rows must be reordered into adjacent RoPE pairs, or 0
        (a per-head norm weight is one head's worth of rows)."""
        if not self.gguf_half_split_rope:
            return 0
        heads = {"attn_q": cfg.n_heads, "attn_k": cfg.n_kv_heads, "attn_q_norm": 1, "attn_k_norm": 1}
        return heads.get(name.split(".")[-2], 0)

    # -- ModelConfig -> the C core -----------------------------------------------------------------

    def tensors(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor a weights.bin of this family and config holds."""
        return expected_tensors(cfg)

    def c_config(self, cfg: ModelConfig) -> dict[str, Any]:
        """The fields of the C core's pyllm_config."""
        return {"dim": cfg.dim, "hidden_dim": cfg.hidden_dim, "n_layers": cfg.n_layers,
                "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
                "vocab_size": cfg.vocab_size, "rope_theta": cfg.rope_theta, "norm_eps": cfg.norm_eps,
                "rope_attn_factor": 1.0 if cfg.rope_attn_factor is None else cfg.rope_attn_factor,
                "rope_dim": cfg.rotary_dim, "rope_long_ctx": cfg.rope_long_context or 0,
                "embed_scale": 1.0 if cfg.embed_scale is None else cfg.embed_scale,
                "attn_scale": 0.0 if cfg.attn_scale is None else cfg.attn_scale,
                "ffn_gelu": int(cfg.activation == "gelu_tanh"), "sliding_window": cfg.sliding_window or 0}

    def c_layer(self, cfg: ModelConfig, i: int) -> tuple[dict[str, str], dict[str, str]]:
        """Layer i's tensors by pyllm_layer field: (matrices, float vectors), each field -> tensor name."""
        p = f"blk.{i}."
        matrices = {"wq": p + "attn_q.weight", "wk": p + "attn_k.weight", "wv": p + "attn_v.weight",
                    "wo": p + "attn_output.weight", "w_gate": p + "ffn_gate.weight",
                    "w_up": p + "ffn_up.weight", "w_down": p + "ffn_down.weight"}
        vectors = {"attn_norm": p + "attn_norm.weight", "ffn_norm": p + "ffn_norm.weight"}
        if cfg.qkv_bias:
            vectors.update({"bq": p + "attn_q.bias", "bk": p + "attn_k.bias", "bv": p + "attn_v.bias"})
        if cfg.qk_norm:
            vectors.update({"q_norm": p + "attn_q_norm.weight", "k_norm": p + "attn_k_norm.weight"})
        if cfg.post_norms:
            vectors.update({"post_attn_norm": p + "post_attention_norm.weight",
                            "post_ffn_norm": p + "post_ffw_norm.weight"})
        return matrices, vectors

    def c_sliding_layers(self, cfg: ModelConfig) -> set[int]:
        """Indices of the layers whose queries see only the last sliding_window positions."""
        if cfg.sliding_window is None:
            return set()
        return set(range(cfg.n_layers)) - set(cfg.full_attention_layers)

    def c_rope_freq_swa(self, cfg: ModelConfig) -> np.ndarray | None:
        """The sliding layers' own RoPE frequencies (from rope_theta_swa), or None: the model's."""
        if cfg.rope_theta_swa is None:
            return None
        return rope.torch_default_freqs(cfg.rope_theta_swa, cfg.rotary_dim)

    def c_globals(self, cfg: ModelConfig) -> tuple[dict[str, str], dict[str, str]]:
        """The whole-model tensors by pyllm_weights field: (matrices, float vectors)."""
        output = "token_embd.weight" if cfg.tied_embeddings else "output.weight"
        vectors = {"output_norm": "output_norm.weight"}
        if cfg.rope_scaling is not None:
            vectors["rope_freq"] = "rope_freq"
        if cfg.rope_long_context is not None:
            vectors["rope_freq_long"] = "rope_freq_long"
        return {"token_embd": "token_embd.weight", "output": output}, vectors


def sliding_of(window: int, types: list[str]) -> tuple[int | None, tuple[int, ...]]:
    """(window, full-attention layers) of per-layer types; no window when no layer slides."""
    full = tuple(i for i, t in enumerate(types) if t == "full_attention")
    return (None, ()) if len(full) == len(types) else (window, full)
