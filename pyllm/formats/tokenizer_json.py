"""Read a Hugging Face `tokenizer.json` (the `tokenizers` library's format) into TokenizerData.

Byte-level BPE files name their pre-tokenizer by structure and regex, which is mapped to a pyllm
pre-tokenizer name; SentencePiece-style BPE files (byte fallback, "▁" for spaces) become a
SentencePiece tokenizer whose scores follow the merge order. BOS/EOS come from the post-processor
and from tokenizer_config.json when it sits beside the file.
"""
from __future__ import annotations

import json
import os
from typing import Any

from ..errors import FormatError
from ..types import BYTE, CONTROL, NORMAL, PRE_TOKENIZERS, USER_DEFINED, TokenizerData

# the regexes as tokenizer.json spells them (\p{L}) -> pyllm pre-tokenizer names
_SPLIT_PATTERNS = {
    PRE_TOKENIZERS[name].pattern.replace(r"\pL", r"\p{L}").replace(r"\pN", r"\p{N}"): name
    for name in ("llama-bpe", "qwen2", "gpt2")
}


def _pre_tokenizer_name(pre: Any) -> str:
    """Recognise the pre-tokenizer structures that pyllm implements."""
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre] if pre else []
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        if steps[0].get("add_prefix_space"):
            raise FormatError("ByteLevel with add_prefix_space is not supported")
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern in _SPLIT_PATTERNS and steps[0].get("behavior") == "Isolated":
            return _SPLIT_PATTERNS[pattern]
    raise FormatError(f"pre-tokenizer {json.dumps(pre)[:200]} is not one pyllm knows "
                      "(byte-level GPT-2, SmolLM, Llama 3 or Qwen2)")


def _special_ids(cfg: dict, vocab: dict[str, int], post: Any) -> tuple[int | None, int | None, bool]:
    def ident(key: str) -> int | None:
        v = cfg.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        return vocab.get(v) if isinstance(v, str) else None

    bos, eos = ident("bos_token"), ident("eos_token")
    add_bos = bool(cfg.get("add_bos_token", False))
    if post and post.get("type") == "TemplateProcessing":  # e.g. single: "<s> $A"
        first = (post.get("single") or [{}])[0]
        if "SpecialToken" in first:
            name = first["SpecialToken"]["id"]
            add_bos, bos = True, vocab.get(name, bos)
    return bos, eos, add_bos


def read_tokenizer_json(path: str) -> tuple[TokenizerData, bool]:
    """The tokenizer in a tokenizer.json, and whether its BPE ignores merges for whole-vocab words."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"not valid JSON ({exc})") from None
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise FormatError(f"tokenizer model {model.get('type')!r} is not supported (only BPE)")
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    for t in spec.get("added_tokens") or []:
        vocab[t["content"]] = t["id"]
    size = max(vocab.values()) + 1 if vocab else 0
    tokens = [""] * size
    for t, i in vocab.items():
        tokens[i] = t
    types = [NORMAL] * size
    for t in spec.get("added_tokens") or []:
        types[t["id"]] = CONTROL if t.get("special") else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]

    cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer_config.json")
    cfg = json.load(open(cfg_path, encoding="utf-8")) if os.path.exists(cfg_path) else {}
    bos, eos, add_bos = _special_ids(cfg, vocab, spec.get("post_processor"))

    if model.get("byte_fallback"):  # SentencePiece-style BPE
        scores = [0.0] * size
        for rank, m in enumerate(merges):
            piece = m.replace(" ", "", 1)
            if piece in vocab:
                scores[vocab[piece]] = max(scores[vocab[piece]] if scores[vocab[piece]] else -1e30, -float(rank))
        for t, i in vocab.items():
            if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                types[i] = BYTE
        unk = vocab.get(model.get("unk_token")) if model.get("unk_token") else None
        data = TokenizerData(model="llama", tokens=tokens, token_types=types, scores=scores, bos_id=bos,
                             eos_id=eos, unk_id=unk, add_bos=add_bos, add_space_prefix=True)
        return data, False

    data = TokenizerData(model="gpt2", tokens=tokens, token_types=types, merges=merges,
                         pre=_pre_tokenizer_name(spec.get("pre_tokenizer")), bos_id=bos, eos_id=eos,
                         add_bos=add_bos)
    return data, bool(model.get("ignore_merges", False))
