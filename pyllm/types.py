"""The plain data that every layer passes around: a decoder's hyperparameters, a tokenizer's
vocabulary and rules, the token kinds, and the pre-tokenizers pyllm knows by name."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


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
    sliding_window: int | None = None  # attention sees only this many positions; None: all of them


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
