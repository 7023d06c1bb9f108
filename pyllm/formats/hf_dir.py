"""A Hugging Face model directory: config.json, model.safetensors or the shards listed in
model.safetensors.index.json, the tokenizer (tokenizer.json or tokenizer.model with
tokenizer_config.json) and the chat template (tokenizer_config.json or chat_template.jinja).
PyTorch pickles are never read: unpickling can run code.
"""
from __future__ import annotations

import os

from ..errors import FormatError
from ..types import CONTROL, UNUSED, USER_DEFINED, TokenizerData
from .jsontext import JsonObject, read_json_file, short_repr
from .mapped import read_side_file
from .safetensors import SafetensorsFile
from .sentencepiece_model import read_sentencepiece_model
from .tokenizer_json import read_tokenizer_json, special_token_text


class Fail:
    """Builds FormatErrors that name the model directory."""

    def __init__(self, root: str):
        self.root = root

    def __call__(self, message: str) -> FormatError:
        return FormatError(f"{self.root}: {message}")


def read_config(root: str, name: str, fail: Fail) -> JsonObject:
    """A JSON object file of the directory (config.json, tokenizer_config.json), its fields read
    with their types checked: a FormatError names the directory, the file and the field."""
    return JsonObject(read_json_file(os.path.join(root, name)), name, fail)


def open_shards(root: str, fail: Fail) -> tuple[dict[str, SafetensorsFile], list[SafetensorsFile]]:
    """Tensor name -> the open safetensors file holding it, and the files to close."""
    index_path = os.path.join(root, "model.safetensors.index.json")
    single = os.path.join(root, "model.safetensors")
    if os.path.exists(index_path):
        weight_map = read_config(root, "model.safetensors.index.json", fail).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise fail("model.safetensors.index.json: weight_map must map tensor names to file names")
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


def stored_size(owner: dict[str, SafetensorsFile]) -> tuple[int, int]:
    """(tensors, bytes of tensor data) the shards hold: what bounds the counts config.json may give."""
    return len(owner), sum(f.tensors[name].nbytes for name, f in owner.items())


def chat_template(root: str, tok_cfg: JsonObject) -> str | None:
    """The chat template from tokenizer_config.json (the default of named ones) or chat_template.jinja."""
    if isinstance(tok_cfg.get("chat_template"), list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.text("name"): t.text("template") for t in tok_cfg.objects("chat_template")}
        template = named.get("default") or next(iter(named.values()), None)
    else:
        template = tok_cfg.text("chat_template")
    if template is not None:
        return template
    path = os.path.join(root, "chat_template.jinja")
    if not os.path.exists(path):
        return None
    try:
        return read_side_file(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise tok_cfg.fail(f"chat_template.jinja: not valid UTF-8 ({exc})") from None


def _spm_with_config(data: TokenizerData, tok_cfg: JsonObject) -> TokenizerData:
    """A tokenizer.model's vocabulary plus tokenizer_config.json's added tokens and BOS/EOS choices."""
    tokens, types, scores = list(data.tokens), list(data.token_types), list(data.scores or [])
    added = tok_cfg.obj("added_tokens_decoder")
    for key in added.raw:
        if not (key.isascii() and key.isdigit() and len(key) <= 10):
            raise added.error(None, "an object whose keys are token ids", key)
    for key in sorted(added.raw, key=int):
        entry, i = added.obj(key), int(key)
        text = entry.text("content")
        if text is None:
            raise entry.error("content", "a string", None)
        if i < len(tokens) and tokens[i] == text:
            continue
        if i != len(tokens):
            raise tok_cfg.fail(f"{added.where(key)}: added token {short_repr(text)} has id {i}, but the "
                               f"vocabulary has {len(tokens)} pieces")
        tokens.append(text)
        types.append(CONTROL if entry.flag("special") else USER_DEFINED)
        scores.append(0.0)
    ids = {t: i for i, t in enumerate(tokens)}
    bos, eos = special_token_text(tok_cfg, "bos_token"), special_token_text(tok_cfg, "eos_token")
    return TokenizerData(
        model="llama", tokens=tokens, token_types=types, scores=scores,
        bos_id=ids.get(bos, data.bos_id) if bos else data.bos_id,
        eos_id=ids.get(eos, data.eos_id) if eos else data.eos_id,
        unk_id=data.unk_id, pad_id=data.pad_id,
        add_bos=tok_cfg.flag("add_bos_token", data.add_bos),
        add_eos=tok_cfg.flag("add_eos_token", data.add_eos),
        add_space_prefix=data.add_space_prefix)


def tokenizer_config(root: str, fail: Fail) -> JsonObject:
    """tokenizer_config.json (special tokens, chat template), or an empty one when the directory has none."""
    if os.path.exists(os.path.join(root, "tokenizer_config.json")):
        return read_config(root, "tokenizer_config.json", fail)
    return JsonObject({}, "tokenizer_config.json", fail)


def read_tokenizer(root: str, vocab_size: int, tok_cfg: JsonObject, fail: Fail) -> TokenizerData | None:
    """The directory's tokenizer (with tokenizer_config.json's choices, `tok_cfg`) padded to the
    model's vocabulary, or None if it has none. vocab_size must already be bounded by the weights
    (config_from_hf does): the padding is proportional to it."""
    json_path, spm_path = os.path.join(root, "tokenizer.json"), os.path.join(root, "tokenizer.model")
    if os.path.exists(json_path):  # the readers' errors name the file
        data, ignore_merges = read_tokenizer_json(json_path, tok_cfg)
        if ignore_merges and data.pre != "llama-bpe":
            raise fail("tokenizer.json: ignore_merges is only supported with the Llama 3 pre-tokenizer")
    elif os.path.exists(spm_path):
        spm, remove_extra_whitespaces = read_sentencepiece_model(spm_path)
        if remove_extra_whitespaces:
            raise fail("tokenizer.model: remove_extra_whitespaces normalization is not supported")
        data = _spm_with_config(spm, tok_cfg)
    else:
        return None
    n = len(data.tokens)
    if n > vocab_size:
        raise fail(f"the tokenizer has {n} tokens but config.json's vocab_size is only {vocab_size}")
    if n < vocab_size:  # embedding rows beyond the tokenizer (padding for speed): unused tokens
        data.tokens = data.tokens + [f"[PAD{i}]" for i in range(n, vocab_size)]
        types = data.token_types or [1] * n
        data.token_types = types + [UNUSED] * (vocab_size - n)
        if data.scores is not None:
            data.scores = data.scores + [0.0] * (vocab_size - n)
    return data
