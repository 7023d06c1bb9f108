"""A Hugging Face model directory: config.json, model.safetensors or the shards listed in
model.safetensors.index.json, the tokenizer (tokenizer.json or tokenizer.model with
tokenizer_config.json) and the chat template (tokenizer_config.json or chat_template.jinja).
PyTorch pickles are never read: unpickling can run code.
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import FormatError
from ..types import CONTROL, UNUSED, USER_DEFINED, TokenizerData
from .jsontext import parse_json
from .safetensors import SafetensorsFile
from .sentencepiece_model import read_sentencepiece_model
from .tokenizer_json import read_tokenizer_json


class Fail:
    """Builds FormatErrors that name the model directory."""

    def __init__(self, root: str):
        self.root = root

    def __call__(self, message: str) -> FormatError:
        return FormatError(f"{self.root}: {message}")


def read_json(path: str, fail: Fail) -> Any:
    """A JSON file of the directory; FormatError naming the directory and the file if it is unreadable."""
    try:
        with open(path, "rb") as f:
            return parse_json(f.read())
    except OSError as exc:
        raise fail(f"cannot read {os.path.basename(path)}: {exc.strerror}") from None
    except ValueError as exc:
        raise fail(f"{os.path.basename(path)} is {exc}") from None


def open_shards(root: str, fail: Fail) -> tuple[dict[str, SafetensorsFile], list[SafetensorsFile]]:
    """Tensor name -> the open safetensors file holding it, and the files to close."""
    index_path = os.path.join(root, "model.safetensors.index.json")
    single = os.path.join(root, "model.safetensors")
    if os.path.exists(index_path):
        index = read_json(index_path, fail)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise fail("model.safetensors.index.json has no weight_map of tensor -> file")
        shard_names = sorted(set(weight_map.values()))
        for s in shard_names:
            if os.path.basename(s) != s or not s.endswith(".safetensors"):
                raise fail(f"model.safetensors.index.json names {s!r}, not a .safetensors file beside it")
            if not os.path.exists(os.path.join(root, s)):
                raise fail(f"shard {s} listed in model.safetensors.index.json is missing")
    elif os.path.exists(single):
        weight_map, shard_names = None, ["model.safetensors"]
    else:
        pickles = [f for f in os.listdir(root) if f.endswith((".bin", ".pt", ".pth"))]
        hint = (f" (found {', '.join(pickles[:3])}: PyTorch pickles, which pyllm never loads because "
                "unpickling can run code; re-save with save_pretrained(..., safe_serialization=True))"
                if pickles else "")
        raise fail(f"no model.safetensors or model.safetensors.index.json{hint}")

    files: list[SafetensorsFile] = []
    owner: dict[str, SafetensorsFile] = {}
    try:
        for s in shard_names:
            f = SafetensorsFile(os.path.join(root, s))
            files.append(f)
            for name in f.tensors:
                if name in owner:
                    raise fail(f"tensor {name} is stored twice ({os.path.basename(owner[name].path)}, {s})")
                if weight_map is not None and weight_map.get(name) != s:
                    raise fail(f"tensor {name} is in {s} but the index says {weight_map.get(name)!r}")
                owner[name] = f
        if weight_map is not None:
            absent = [n for n in weight_map if n not in owner]
            if absent:
                raise fail(f"tensors listed in the index are in no shard: {', '.join(absent[:3])}")
    except BaseException:
        for f in files:
            f.close()
        raise
    return owner, files


def chat_template(root: str, tok_cfg: dict) -> str | None:
    """The chat template from tokenizer_config.json (the default of named ones) or chat_template.jinja."""
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if isinstance(template, str):
        return template
    path = os.path.join(root, "chat_template.jinja")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    return None


def token_text(v: Any) -> str | None:
    """A special token's text, whether tokenizer_config.json gives it as a string or an AddedToken dict."""
    v = v.get("content") if isinstance(v, dict) else v
    return v if isinstance(v, str) else None


def _spm_with_config(data: TokenizerData, tok_cfg: dict) -> TokenizerData:
    """A tokenizer.model's vocabulary plus tokenizer_config.json's added tokens and BOS/EOS choices."""
    tokens, types, scores = list(data.tokens), list(data.token_types), list(data.scores or [])
    added = tok_cfg.get("added_tokens_decoder") or {}
    for key in sorted(added, key=lambda k: int(k)):
        i, text = int(key), token_text(added[key])
        if text is None or i < len(tokens) and tokens[i] == text:
            continue
        if i != len(tokens):
            raise FormatError(f"added token {text!r} has id {i}, but the vocabulary has {len(tokens)} pieces")
        tokens.append(text)
        types.append(CONTROL if added[key].get("special") else USER_DEFINED)
        scores.append(0.0)
    ids = {t: i for i, t in enumerate(tokens)}
    bos, eos = token_text(tok_cfg.get("bos_token")), token_text(tok_cfg.get("eos_token"))
    return TokenizerData(
        model="llama", tokens=tokens, token_types=types, scores=scores,
        bos_id=ids.get(bos, data.bos_id) if bos else data.bos_id,
        eos_id=ids.get(eos, data.eos_id) if eos else data.eos_id,
        unk_id=data.unk_id, pad_id=data.pad_id,
        add_bos=bool(tok_cfg.get("add_bos_token", data.add_bos)),
        add_eos=bool(tok_cfg.get("add_eos_token", data.add_eos)),
        add_space_prefix=data.add_space_prefix)


def tokenizer_config(root: str, fail: Fail) -> dict:
    """tokenizer_config.json (special tokens, chat template), or {} when the directory has none."""
    path = os.path.join(root, "tokenizer_config.json")
    return read_json(path, fail) if os.path.exists(path) else {}


def read_tokenizer(root: str, vocab_size: int, tok_cfg: dict, fail: Fail) -> TokenizerData | None:
    """The directory's tokenizer (with tokenizer_config.json's choices, `tok_cfg`) padded to the
    model's vocabulary, or None if it has none."""
    json_path, spm_path = os.path.join(root, "tokenizer.json"), os.path.join(root, "tokenizer.model")
    try:
        if os.path.exists(json_path):
            data, ignore_merges = read_tokenizer_json(json_path)
            if ignore_merges and data.pre != "llama-bpe":
                raise FormatError("tokenizer.json: ignore_merges is only supported with the Llama 3 "
                                  "pre-tokenizer")
        elif os.path.exists(spm_path):
            spm, remove_extra_whitespaces = read_sentencepiece_model(spm_path)
            if remove_extra_whitespaces:
                raise FormatError("tokenizer.model: remove_extra_whitespaces normalization is not supported")
            data = _spm_with_config(spm, tok_cfg)
        else:
            return None
    except FormatError as exc:
        raise fail(str(exc)) from None
    n = len(data.tokens)
    if n > vocab_size:
        raise fail(f"the tokenizer has {n} tokens but the model's vocabulary only {vocab_size}")
    if n < vocab_size:  # embedding rows beyond the tokenizer (padding for speed): unused tokens
        data.tokens = data.tokens + [f"[PAD{i}]" for i in range(n, vocab_size)]
        types = data.token_types or [1] * n
        data.token_types = types + [UNUSED] * (vocab_size - n)
        if data.scores is not None:
            data.scores = data.scores + [0.0] * (vocab_size - n)
    return data
