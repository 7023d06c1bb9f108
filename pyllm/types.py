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
    rope_scaling: str | None = None  # the RoPE scaling (llama3, linear, yarn, longrope) whose frequencies tensor rope_freq holds
    rope_attn_factor: float | None = None  # cos and sin scaled by it (YaRN); None: 1
    qk_norm: bool = False              # each q and k head is RMSNormed (attn_q_norm, attn_k_norm) before RoPE
    nope_layers: tuple[int, ...] = ()  # layers (ascending indices) whose q and k are not rotated (SmolLM3's NoPE)
    rope_dim: int | None = None        # leading dimensions of each q/k head that RoPE rotates; None: head_dim
    rope_long_context: int | None = None  # LongRoPE: a context longer than this rotates by tensor rope_freq_long
    full_attention_layers: tuple[int, ...] = ()  # with sliding_window: layers that see every position (Gemma 3's global ones)
    rope_theta_swa: float | None = None  # RoPE base of the sliding-window layers (Gemma 3's local ones); None: rope_theta
    activation: str = "silu"           # the MLP gate's activation: silu (SwiGLU) or gelu_tanh (GELU, tanh approximation)
    embed_scale: float | None = None   # token embeddings are multiplied by it (Gemma: sqrt(dim)); None: 1
    attn_scale: float | None = None    # q.k is multiplied by it (Gemma 3: query_pre_attn_scalar^-0.5); None: head_dim^-0.5
    post_norms: bool = False           # attention and MLP outputs are RMSNormed before the residual add (Gemma)

    @property
    def rotary_dim(self) -> int:
        """Dimensions of each q/k head that RoPE rotates (all of them unless partial, as Phi-4-mini's 3/4)."""
        return self.head_dim if self.rope_dim is None else self.rope_dim


@dataclass
class TokenizerData:
    """Everything a tokenizer needs, as stored in the model file."""

    model: str                       # a TOKENIZER_MODELS name: "gpt2", "llama", "gemma4" or "bert"
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
    nfc: bool = False                  # BPE: text is normalised to NFC first (Qwen2, GPT-NeoX, Command-R)
    lowercase: bool = True             # WordPiece: BERT's normaliser lowercases ...
    strip_accents: bool | None = None  # ... and strips accents (None: when it lowercases)


# The tokenizer models pyllm runs, by GGUF name (tokenizer.ggml.model)
TOKENIZER_MODELS = {"gpt2": "byte-level BPE", "llama": "SentencePiece", "gemma4": "BPE over raw text",
                    "bert": "WordPiece"}

# Token kinds, numbered as GGUF's tokenizer.ggml.token_type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a SentencePiece piece standing for one byte


class PreTokenizer(NamedTuple):
    r"""How BPE splits text into words before merging: a chain of regexes (\p{L}, \p{N}, \p{M},
    \p{P}, \p{S} and \s as Oniguruma defines them), each splitting every piece the one before made
    into its matches and the runs of text between them, as Hugging Face's Split pre-tokenizer
    ("Isolated") and llama.cpp's regex lists do. byte_level: words are UTF-8 bytes mapped to
    GPT-2's printable characters (else raw text, spaces written "▁", byte fallback <0xXX>)."""

    patterns: tuple[str, ...]
    ignore_merges: bool = False  # a word that is a whole vocabulary entry is that token (Llama 3)
    byte_level: bool = True
    nfc: bool = False  # the models' Hugging Face tokenizer normalises text to NFC first (llama.cpp does not)


_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_DIGITS = r"\p{N}"  # every numeric character its own word (tokenizers' Digits, individual_digits)
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"  # DeepSeek's runs of CJK and Hangul, as spelled
_LATIN_LETTERS = (  # DeepSeek LLM's letter class: Latin, Greek, Cyrillic, Armenian, Georgian, ...
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134"
    "\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee"
    "\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf"
    "\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943")

# The pre-tokenizers by GGUF name (tokenizer.ggml.pre), with the regexes llama.cpp's llama-vocab.cpp
# gives each name; the tokenizer runs them, the tokenizer.json reader recognises some. Where a name
# stands for something other than the Hugging Face tokenizer of the models that carry it, the table
# follows Hugging Face, which the models were trained with (README, "Tokenizers"): Qwen2, GPT-NeoX
# (mpt) and Command-R normalise to NFC, which llama.cpp leaves out.
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer((_GPT2,)),
    "gpt2": PreTokenizer((_GPT2,)),
    "gpt-2": PreTokenizer((_GPT2,)),
    "mpt": PreTokenizer((_GPT2,), nfc=True),
    "smollm": PreTokenizer((_DIGITS, _GPT2)),
    "starcoder": PreTokenizer((_DIGITS, _GPT2)),
    "refact": PreTokenizer((_DIGITS, _GPT2)),
    "command-r": PreTokenizer((_DIGITS, _GPT2), nfc=True),
    "falcon": PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]")),
    "llama-bpe": PreTokenizer((_LLAMA3,), ignore_merges=True),
    "llama3": PreTokenizer((_LLAMA3,), ignore_merges=True),
    "qwen2": PreTokenizer((_QWEN2,), nfc=True),
    # (no NFC: llama.cpp's suite expects "e" + U+0301 as two tokens, although transformers'
    # Qwen3_5Tokenizer class normalises to NFC when built without a tokenizer.json)
    "qwen35": PreTokenizer((_QWEN35,)),
    "deepseek-llm": PreTokenizer(("[\r\n]", rf"\s?[{_LATIN_LETTERS}]+",
                                  "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
                                  r"\s+$", _CJK, r"\p{N}+")),
    "deepseek-coder": PreTokenizer(("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}")),
    # Gemma 4: BPE over raw text with spaces as "▁", split only into runs of newlines and the rest
    "gemma4": PreTokenizer(("[^\n]+|[\n]+",), byte_level=False),
}


def check_tokenizer_data(tok: TokenizerData, vocab_size: int | None = None,
                         names: Mapping[str, str] | None = None) -> None:
    """ValueError naming the field (as `names` spells it, else tokenizer.<field>) unless tok is a
    tokenizer pyllm can run; every reader runs this one check, so none lets through what another refuses."""
    def bad(field_name: str, problem: str) -> ValueError:
        return ValueError(f"{(names or {}).get(field_name, 'tokenizer.' + field_name)} {problem}")

    if not isinstance(tok.model, str) or tok.model not in TOKENIZER_MODELS:
        known = ", ".join(f"{name} ({kind})" for name, kind in TOKENIZER_MODELS.items())
        raise bad("model", f"is {tok.model!r}; pyllm runs {known}")
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
    if tok.model == "gemma4" and not tok.merges:
        raise bad("merges", "are missing; a gemma4 BPE tokenizer needs them")
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
    for name in ("add_bos", "add_eos", "add_space_prefix", "nfc", "lowercase", "strip_accents"):
        if not isinstance(getattr(tok, name), bool) and not (name == "strip_accents" and tok.strip_accents is None):
            raise bad(name, f"must be true or false, not {getattr(tok, name)!r}")


def _check_items(items: list, ok: Callable[[Any], bool], what: str,
                 bad: Callable[[str, str], ValueError], field_name: str) -> None:
    """bad(field, ...) naming the first item of items that is not ok."""
    for i, item in enumerate(items):
        if not ok(item):
            raise bad(field_name, f"entry {i} is {item!r:.60}, not {what}")
