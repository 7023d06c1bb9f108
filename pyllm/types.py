"""The plain data that every layer passes around: a decoder's hyperparameters, a tokenizer's
vocabulary and rules, the token kinds, and the pre-tokenizers pyllm knows by name."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a llama-family decoder, as a weights.bin stores them (docs/format.md)."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    max_seq_len: int
    rope_theta: float
    norm_eps: float
    tied_embeddings: bool
    qkv_bias: bool = False
    architecture: str = "llama"
    sliding_window: int | None = None  # a query sees only this many positions (itself included); None: all
    rope_scaling: str | None = None  # the RoPE scaling (llama3, linear, yarn) whose frequencies tensor rope_freq holds
    rope_attn_factor: float | None = None  # cos and sin scaled by it (YaRN); None: 1
    qk_norm: bool = False              # each q and k head is RMSNormed (attn_q_norm, attn_k_norm) before RoPE
    nope_layers: tuple[int, ...] = ()  # layers (ascending indices) whose q and k are not rotated (SmolLM3's NoPE)
    full_attention_layers: tuple[int, ...] = ()  # with sliding_window: layers that see every position (Gemma 3's global ones)
    rope_theta_swa: float | None = None  # RoPE base of the sliding-window layers (Gemma 3's local ones); None: rope_theta
    activation: str = "silu"           # the MLP gate's activation: silu (SwiGLU) or gelu_tanh (GELU, tanh approximation)
    embed_scale: float | None = None   # token embeddings are multiplied by it (Gemma: sqrt(dim)); None: 1
    attn_scale: float | None = None    # q.k is multiplied by it (Gemma 3: query_pre_attn_scalar^-0.5); None: head_dim^-0.5
    post_norms: bool = False           # attention and MLP outputs are RMSNormed before the residual add (Gemma)


@dataclass
class TokenizerData:
    """Everything a tokenizer needs, as stored in the model file."""

    model: str                       # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    token_types: list[int] = field(default_factory=list)
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    pre: str | None = None           # pre-tokenizer name (GGUF tokenizer.ggml.pre)
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool = False


# Token kinds, numbered as GGUF's tokenizer.ggml.token_type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a SentencePiece piece standing for one byte


class PreTokenizer(NamedTuple):
    """How byte-level BPE splits text into words before merging: optionally every numeric
    character on its own first, then a regex (with \\pL, \\pN, \\s as Oniguruma defines them)."""

    split_digits: bool
    pattern: str


_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\pL+| ?\pN+| ?[^\s\pL\pN]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\pL\pN]?\pL+|\pN{1,3}| ?[^\s\pL\pN]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\pL\pN]?\pL+|\pN| ?[^\s\pL\pN]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# The pre-tokenizers by GGUF name (tokenizer.ggml.pre): the tokenizer runs them, the tokenizer.json
# reader recognises them. Byte-level BPE with the Llama 3 pre-tokenizer ignores merges for words
# that are whole vocabulary entries.
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer(False, _GPT2),
    "gpt2": PreTokenizer(False, _GPT2),
    "smollm": PreTokenizer(True, _GPT2),
    "starcoder": PreTokenizer(True, _GPT2),
    "llama-bpe": PreTokenizer(False, _LLAMA3),
    "llama3": PreTokenizer(False, _LLAMA3),
    "qwen2": PreTokenizer(False, _QWEN2),
}
IGNORE_MERGES = ("llama-bpe", "llama3")


def check_tokenizer_data(tok: TokenizerData, vocab_size: int | None = None,
                         names: Mapping[str, str] | None = None) -> None:
    """ValueError naming the field (as `names` spells it, else tokenizer.<field>) unless tok is a
    tokenizer pyllm can run; every reader runs this one check, so none lets through what another refuses."""
    def bad(field_name: str, problem: str) -> ValueError:
        return ValueError(f"{(names or {}).get(field_name, 'tokenizer.' + field_name)} {problem}")

    if tok.model not in ("gpt2", "llama"):
        raise bad("model", f"is {tok.model!r}; pyllm runs gpt2 (byte-level BPE) and llama (SentencePiece)")
    tokens = tok.tokens
    if not isinstance(tokens, list) or not tokens:
        raise bad("tokens", "must be a non-empty list of strings")
    _check_items(tokens, lambda t: isinstance(t, str), "a string", bad, "tokens")
    n = len(tokens)
    if vocab_size is not None and n != vocab_size:
        raise bad("tokens", f"must list {vocab_size} tokens (the model's vocab_size), not {n}")
    if not isinstance(tok.token_types, list) or tok.token_types and len(tok.token_types) != n:
        raise bad("token_types", f"must be empty or list one kind per token ({n})")
    _check_items(tok.token_types, lambda t: type(t) is int and NORMAL <= t <= BYTE,
                 f"a token kind ({NORMAL} to {BYTE})", bad, "token_types")
    if tok.scores is None:
        if tok.model == "llama":
            raise bad("scores", "are missing; a SentencePiece tokenizer needs them")
    elif not isinstance(tok.scores, list) or len(tok.scores) != n:
        raise bad("scores", f"must list one score per token ({n})")
    else:
        _check_items(tok.scores, lambda s: type(s) in (int, float) and not math.isnan(s), "a number",
                     bad, "scores")
    if not isinstance(tok.merges, list):
        raise bad("merges", "must be a list of strings")
    _check_items(tok.merges, lambda m: isinstance(m, str) and " " in m,
                 "two tokens separated by a space", bad, "merges")
    known = PRE_TOKENIZERS if tok.model == "gpt2" else None
    if tok.pre is not None and (not isinstance(tok.pre, str) or known is not None and tok.pre not in known):
        raise bad("pre", f"is {tok.pre!r}, not a pre-tokenizer pyllm knows ({', '.join(PRE_TOKENIZERS)})")
    for name in ("bos_id", "eos_id", "unk_id", "pad_id"):
        value = getattr(tok, name)
        if value is not None and (type(value) is not int or not 0 <= value < n):
            raise bad(name, f"is {value!r}, not a token id (0 to {n - 1})")
    for name in ("add_bos", "add_eos", "add_space_prefix"):
        if not isinstance(getattr(tok, name), bool):
            raise bad(name, f"must be true or false, not {getattr(tok, name)!r}")


def _check_items(items: list, ok: Callable[[Any], bool], what: str,
                 bad: Callable[[str, str], ValueError], field_name: str) -> None:
    """bad(field, ...) naming the first item of items that is not ok."""
    for i, item in enumerate(items):
        if not ok(item):
            raise bad(field_name, f"entry {i} is {item!r:.60}, not {what}")
