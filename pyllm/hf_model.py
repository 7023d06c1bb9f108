"""Convert a Hugging Face model directory (config.json + safetensors) to weights.bin.

Reads `config.json`, `model.safetensors` or the shards listed in `model.safetensors.index.json`
(F32, F16 or BF16), the tokenizer from `tokenizer.json` or `tokenizer.model`, special tokens and
the chat template from `tokenizer_config.json` (or `chat_template.jinja`). PyTorch pickles are
never read. Supported families: llama, mistral and qwen2 (q/k/v biases); anything else is
refused with what it needs that pyllm lacks.

Hugging Face rotates the two halves of each head (x[i], x[i + d/2]); the C core rotates adjacent
pairs (x[2i], x[2i+1]). The q and k rows (and biases) are reordered per head so that both give the
same attention scores: row i of the first half goes to 2i, row i of the second half to 2i + 1.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np

from .errors import FormatError
from .convert import _report, choose_type, pair_order, write_model
from .format import ModelConfig, TensorSource, TokenizerData, expected_tensors
from .quant import quantize
from .safetensors import FLOAT_DTYPES, SafetensorsFile

FAMILIES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}

# what some well-known architectures need that the C core does not have
MISSING = {
    "gemma": "GELU MLP, (1 + w) RMSNorm and scaled embeddings",
    "gemma2": "GELU MLP, logit soft-capping and sliding-window layers",
    "phi": "LayerNorm, GELU MLP and partial rotary embeddings",
    "phi3": "fused qkv/gate-up projections and LongRoPE scaling",
    "gpt2": "LayerNorm, GELU MLP and learned position embeddings",
    "gpt_neox": "LayerNorm, parallel attention/MLP and partial rotary embeddings",
    "falcon": "LayerNorm and parallel attention/MLP",
    "qwen3": "per-head q/k RMSNorm",
    "mixtral": "mixture-of-experts MLP layers",
    "olmo2": "q/k RMSNorm and post-norm blocks",
}


class _Fail:
    """Builds FormatErrors that name the model directory."""

    def __init__(self, root: str):
        self.root = root

    def __call__(self, message: str) -> FormatError:
        return FormatError(f"{self.root}: {message}")


def _read_json(path: str, fail: _Fail) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise fail(f"cannot read {os.path.basename(path)}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail(f"{os.path.basename(path)} is not valid JSON ({exc})") from None


def hf_config(raw: dict, fail: _Fail) -> tuple[ModelConfig, list[str]]:
    """The pyllm config of a Hugging Face config.json, and notes on choices made; refuses what
    the C core cannot run, saying what is missing."""
    if not isinstance(raw, dict):
        raise fail("config.json is not a JSON object")
    archs = raw.get("architectures") or []
    model_type = raw.get("model_type", "?")
    arch = next((a for a in archs if a in FAMILIES), None)
    if arch is None:
        name = archs[0] if archs else model_type
        need = MISSING.get(model_type)
        why = f"it needs {need}, which pyllm does not implement" if need else \
            "pyllm runs llama-family decoders: " + ", ".join(FAMILIES)
        raise fail(f"architecture {name} (model_type {model_type!r}) is not supported: {why}")
    family = FAMILIES[arch]
    notes: list[str] = []

    def get(key: str, default: Any = None, kind: type | tuple[type, ...] = int) -> Any:
        v = raw.get(key, default)
        if v is None or isinstance(v, bool) and kind is not bool or not isinstance(v, kind):
            raise fail(f"config.json: {key} is {'missing' if v is None else repr(v)}")
        return v

    def refuse(what: str) -> FormatError:
        return fail(f"{arch} with {what} is not supported by pyllm")

    act = raw.get("hidden_act", raw.get("hidden_activation", "silu"))
    if act != "silu":
        raise refuse(f"activation {act!r} (only SiLU/SwiGLU)")
    rope = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise refuse(f"RoPE scaling {rope_type!r}")
    if raw.get("partial_rotary_factor", 1.0) != 1.0:
        raise refuse("partial rotary embeddings")
    if raw.get("mlp_bias"):
        raise refuse("MLP biases")
    if family == "llama" and raw.get("attention_bias"):
        raise refuse("attention output biases (attention_bias)")
    if any(t != "full_attention" for t in raw.get("layer_types") or []) or raw.get("use_sliding_window"):
        raise refuse("sliding-window attention layers")

    dim, n_heads = get("hidden_size"), get("num_attention_heads")
    head_dim = raw.get("head_dim") or dim // n_heads
    max_seq = get("max_position_embeddings", 2048)
    window = raw.get("sliding_window")
    if family == "mistral" and isinstance(window, int) and 0 < window < max_seq:
        # Within one window sliding-window attention is full attention: exact up to `window` tokens.
        notes.append(f"sliding-window attention ({window} tokens): context limited to {window}")
        max_seq = window
    theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
    cfg = ModelConfig(
        dim=dim, hidden_dim=get("intermediate_size"), n_layers=get("num_hidden_layers"),
        n_heads=n_heads, n_kv_heads=get("num_key_value_heads", n_heads), head_dim=head_dim,
        vocab_size=get("vocab_size"), max_seq_len=max_seq,
        rope_theta=float(theta), norm_eps=float(get("rms_norm_eps", 1e-6, (int, float))),
        tied_embeddings=bool(raw.get("tie_word_embeddings", False)), qkv_bias=family == "qwen2",
        architecture=family,
    )
    if head_dim % 2 or cfg.n_heads % cfg.n_kv_heads:
        raise fail(f"config.json: head size {head_dim} and heads {n_heads}/{cfg.n_kv_heads} "
                   "do not form a valid attention layout")
    return cfg, notes


def _hf_names(cfg: ModelConfig) -> dict[str, tuple[str, int]]:
    """pyllm tensor name -> (Hugging Face name, heads to permute over or 0)."""
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
    return names


def _open_shards(root: str, fail: _Fail) -> tuple[dict[str, SafetensorsFile], list[SafetensorsFile]]:
    """Tensor name -> the open safetensors file holding it, and the files to close."""
    index_path = os.path.join(root, "model.safetensors.index.json")
    single = os.path.join(root, "model.safetensors")
    if os.path.exists(index_path):
        index = _read_json(index_path, fail)
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


def _chat_template(root: str, tok_cfg: dict) -> str | None:
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


def _token_text(v: Any) -> str | None:
    v = v.get("content") if isinstance(v, dict) else v
    return v if isinstance(v, str) else None


def _spm_with_config(data: TokenizerData, tok_cfg: dict) -> TokenizerData:
    """A tokenizer.model's vocabulary plus tokenizer_config.json's added tokens and BOS/EOS choices."""
    from .tokenizer import CONTROL, USER_DEFINED
    tokens, types, scores = list(data.tokens), list(data.token_types), list(data.scores or [])
    added = tok_cfg.get("added_tokens_decoder") or {}
    for key in sorted(added, key=lambda k: int(k)):
        i, text = int(key), _token_text(added[key])
        if text is None or i < len(tokens) and tokens[i] == text:
            continue
        if i != len(tokens):
            raise FormatError(f"added token {text!r} has id {i}, but the vocabulary has {len(tokens)} pieces")
        tokens.append(text)
        types.append(CONTROL if added[key].get("special") else USER_DEFINED)
        scores.append(0.0)
    ids = {t: i for i, t in enumerate(tokens)}
    bos, eos = _token_text(tok_cfg.get("bos_token")), _token_text(tok_cfg.get("eos_token"))
    return TokenizerData(
        model="llama", tokens=tokens, token_types=types, scores=scores,
        bos_id=ids.get(bos, data.bos_id) if bos else data.bos_id,
        eos_id=ids.get(eos, data.eos_id) if eos else data.eos_id,
        unk_id=data.unk_id, pad_id=data.pad_id,
        add_bos=bool(tok_cfg.get("add_bos_token", data.add_bos)),
        add_eos=bool(tok_cfg.get("add_eos_token", data.add_eos)),
        add_space_prefix=data.add_space_prefix)


def hf_tokenizer(root: str, vocab_size: int, fail: _Fail) -> TokenizerData | None:
    """The directory's tokenizer padded to the model's vocabulary, or None if it has none."""
    from .hf_tokenizer import read_tokenizer_json
    from .sentencepiece_model import read_sentencepiece_model
    from .tokenizer import UNUSED
    tok_cfg_path = os.path.join(root, "tokenizer_config.json")
    tok_cfg = _read_json(tok_cfg_path, fail) if os.path.exists(tok_cfg_path) else {}
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


def convert_hf(src: str | os.PathLike, dst: str | os.PathLike, out_type: str | None = None,
               progress: bool = True) -> None:
    """Convert a Hugging Face model directory (or a .safetensors file inside one) to weights.bin."""
    root = os.fspath(src)
    if not os.path.isdir(root):
        root = os.path.dirname(os.path.abspath(root))
    fail = _Fail(root)
    if not os.path.exists(os.path.join(root, "config.json")):
        raise fail("no config.json: not a Hugging Face model directory")
    cfg, notes = hf_config(_read_json(os.path.join(root, "config.json"), fail), fail)
    tokenizer = hf_tokenizer(root, cfg.vocab_size, fail)
    if tokenizer is None:
        notes.append("no tokenizer.json or tokenizer.model: the model file has no tokenizer")
    tok_cfg_path = os.path.join(root, "tokenizer_config.json")
    tok_cfg = _read_json(tok_cfg_path, fail) if os.path.exists(tok_cfg_path) else {}

    owner, files = _open_shards(root, fail)
    try:
        names = _hf_names(cfg)
        used = {hf for hf, _ in names.values()}
        ignorable = ("rotary_emb.inv_freq",) + (("lm_head.weight",) if cfg.tied_embeddings else ())
        unknown = [n for n in owner if n not in used and not n.endswith(ignorable)]
        if unknown:
            raise fail(f"tensors pyllm does not know (a feature it lacks?): {', '.join(unknown[:5])}")
        sources: list[TensorSource] = []
        for name, shape in expected_tensors(cfg).items():
            hf_name, permute_heads = names[name]
            f = owner.get(hf_name)
            if f is None:
                raise fail(f"tensor {hf_name} is missing")
            t = f.tensors[hf_name]
            if t.shape != shape:
                raise fail(f"tensor {hf_name} in {os.path.basename(f.path)} has shape {list(t.shape)}, "
                           f"the config needs {list(shape)}")
            if t.dtype not in FLOAT_DTYPES:
                raise fail(f"tensor {hf_name} is {t.dtype}; weights must be {', '.join(FLOAT_DTYPES)}")
            dst_type, why = choose_type(t.dtype.lower(), shape, out_type, lambda f=f, n=hf_name: f.array(n))
            if dst_type != t.dtype.lower() and why != "vectors stay f32":
                notes.append(f"{name}: {t.dtype} -> {dst_type} ({why})")
            sources.append((name, dst_type, shape, _encoder(f, hf_name, permute_heads, dst_type)))
        _report(notes, progress)
        write_model(dst, cfg, tokenizer, sources, chat_template=_chat_template(root, tok_cfg),
                    metadata={"name": os.path.basename(os.path.normpath(root)), "source": "huggingface"},
                    progress=progress)
    finally:
        for f in files:
            f.close()


def _encoder(f: SafetensorsFile, name: str, permute_heads: int, dst_type: str) -> Callable[[], Any]:
    def make() -> Any:
        w = f.array(name)
        if permute_heads:
            w = w[pair_order(w.shape[0], permute_heads)]
        return quantize(np.ascontiguousarray(w, dtype=np.float32).reshape(-1, w.shape[-1]), dst_type)
    return make
