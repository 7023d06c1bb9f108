"""Read a Hugging Face `tokenizer.json` (the `tokenizers` library's format) into TokenizerData.

Byte-level BPE files name their pre-tokenizer by structure and regex, which is mapped to a pyllm
pre-tokenizer name; SentencePiece-style BPE files (byte fallback, "▁" for spaces) become a
SentencePiece tokenizer whose scores follow the merge order. BOS/EOS come from the post-processor
and from tokenizer_config.json when it sits beside the file. Every field is checked for its type,
and ids are bounded by the number of entries, before anything is built from them.
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import FormatError
from ..types import BYTE, BYTE_PIECE, CONTROL, NORMAL, PRE_TOKENIZERS, USER_DEFINED, TokenizerData
from .jsontext import JsonObject, read_json_file, short_repr

# the regexes as tokenizer.json spells them -> pyllm pre-tokenizer names
_SPLIT_PATTERNS = {PRE_TOKENIZERS[name].patterns[0]: name for name in ("llama-bpe", "qwen2", "qwen35", "gpt2")}


def _pre_tokenizer_name(pre: Any, path: str) -> str:
    """Recognise the pre-tokenizer structures that pyllm implements (flags must be real booleans);
    anything else, odd shapes included, is refused naming the field."""
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    if isinstance(steps, list) and steps and all(isinstance(s, dict) for s in steps):
        kinds = [s.get("type") for s in steps]
        first, last = steps[0], steps[-1]
        if kinds == ["ByteLevel"] and first.get("use_regex", True) is True:
            if first.get("add_prefix_space", False) is not False:
                raise FormatError(f"{path}: pre_tokenizer: ByteLevel with add_prefix_space is not supported")
            return "gpt2"
        if kinds == ["Digits", "ByteLevel"] and first.get("individual_digits") is True \
                and last.get("use_regex", True) is True:
            return "smollm"
        if kinds == ["Split", "ByteLevel"] and last.get("use_regex", True) is False:
            pattern = first.get("pattern")
            regex = pattern.get("Regex") if isinstance(pattern, dict) else None
            if isinstance(regex, str) and regex in _SPLIT_PATTERNS and first.get("behavior") == "Isolated":
                return _SPLIT_PATTERNS[regex]
    raise FormatError(f"{path}: pre_tokenizer {short_repr(pre)} is not one pyllm knows "
                      "(byte-level GPT-2, SmolLM, Llama 3, Qwen2 or Qwen3.5)")


def special_token_text(cfg: JsonObject, key: str) -> str | None:
    """A special token's text in tokenizer_config.json, given as a string or an AddedToken object
    ({"content": ...}), or None when it is missing or null."""
    if isinstance(cfg.get(key), dict):
        return cfg.obj(key).text("content")
    return cfg.text(key)


def _special_ids(cfg: JsonObject, vocab: dict[str, int], post: JsonObject) -> tuple[int | None, int | None, bool]:
    """BOS id, EOS id and whether BOS is added: tokenizer_config.json's choices, then a
    post-processor template that starts with a special token (e.g. single: "<s> $A"), also as one
    step of a Sequence of post-processors."""
    bos_text, eos_text = special_token_text(cfg, "bos_token"), special_token_text(cfg, "eos_token")
    bos = vocab.get(bos_text) if bos_text is not None else None
    eos = vocab.get(eos_text) if eos_text is not None else None
    add_bos = cfg.flag("add_bos_token", False)
    if post.get("type") == "Sequence":  # Llama 3: ByteLevel, then the template that adds BOS
        post = next((p for p in post.objects("processors") if p.get("type") == "TemplateProcessing"), post)
    if post.get("type") == "TemplateProcessing":
        single = post.objects("single")
        if single and "SpecialToken" in single[0].raw:
            name = single[0].obj("SpecialToken").text("id")
            if name is None:
                raise single[0].error("SpecialToken.id", "a string", None)
            add_bos, bos = True, vocab.get(name, bos)
    return bos, eos, add_bos


def _vocabulary(spec: JsonObject, model: JsonObject, path: str) -> tuple[dict[str, int], list[JsonObject]]:
    """Token -> id from model.vocab and added_tokens, and the added_tokens entries. Every id must be
    below the number of entries in model.vocab plus added_tokens, so the token list built from the
    ids is no longer than the file's own lists."""
    raw_vocab, added = model.obj("vocab").raw, spec.objects("added_tokens")
    if not raw_vocab:
        raise FormatError(f"{path}: model.vocab is missing or empty")
    entries = len(raw_vocab) + len(added)

    def check(where: str, token: str, i: Any) -> int:
        if isinstance(i, bool) or not isinstance(i, int):
            raise FormatError(f"{path}: {where}: the id of {short_repr(token)} must be an integer, "
                              f"got {short_repr(i)}")
        if not 0 <= i < entries:
            raise FormatError(f"{path}: {where}: the id of {short_repr(token)} is {i}, outside 0..{entries - 1} "
                              f"(ids must be below {entries}, the number of entries in model.vocab and "
                              "added_tokens)")
        return i

    vocab = {t: check("model.vocab", t, i) for t, i in raw_vocab.items()}
    for n, t in enumerate(added):
        content = t.text("content")
        if content is None:
            raise t.error("content", "a string", None)
        vocab[content] = check(f"added_tokens[{n}].id", content, t.get("id"))
    return vocab, added


def _merges(model: JsonObject, path: str) -> list[str]:
    """model.merges as "a b" strings; each must be such a string or a pair of strings."""
    merges = []
    for n, m in enumerate(model.array("merges")):
        if isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            m = " ".join(m)
        if not isinstance(m, str):
            raise FormatError(f"{path}: model.merges[{n}] must be a string or a pair of strings, "
                              f"got {short_repr(m)}")
        merges.append(m)
    return merges


def read_tokenizer_json(path: str, config: JsonObject | None = None) -> tuple[TokenizerData, bool]:
    """The tokenizer in a tokenizer.json, and whether its BPE ignores merges for whole-vocab words.
    `config` is tokenizer_config.json (read from beside the file when not given). A malformed
    file is a FormatError naming the file and the field."""
    spec = JsonObject(read_json_file(path), path)
    model = spec.obj("model")
    if model.get("type") != "BPE":
        raise FormatError(f"{path}: model.type {short_repr(model.get('type'))} is not supported (only BPE)")
    vocab, added = _vocabulary(spec, model, path)
    size = max(vocab.values()) + 1
    tokens = [""] * size
    for t, i in vocab.items():
        tokens[i] = t
    types = [NORMAL] * size
    for t in added:
        types[t.raw["id"]] = CONTROL if t.flag("special") else USER_DEFINED
    merges = _merges(model, path)

    if config is None:
        cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer_config.json")
        config = JsonObject(read_json_file(cfg_path) if os.path.exists(cfg_path) else {}, cfg_path)
    bos, eos, add_bos = _special_ids(config, vocab, spec.obj("post_processor"))

    if model.flag("byte_fallback"):  # SentencePiece-style BPE
        scores = [0.0] * size
        for rank, m in enumerate(merges):
            piece = m.replace(" ", "", 1)
            if piece in vocab:
                scores[vocab[piece]] = max(scores[vocab[piece]] if scores[vocab[piece]] else -1e30, -float(rank))
        for t, i in vocab.items():
            if BYTE_PIECE.fullmatch(t):
                types[i] = BYTE
        unk_text = model.text("unk_token")
        unk = vocab.get(unk_text) if unk_text is not None else None
        data = TokenizerData(model="llama", tokens=tokens, token_types=types, scores=scores, bos_id=bos,
                             eos_id=eos, unk_id=unk, add_bos=add_bos, add_space_prefix=True)
        return data, False

    normalizer = spec.get("normalizer")
    data = TokenizerData(model="gpt2", tokens=tokens, token_types=types, merges=merges,
                         pre=_pre_tokenizer_name(spec.get("pre_tokenizer"), path), bos_id=bos, eos_id=eos,
                         add_bos=add_bos, nfc=isinstance(normalizer, dict) and normalizer.get("type") == "NFC")
    return data, model.flag("ignore_merges")
