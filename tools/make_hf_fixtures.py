#!/usr/bin/env python3
"""Make tests/data/hf/<case>/: tiny random Hugging Face model directories written by transformers,
with the logits and token ids transformers computes for them, for tests/test_hf_convert.py.

    OMP_NUM_THREADS=1 python tools/make_hf_fixtures.py [CASE ...]   # writes tests/data/hf/, ~12 MB

Needs torch, transformers (5.x), tokenizers, sentencepiece and gguf: reference libraries, not pyllm
dependencies. Nothing is downloaded; every model and tokenizer is made here from a fixed seed.

Each case is a LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM,
SmolLM3ForCausalLM or Phi3ForCausalLM (hidden 64, MLP 64 or 96, 2 layers (SmolLM3: 4, every second one without RoPE), 4 heads, 2 or 4 KV heads, a non-default rope_theta and rms_norm_eps; Qwen3 with
per-head q/k norms and head_dim 32, not 64 / 4) saved in float32 or bfloat16, in one model.safetensors
or in shards with model.safetensors.index.json. One Qwen3 case rewrites its config.json as
transformers 4.x and the hub's files spell it (rope_theta and rope_scaling, no layer_types,
sliding_window set while use_sliding_window is false); the references are computed from the files
as saved. Every parameter is
re-drawn much larger than transformers' init (std 1/sqrt(fan_in) for matrices, 1 + 0.1 N for
norms, 0.1 N for biases) so that logits are far from trivial and a wrong RoPE pairing, head
order or transposition shows. Tokenizers are trained on tests/data/shakespeare-tail.txt:
  - byte-level BPE (`tokenizers`), saved as tokenizer.json through PreTrainedTokenizerFast, with
    GPT-2's ByteLevel pre-tokenizer or Qwen2's Split regex + ByteLevel(use_regex=False);
  - SentencePiece BPE with byte fallback (`sentencepiece`), as Llama 2 and Mistral ship it:
    tokenizer.model and tokenizer_config.json (one case also keeps the tokenizer.json that
    transformers writes beside it).
Chat templates sit in tokenizer_config.json or in chat_template.jinja, as different transformers
versions write them.

RoPE-scaling cases (Llama 3.1's `llama3`, `linear` and `yarn`) keep 80 reference tokens, past a small
original_max_position_embeddings so that unscaled, interpolated and fully scaled frequency bands all
matter; their config.json is written as transformers 5 writes it (`rope_parameters`) or rewritten
as 4.x and the hub's Llama 3.1 files spell it (`rope_theta` + `rope_scaling`). They also get
model.gguf, written with the `gguf` package as llama.cpp's convert_hf_to_gguf.py writes a
LlamaForCausalLM: q/k rows permuted to adjacent RoPE pairs, linear scaling as
llama.rope.scaling.type/factor, and llama3 scaling as the tensor rope_freqs.weight, whose factors
(dividing the base frequencies) follow LlamaModel.generate_extra_tensors (which reads
original_max_position_embeddings from the top level of config.json, default 8192; the llama3 case
with a GGUF states it there too, as transformers 5 prefers it there).

A qwen2/qwen3 case marked gguf gets model.gguf, written from the saved directory with the `gguf` package
as llama.cpp's convert_hf_to_gguf.py writes that family: its tensor names (gguf's TensorNameMap),
F32 tensors, q/k rows in Hugging Face's half-split order (not permuted, as for qwen2), the BPE
vocabulary with added special tokens as control tokens, the `qwen2` pre-tokenizer.

Phi-3 cases (Phi3ForCausalLM: fused qkv_proj and gate_up_proj) cover Phi-4-mini's partial rotary
embeddings (3/4 of each head) with LongRoPE in transformers 5's spelling, Phi-3-mini-128k's
LongRoPE as 4.x and the hub spell it (rope_theta, rope_scaling {"type": "longrope"}, a top-level
original_max_position_embeddings, a sliding_window), and Phi-3-mini-4k (no scaling). LongRoPE cases
keep 48 reference tokens (past original_max_position_embeddings 32: transformers uses the long
factors) and also `short_tokens` / `short_logits`, the first tokens alone (the short factors).
The Phi-3 cases and the llama.cpp-converted ones without RoPE scaling use hidden 32 (heads of 8;
Qwen3's of 32) and MLP 32, as they also carry an F32 model.gguf.

Cases marked llama_cpp_gguf get model.gguf from llama.cpp's own convert_hf_to_gguf.py (--outtype f32;
LLAMA_CPP_DIR, default ~/.cache/llama.cpp-ref, the llama-cpp-python sdist's vendor/llama.cpp),
one per family: llama, mistral (written as llama), qwen2, qwen3, smollm3 (default NoPE interval 4,
the one llama.cpp assumes) and phi3, and Llama with llama3 and linear RoPE scaling. They use SentencePiece tokenizers: the converter tries
tokenizer.model first and refuses a BPE tokenizer whose pre-tokenizer hash it does not list, as
every tokenizer trained here is. The older gguf cases above (BPE vocabularies) keep the `gguf`
package writer below.
Gemma 3 cases (Gemma3ForCausalLM: hidden 64, head_dim 32, 4-7 layers of which one is global, a
sliding window of 4-6 over 24 reference tokens, local layers with their own RoPE base, one case with
linear scaling on the global layers, one with query_pre_attn_scalar apart from head_dim) have a
SentencePiece tokenizer set up as Gemma's (no dummy prefix, <pad> <eos> <bos> <unk> first); their
config.json is as transformers 5 writes it (rope_parameters per layer type, layer_types) or rewritten
as 4.x and the hub's files have it (rope_theta, rope_local_base_freq, rope_scaling,
sliding_window_pattern). Those marked llama_cpp_gguf get model.gguf from llama.cpp's own
convert_hf_to_gguf.py (in ~/.cache/llama.cpp-ref, the llama-cpp-python sdist's vendor/llama.cpp), F32.
Two more cases run past a sliding window: Mistral (window 5 on every layer) and Qwen2 with
use_sliding_window (window 6 from max_window_layers 1).

Each directory gets reference.npz (`tokens`: a fixed sequence spanning the model's vocabulary,
starting with BOS when the tokenizer adds one; `logits`: float32 logits of transformers for it,
the saved directory loaded with dtype=float32, so BF16 cases are BF16 weights run in float32) and
reference.json (`texts` with the `ids` the saved tokenizer gives them with its default special
tokens, plus `sentencepiece_ids` from the sentencepiece library for tokenizer.model cases, and
`chat`: a conversation, its rendering with add_generation_prompt=True, and its ids).
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import subprocess
import sys

import gguf
import numpy as np
import safetensors.numpy
import sentencepiece as spm
import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaTokenizer,
                          MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM,
                          PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, SmolLM3Config,
                          SmolLM3ForCausalLM)
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GemmaTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "data", "hf")
CORPUS = os.path.join(ROOT, "tests", "data", "shakespeare-tail.txt")
# llama.cpp's source tree (the llama-cpp-python sdist's vendor/llama.cpp): convert_hf_to_gguf.py and gguf-py
LLAMA_CPP = os.environ.get("LLAMA_CPP_DIR", os.path.expanduser("~/.cache/llama.cpp-ref"))
TRAIN_CHARS = 20_000  # tokenizers learn from the first 20 KB
SEED = 1234

# Qwen2's pre-tokenizer regex, as its tokenizer.json spells it
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CHATML = ("{% for message in messages %}"
          "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Llama 3 style: the template writes BOS itself
CHATML_BOS = "{{ bos_token }}" + CHATML
# Qwen2 style: a default system message when the conversation has none
QWEN2_TEMPLATE = ("{% if messages[0]['role'] != 'system' %}"
                  "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}" + CHATML)
# Mistral style, with the system message folded into the first user turn
MISTRAL_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] + '\n\n' %}{% set messages = messages[1:] %}"
    "{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}")

TEXTS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "We'll kill him, and we'll have corn at our own price.  Is't a verdict?",
    " Caius Marcius, 1608 \u2014 na\u00efve caf\u00e9 \u00bd \U0001F600\t\tend",
    "What authority surfeits on would relieve us: if they\nwould yield us but the superfluity!\n\n",
]
MESSAGES = [
    {"role": "system", "content": "You are a terse herald."},
    {"role": "user", "content": "Who comes here?"},
    {"role": "assistant", "content": "A messenger, my lord."},
    {"role": "user", "content": "What news from Rome?"},
]


@dataclasses.dataclass
class Case:
    """One fixture directory: the model family, how it is stored, and its tokenizer."""

    family: str  # llama, mistral, qwen2, qwen3 or smollm3
    dtype: torch.dtype
    tied: bool
    n_kv_heads: int
    tokenizer: str  # "gpt2" / "qwen2": byte-level BPE in tokenizer.json; "spm": tokenizer.model
    rope_theta: float
    rms_norm_eps: float
    template: str | None = None
    template_in_config: bool = True  # else chat_template.jinja
    shards: int = 1  # aim for this many safetensors files
    keep_tokenizer_json: bool = False  # spm: keep the tokenizer.json transformers writes too
    vocab_padding: int = 0  # embedding rows beyond the tokenizer's vocabulary
    intermediate: int = 96  # the F32 cases use 64 to keep the committed files small
    sliding_window: int | None = None  # Mistral: None, or the whole context (no effect)
    rope: dict | None = None  # RoPE scaling parameters (rope_type, factor, ...); None: plain RoPE
    rope_style: str = "5"  # config.json spelling: "5" rope_parameters, "4" rope_theta + rope_scaling
    top_level_original_context: bool = False  # also state original_max_position_embeddings at the top
    n_tokens: int = 20  # reference sequence length
    head_dim: int | None = None  # Qwen3: a head size apart from hidden / heads
    legacy_config: bool = False  # rewrite config.json as transformers 4.x writes it
    gguf: bool = False  # also write model.gguf as llama.cpp converts this directory
    n_layers: int = 2
    no_rope_interval: int | None = None  # SmolLM3: every this-many-th layer has no RoPE (NoPE)
    llama_cpp_gguf: bool = False  # also write model.gguf with llama.cpp's convert_hf_to_gguf.py (F32)
    original_context: int | None = None  # Phi-3: original_max_position_embeddings
    partial_rotary: float = 1.0  # Phi-3: partial_rotary_factor
    n_short_tokens: int = 0  # LongRoPE: also a reference of this many tokens (within the original context)
    hidden: int = 64  # hidden_size; the llama.cpp-converted cases use 32 to keep their two copies small
    seed_index: int | None = None  # the seed offset the case was made with when it is not its place in CASES


@dataclasses.dataclass
class GemmaCase(Case):
    """A Gemma3ForCausalLM case: its tokenizer is SentencePiece as Gemma's (no dummy prefix, ids
    pad 0, eos 1, bos 2, unk 3); layers, window and RoPE bases as given."""

    layer_types: list[str] | None = None  # None: the default pattern (every 6th layer global)
    window: int = 4
    local_theta: float = 10000.0
    query_pre_attn_scalar: int = 32


CASES = {
    "llama-f32": Case("llama", torch.float32, tied=True, n_kv_heads=2, tokenizer="gpt2",
                      rope_theta=500000.0, rms_norm_eps=1e-6, template=CHATML_BOS, template_in_config=False,
                      intermediate=64),
    "llama-bf16-sharded": Case("llama", torch.bfloat16, tied=False, n_kv_heads=4, tokenizer="spm",
                               rope_theta=500000.0, rms_norm_eps=1e-6, shards=3),
    "mistral-f32-sharded": Case("mistral", torch.float32, tied=True, n_kv_heads=2, tokenizer="spm",
                                rope_theta=100000.0, rms_norm_eps=2e-6, template=MISTRAL_TEMPLATE,
                                template_in_config=False, shards=2, intermediate=64),
    "mistral-bf16": Case("mistral", torch.bfloat16, tied=False, n_kv_heads=2, tokenizer="spm",
                         rope_theta=1000000.0, rms_norm_eps=1e-6, template=MISTRAL_TEMPLATE,
                         keep_tokenizer_json=True, sliding_window=128),
    "qwen2-f32": Case("qwen2", torch.float32, tied=True, n_kv_heads=2, tokenizer="qwen2",
                      rope_theta=1000000.0, rms_norm_eps=1e-6, template=QWEN2_TEMPLATE, vocab_padding=29,
                      intermediate=64),
    "qwen2-bf16-sharded": Case("qwen2", torch.bfloat16, tied=True, n_kv_heads=2, tokenizer="qwen2",
                               rope_theta=1000000.0, rms_norm_eps=1e-6, template=QWEN2_TEMPLATE, shards=3),
    # wavelengths 2 pi 10000^(i/8): pair 0 shorter than 64/4 (kept), 1-2 between (smoothed), 3-7 longer than 64
    "llama3-rope-scaling": Case("llama", torch.float32, tied=True, n_kv_heads=2, tokenizer="gpt2",
                                rope_theta=10000.0, rms_norm_eps=1e-5, intermediate=64, n_tokens=80,
                                rope={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                                rope_style="4"),
    # wavelengths 2 pi 500000^(i/8): pair 0 shorter than 128/4, 1 between, 2-7 longer than 128/1
    "llama3-rope-parameters": Case("llama", torch.float32, tied=True, n_kv_heads=2, tokenizer="gpt2",
                                   rope_theta=500000.0, rms_norm_eps=1e-5, intermediate=64, n_tokens=80,
                                   rope={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 128},
                                   top_level_original_context=True, gguf=True),
    "llama-linear-rope": Case("llama", torch.float32, tied=True, n_kv_heads=4, tokenizer="gpt2",
                              rope_theta=10000.0, rms_norm_eps=1e-5, intermediate=64, n_tokens=80,
                              rope={"rope_type": "linear", "factor": 4.0}, rope_style="4", gguf=True),
    # YaRN: pair 0 rotates over 32 times in the original 32 positions (kept), 1 between, 2-7 once or less
    "llama-yarn-rope": Case("llama", torch.float32, tied=True, n_kv_heads=2, tokenizer="gpt2",
                            rope_theta=10000.0, rms_norm_eps=1e-5, intermediate=64, n_tokens=80,
                            rope={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                                  "beta_fast": 32.0, "beta_slow": 1.0}),
    "qwen3-f32": Case("qwen3", torch.float32, tied=True, n_kv_heads=2, tokenizer="qwen2",
                      rope_theta=1000000.0, rms_norm_eps=1e-6, template=QWEN2_TEMPLATE, intermediate=64,
                      head_dim=32, gguf=True),
    "qwen3-bf16-legacy-config": Case("qwen3", torch.bfloat16, tied=False, n_kv_heads=2, tokenizer="qwen2",
                                     rope_theta=500000.0, rms_norm_eps=2e-6, head_dim=32, legacy_config=True),
    # layers 1 and 3 without RoPE: no_rope_layers [1, 0, 1, 0] as transformers derives it from the interval
    "smollm3-f32": Case("smollm3", torch.float32, tied=True, n_kv_heads=2, tokenizer="gpt2",
                        rope_theta=2000000.0, rms_norm_eps=1e-6, intermediate=64, n_layers=4,
                        no_rope_interval=2),
    # Phi-4-mini style: rotary 3/4 of each head (3 of 4 pairs), LongRoPE from 32 to 128 positions
    # (rope_parameters, transformers 5); 48 tokens use the long factors, the first 24 the short ones
    "phi3-longrope": Case("phi3", torch.float32, tied=True, n_kv_heads=2, tokenizer="spm",
                          rope_theta=10000.0, rms_norm_eps=1e-5, intermediate=32, n_tokens=48, hidden=32,
                          rope={"rope_type": "longrope", "short_factor": [1.0, 1.3, 2.5],
                                "long_factor": [1.0, 3.0, 12.0]},
                          original_context=32, partial_rotary=0.75, n_short_tokens=24, llama_cpp_gguf=True),
    # Phi-3-mini-128k style, as 4.x and the hub spell it: rope_theta and rope_scaling {"type": "longrope"},
    # full rotary, and a sliding_window (96) that transformers applies
    "phi3-longrope-legacy-config": Case("phi3", torch.bfloat16, tied=False, n_kv_heads=4, tokenizer="spm",
                                  rope_theta=10000.0, rms_norm_eps=1e-5, intermediate=32, n_tokens=48, hidden=32,
                                  rope={"rope_type": "longrope", "short_factor": [1.0, 1.2, 2.0, 3.0],
                                        "long_factor": [1.0, 4.0, 8.0, 32.0]},
                                  rope_style="4", original_context=32, sliding_window=96, n_short_tokens=20,
                                  llama_cpp_gguf=True),
    # Phi-3-mini-4k style: no RoPE scaling, a sliding window of 48, config.json as 4.x writes it
    "phi3-mini-4k-legacy-config": Case("phi3", torch.bfloat16, tied=False, n_kv_heads=4, tokenizer="spm",
                                       rope_theta=10000.0, rms_norm_eps=1e-5, intermediate=32, rope_style="4", hidden=32,
                                       original_context=128, sliding_window=48, llama_cpp_gguf=True),
    # model.gguf by llama.cpp's converter for each family it writes as itself (SentencePiece
    # tokenizers: convert_hf_to_gguf.py refuses BPE pre-tokenizers it has no hash for)
    "llama-spm-gguf": Case("llama", torch.bfloat16, tied=False, n_kv_heads=2, tokenizer="spm",
                           rope_theta=500000.0, rms_norm_eps=1e-6, intermediate=32, hidden=32, llama_cpp_gguf=True),
    "mistral-spm-gguf": Case("mistral", torch.bfloat16, tied=True, n_kv_heads=2, tokenizer="spm",
                             rope_theta=1000000.0, rms_norm_eps=1e-5, template=MISTRAL_TEMPLATE,
                             intermediate=32, hidden=32, llama_cpp_gguf=True),
    "qwen2-spm-gguf": Case("qwen2", torch.bfloat16, tied=True, n_kv_heads=2, tokenizer="spm",
                           rope_theta=1000000.0, rms_norm_eps=1e-6, intermediate=32, hidden=32, llama_cpp_gguf=True),
    "qwen3-spm-gguf": Case("qwen3", torch.bfloat16, tied=False, n_kv_heads=2, tokenizer="spm",
                           rope_theta=1000000.0, rms_norm_eps=1e-6, intermediate=32, head_dim=32,
                           hidden=32, llama_cpp_gguf=True),
    # the default interval: layer 3 has no RoPE, as llama.cpp runs every 4th layer of a smollm3 GGUF
    "smollm3-gguf": Case("smollm3", torch.bfloat16, tied=True, n_kv_heads=2, tokenizer="spm",
                         rope_theta=2000000.0, rms_norm_eps=1e-6, intermediate=32, n_layers=4,
                         no_rope_interval=4, hidden=32, llama_cpp_gguf=True),
    # RoPE scaling as llama.cpp's converter writes it: llama3 as rope_freqs.weight (it reads
    # original_max_position_embeddings at the top level), linear as rope.scaling.type / factor
    "llama3-rope-spm-gguf": Case("llama", torch.bfloat16, tied=True, n_kv_heads=2, tokenizer="spm",
                                 rope_theta=500000.0, rms_norm_eps=1e-5, intermediate=64, n_tokens=80,
                                 rope={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 128},
                                 top_level_original_context=True, llama_cpp_gguf=True),
    "llama-linear-rope-spm-gguf": Case("llama", torch.bfloat16, tied=True, n_kv_heads=2, tokenizer="spm",
                                       rope_theta=10000.0, rms_norm_eps=1e-5, intermediate=64, n_tokens=80,
                                       rope={"rope_type": "linear", "factor": 4.0}, rope_style="4",
                                       llama_cpp_gguf=True),
    # Gemma 3, config.json as transformers 5 writes it (rope_parameters per layer type, layer_types):
    # 7 layers, layer 5 global (the default pattern, which llama.cpp assumes), window 4 over 24
    # tokens, linear scaling on the global layer, local RoPE base 100; GGUF by llama.cpp's converter
    "gemma3-f32": GemmaCase("gemma3", torch.float32, tied=True, n_kv_heads=1, tokenizer="gemma-spm",
                            rope_theta=10000.0, rms_norm_eps=1e-6, intermediate=64, n_tokens=24, head_dim=32,
                            n_layers=7, rope={"rope_type": "linear", "factor": 8.0}, local_theta=100.0,
                            llama_cpp_gguf=True, seed_index=13),
    # Gemma 3, config.json as transformers 4.x and the hub write it (rope_theta, rope_local_base_freq,
    # rope_scaling, sliding_window_pattern, no layer_types), BF16, window 5
    "gemma3-bf16-legacy-config": GemmaCase("gemma3", torch.bfloat16, tied=True, n_kv_heads=2, tokenizer="gemma-spm",
                                           rope_theta=1000000.0, rms_norm_eps=1e-6, n_tokens=24, head_dim=32,
                                           n_layers=6, legacy_config=True, window=5, local_theta=1000.0,
                                           llama_cpp_gguf=True, seed_index=14),
    # Gemma 3 with an attention scale apart from head_dim (query_pre_attn_scalar 20, head_dim 32) and
    # its own layer_types; no GGUF (llama.cpp scales by head_dim)
    "gemma3-query-scale": GemmaCase("gemma3", torch.float32, tied=True, n_kv_heads=2, tokenizer="gemma-spm",
                                    rope_theta=500000.0, rms_norm_eps=2e-6, intermediate=64, n_tokens=24,
                                    head_dim=32, n_layers=4, query_pre_attn_scalar=20, window=6, local_theta=50.0,
                                    layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                                 "sliding_attention"], seed_index=15),
    # sliding windows past the window: Mistral (every layer) and Qwen2 with use_sliding_window (layer 1)
    "mistral-sliding-window": Case("mistral", torch.float32, tied=True, n_kv_heads=2, tokenizer="gpt2",
                                   rope_theta=10000.0, rms_norm_eps=1e-5, intermediate=64, n_tokens=24,
                                   sliding_window=5, seed_index=16),
    "qwen2-sliding-window": Case("qwen2", torch.float32, tied=True, n_kv_heads=2, tokenizer="qwen2",
                                 rope_theta=10000.0, rms_norm_eps=1e-6, intermediate=64, n_tokens=24,
                                 sliding_window=6, seed_index=17),
}
ARCH = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM),
        "smollm3": (SmolLM3Config, SmolLM3ForCausalLM), "phi3": (Phi3Config, Phi3ForCausalLM),
        "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM)}


def training_lines() -> list[str]:
    """The tokenizers' training text, line by line."""
    with open(CORPUS, encoding="utf-8") as f:
        return f.read()[:TRAIN_CHARS].splitlines(keepends=True)


# ------------------------------------------------------------------------------------------------
# Tokenizers

def bpe_tokenizer(kind: str, out: str, case: Case) -> None:
    """Byte-level BPE trained with `tokenizers`, saved through PreTrainedTokenizerFast."""
    tok = Tokenizer(models.BPE())
    if kind == "gpt2":  # plain ByteLevel: GPT-2's regex; special tokens first, BOS added
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(training_lines(), trainer)
        bos, eos = "<|endoftext|>", "<|im_end|>"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    else:  # Qwen2: Split(regex, isolated) + ByteLevel(use_regex=False); special tokens last, no BOS
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=317, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(training_lines(), trainer)
        tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        bos, eos = None, "<|endoftext|>" if case.vocab_padding else "<|im_end|>"
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   pad_token="<|endoftext|>", chat_template=case.template)
    fast.save_pretrained(out, save_jinja_files=not case.template_in_config)


def spm_tokenizer(out: str, case: Case) -> None:
    """SentencePiece BPE with byte fallback, trained like Llama 2's; tokenizer.model plus the
    tokenizer_config.json LlamaTokenizer writes."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()), model_writer=model, model_type="bpe", vocab_size=400,
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(model.getvalue())
    # transformers 5 converts tokenizer.model in from_pretrained (LlamaTokenizer(vocab_file=...) alone
    # would hold only <unk>, <s> and </s>)
    tok = LlamaTokenizer.from_pretrained(out, add_bos_token=True, add_eos_token=False, legacy=False,
                                         chat_template=case.template)
    tok.save_pretrained(out, save_jinja_files=not case.template_in_config)
    # transformers 5 leaves add_bos_token/add_eos_token out of tokenizer_config.json (it keeps them
    # in tokenizer.json's post-processor); without tokenizer.json a reload would then add no BOS.
    # Llama 2 and Mistral repositories state them, so write them back.
    cfg_path = os.path.join(out, "tokenizer_config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update(add_bos_token=True, add_eos_token=False)
    for key in ("is_local", "local_files_only"):  # from_pretrained's own arguments, saved along
        cfg.pop(key, None)
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    if not case.keep_tokenizer_json:
        os.remove(os.path.join(out, "tokenizer.json"))


def gemma_tokenizer(out: str) -> None:
    """SentencePiece BPE trained as Gemma's is set up (no dummy prefix, byte fallback, split digits,
    <pad> 0, <eos> 1, <bos> 2, <unk> 3, then <mask> and the turn markers): tokenizer.model, and the tokenizer_config.json GemmaTokenizer
    writes (transformers 5 builds it from tokenizer.model; its tokenizer.json is not kept)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()), model_writer=model, model_type="bpe", vocab_size=400,
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"],
        num_threads=1, minloglevel=2)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    tok = GemmaTokenizer.from_pretrained(out)
    tok.save_pretrained(out)
    cfg_path = os.path.join(out, "tokenizer_config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update(add_bos_token=True, add_eos_token=False)  # as Gemma's repositories state them
    for key in ("is_local", "local_files_only", "vocab_file"):  # from_pretrained's arguments, saved along
        cfg.pop(key, None)
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.remove(os.path.join(out, "tokenizer.json"))


# ------------------------------------------------------------------------------------------------
# Models

def reinitialise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Redraw every parameter: std 1/sqrt(fan_in) matrices (0.5 for embeddings), 1 + 0.1 N norms,
    0.1 N biases."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("embed_tokens.weight"):
                p.copy_(0.5 * noise)
            elif p.ndim == 2:
                p.copy_(noise / p.shape[1] ** 0.5)
            elif "norm" in name:
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


def make_model(case: Case, vocab_size: int, bos_id: int | None, eos_id: int | None,
               seed: int) -> torch.nn.Module:
    """The case's model with freshly drawn weights, in its storage dtype."""
    config_cls, model_cls = ARCH[case.family]
    extra = {"sliding_window": case.sliding_window} if case.family == "mistral" else {}
    if case.family == "qwen2" and case.sliding_window is not None:
        extra.update(sliding_window=case.sliding_window, use_sliding_window=True, max_window_layers=1)
    if isinstance(case, GemmaCase):
        return make_gemma_model(case, vocab_size, bos_id, eos_id, seed)
    if case.family == "phi3":
        extra.update(phi3_config(case))
    elif case.rope is not None:
        extra["rope_parameters"] = {**case.rope, "rope_theta": case.rope_theta}
    else:
        extra["rope_theta"] = case.rope_theta
    if case.head_dim is not None:
        extra["head_dim"] = case.head_dim
    if case.no_rope_interval is not None:
        extra["no_rope_layer_interval"] = case.no_rope_interval
        extra["pad_token_id"] = None  # SmolLM3Config's default (128004) is past a tiny vocabulary
    config = config_cls(
        hidden_size=case.hidden, intermediate_size=case.intermediate, num_hidden_layers=case.n_layers, num_attention_heads=4,
        num_key_value_heads=case.n_kv_heads, vocab_size=vocab_size, max_position_embeddings=128,
        rms_norm_eps=case.rms_norm_eps, tie_word_embeddings=case.tied,
        bos_token_id=bos_id, eos_token_id=eos_id, **extra)
    model = model_cls(config).eval()
    reinitialise(model, torch.Generator().manual_seed(seed))
    return model.to(case.dtype)


def phi3_config(case: Case) -> dict:
    """Phi3Config's arguments for the case: RoPE (and LongRoPE), the original context, the window."""
    rope = {"rope_type": "default", "rope_theta": case.rope_theta, "partial_rotary_factor": case.partial_rotary}
    if case.rope is not None:
        rope.update({**case.rope, "rope_type": "longrope"})
    return {"rope_parameters": rope, "original_max_position_embeddings": case.original_context,
            "sliding_window": case.sliding_window, "pad_token_id": None}  # Phi3Config's pad id 32000 is past the vocabulary


def write_phi3_legacy_config(out: str, case: Case) -> None:
    """Rewrite a Phi-3 config.json as transformers 4.x and the hub's Phi-3 files have it: rope_theta,
    partial_rotary_factor at the top, rope_scaling {"type", "short_factor", "long_factor"} or null."""
    path = os.path.join(out, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    rope = cfg.pop("rope_parameters")
    cfg.pop("dtype", None)
    cfg.update(rope_theta=rope["rope_theta"], torch_dtype=str(case.dtype).split(".")[-1],
               transformers_version="4.40.2",
               rope_scaling=None if case.rope is None else {"type": case.rope["rope_type"],
                                                            "short_factor": case.rope["short_factor"],
                                                            "long_factor": case.rope["long_factor"]})
    if case.partial_rotary != 1.0:
        cfg["partial_rotary_factor"] = case.partial_rotary
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(sorted(cfg.items())), f, indent=2)
        f.write("\n")


def make_gemma_model(case: GemmaCase, vocab_size: int, bos_id: int | None, eos_id: int | None,
                     seed: int) -> torch.nn.Module:
    """A Gemma3ForCausalLM with freshly drawn weights (norm weights 1 + 0.1 N: the model scales by
    1 + w, so a missing fold shows), RoPE parameters per layer type as transformers 5 holds them."""
    full = {"rope_type": "default", "rope_theta": case.rope_theta} if case.rope is None \
        else {**case.rope, "rope_theta": case.rope_theta}
    config = Gemma3TextConfig(
        hidden_size=64, intermediate_size=case.intermediate, num_hidden_layers=case.n_layers, num_attention_heads=4,
        num_key_value_heads=case.n_kv_heads, head_dim=case.head_dim, vocab_size=vocab_size,
        max_position_embeddings=128, rms_norm_eps=case.rms_norm_eps, tie_word_embeddings=case.tied,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=0, sliding_window=case.window,
        query_pre_attn_scalar=case.query_pre_attn_scalar, layer_types=case.layer_types,
        rope_parameters={"full_attention": full,
                         "sliding_attention": {"rope_type": "default", "rope_theta": case.local_theta}})
    model = Gemma3ForCausalLM(config).eval()
    reinitialise(model, torch.Generator().manual_seed(seed))
    return model.to(case.dtype)


def write_gemma_legacy_config(out: str, case: GemmaCase) -> None:
    """Rewrite config.json as transformers 4.x and Gemma 3's hub files have it: rope_theta,
    rope_local_base_freq and rope_scaling (the global layers') instead of rope_parameters,
    sliding_window_pattern instead of layer_types, torch_dtype."""
    path = os.path.join(out, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    rope = cfg.pop("rope_parameters")
    cfg.pop("layer_types", None)
    cfg.pop("dtype", None)
    full = dict(rope["full_attention"])
    cfg.update(rope_theta=full.pop("rope_theta"), rope_local_base_freq=rope["sliding_attention"]["rope_theta"],
               rope_scaling=None if full.get("rope_type", "default") == "default" else full,
               sliding_window_pattern=6, _sliding_window_pattern=6, torch_dtype=str(case.dtype).split(".")[-1],
               transformers_version="4.55.0")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(sorted(cfg.items())), f, indent=2)
        f.write("\n")


def write_llama_cpp_gguf(out: str) -> None:
    """model.gguf from the saved directory by llama.cpp's own convert_hf_to_gguf.py, in F32."""
    script = os.path.join(LLAMA_CPP, "convert_hf_to_gguf.py")
    env = dict(os.environ, PYTHONPATH=os.path.join(LLAMA_CPP, "gguf-py"))
    subprocess.run([sys.executable, script, out, "--outtype", "f32", "--outfile", os.path.join(out, "model.gguf")],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def respell_rope(out: str, case: Case) -> None:
    """Rewrite config.json's RoPE keys in the case's style (transformers 5 writes rope_parameters)."""
    path = os.path.join(out, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    if case.rope_style == "4":
        rope = cfg.pop("rope_parameters")
        cfg["rope_theta"] = rope.pop("rope_theta")
        cfg["rope_scaling"] = rope
    if case.top_level_original_context:
        cfg["original_max_position_embeddings"] = case.rope["original_max_position_embeddings"]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def llama_cpp_permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """q/k rows from Hugging Face's half-split RoPE pairs to GGUF llama's adjacent pairs
    (convert_hf_to_gguf.py, LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(hparams: dict) -> np.ndarray:
    """rope_freqs.weight as convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors computes it."""
    rope = hparams.get("rope_parameters") or hparams["rope_scaling"]
    base = rope.get("rope_theta", hparams.get("rope_theta", 10000.0))
    dim = hparams.get("head_dim") or hparams["hidden_size"] // hparams["num_attention_heads"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor = rope.get("factor", 8.0)
    low_freq_factor = rope.get("low_freq_factor", 1.0)
    high_freq_factor = rope.get("high_freq_factor", 4.0)
    old_context_len = hparams.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            factors.append(1)
        elif wavelen > low_freq_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32).numpy()


def write_llama_gguf(out: str, tok) -> None:
    """model.gguf from the saved directory, F32, as convert_hf_to_gguf.py writes a LlamaForCausalLM
    with a byte-level BPE tokenizer (the tokenizer.ggml.pre of GPT-2's regex)."""
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        hp = json.load(f)
    rope = hp.get("rope_parameters") or dict(hp.get("rope_scaling") or {}, rope_theta=hp.get("rope_theta"))
    n_head, n_kv = hp["num_attention_heads"], hp["num_key_value_heads"]
    w = gguf.GGUFWriter(os.path.join(out, "model.gguf"), "llama")
    w.add_name(os.path.basename(out))
    w.add_block_count(hp["num_hidden_layers"])
    w.add_context_length(hp["max_position_embeddings"])
    w.add_embedding_length(hp["hidden_size"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_layer_norm_rms_eps(hp["rms_norm_eps"])
    w.add_rope_dimension_count(hp["hidden_size"] // n_head)
    if rope.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    special = set(tok.all_special_tokens) | set(tok.added_tokens_decoder and
                                                  [t.content for t in tok.added_tokens_decoder.values()])
    with open(os.path.join(out, "tokenizer.json"), encoding="utf-8") as f:
        merges = json.load(f)["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    if tok.bos_token_id is not None:
        w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_add_bos_token(True)
    if rope.get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(hp))
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight" and hp.get("tie_word_embeddings"):
            continue
        data = p.detach().float().numpy()
        if name.startswith("model.layers."):
            i, part = name[len("model.layers."):].split(".", 1)
            part = part.removesuffix(".weight")
            if part == "self_attn.q_proj":
                data = llama_cpp_permute(data, n_head, n_head)
            elif part == "self_attn.k_proj":
                data = llama_cpp_permute(data, n_head, n_kv)
            gname = f"blk.{i}.{parts[part]}.weight"
        else:
            gname = names[name]
        w.add_tensor(gname, np.ascontiguousarray(data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_legacy_config(out: str, case: Case) -> None:
    """Rewrite config.json as transformers 4.x and Qwen3's hub files have it: rope_theta and a null
    rope_scaling instead of rope_parameters, torch_dtype, no layer_types, and a sliding_window that
    use_sliding_window false leaves unused."""
    path = os.path.join(out, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.pop("layer_types", None)
    cfg.pop("dtype", None)
    cfg.pop("rope_parameters", None)
    cfg.update(rope_theta=case.rope_theta, rope_scaling=None, torch_dtype=str(case.dtype).split(".")[-1],
               sliding_window=4096, use_sliding_window=False, max_window_layers=28,
               transformers_version="4.51.0")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(sorted(cfg.items())), f, indent=2)
        f.write("\n")


def write_qwen_gguf(out: str, case: Case, tok: PreTrainedTokenizerFast) -> None:
    """model.gguf from the saved directory, as convert_hf_to_gguf.py writes a Qwen2/Qwen3 model in F32."""
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    arch = {"qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3}[case.family]
    n_layers = cfg["num_hidden_layers"]
    names = gguf.get_tensor_name_map(arch, n_layers)
    w = gguf.GGUFWriter(os.path.join(out, "model.gguf"), gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(os.path.basename(out))
    w.add_block_count(n_layers)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(case.rope_theta)
    w.add_layer_norm_rms_eps(case.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    # the vocabulary in id order; added special tokens are control tokens (llama.cpp's get_vocab_base)
    vocab, added = tok.get_vocab(), {t.content for t in tok.added_tokens_decoder.values() if t.special}
    by_id = {i: t for t, i in vocab.items()}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(cfg["vocab_size"])]
    types = [gguf.TokenType.CONTROL if t in added else gguf.TokenType.NORMAL if i in by_id
             else gguf.TokenType.UNUSED for i, t in enumerate(tokens)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(out, load_merges=True, n_vocab=len(tokens)).add_to_gguf(w)  # merges, ids, chat template

    tensors = {}
    for name in sorted(os.listdir(out)):
        if name.endswith(".safetensors"):
            tensors.update(safetensors.numpy.load_file(os.path.join(out, name)))
    for hf_name, data in tensors.items():
        w.add_tensor(names.get_name(hf_name, try_suffixes=(".weight", ".bias")), data.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def n_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters (to choose a shard size)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def reference_tokens(vocab_size: int, bos_id: int | None, seed: int, n: int = 20) -> np.ndarray:
    """n ids in a fixed random order covering low, middle and the highest ids; BOS first if given."""
    rng = np.random.default_rng(seed)
    ids = [vocab_size - 1] + rng.choice(vocab_size - 1, n - 1, replace=False).tolist()
    rng.shuffle(ids)
    if bos_id is not None:
        ids = [bos_id] + ids[:n - 1]
    return np.array(ids, dtype=np.int32)


def make_case(name: str, case: Case, seed: int) -> None:
    """Write one case's directory: tokenizer, model, then the references from the saved files."""
    out = os.path.join(OUT, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    if case.tokenizer == "spm":
        spm_tokenizer(out, case)
    elif case.tokenizer == "gemma-spm":
        gemma_tokenizer(out)
    else:
        bpe_tokenizer(case.tokenizer, out, case)
    tok = AutoTokenizer.from_pretrained(out)  # everything below from the saved files
    adds_bos = tok("x")["input_ids"][:1] == [tok.bos_token_id] and tok.bos_token_id is not None
    vocab_size = len(tok) + case.vocab_padding

    model = make_model(case, vocab_size, tok.bos_token_id, tok.eos_token_id, seed)
    size = n_bytes(model)
    shard = size if case.shards == 1 else int(size * 1.2) // case.shards
    model.save_pretrained(out, max_shard_size=shard)
    del model
    if case.family == "phi3":
        if case.rope_style == "4":
            write_phi3_legacy_config(out, case)
    elif case.rope is not None and not isinstance(case, GemmaCase):
        respell_rope(out, case)
    if case.legacy_config and isinstance(case, GemmaCase):
        write_gemma_legacy_config(out, case)
    elif case.legacy_config:
        write_legacy_config(out, case)
    if case.llama_cpp_gguf:
        write_llama_cpp_gguf(out)
    elif case.gguf and case.family == "llama":
        write_llama_gguf(out, tok)
    elif case.gguf:
        write_qwen_gguf(out, case, tok)

    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    tokens = reference_tokens(vocab_size, tok.bos_token_id if adds_bos else None, seed, case.n_tokens)
    with torch.no_grad():
        logits = ref(torch.tensor(tokens[None].astype(np.int64))).logits[0].float().numpy()
    arrays = {"tokens": tokens, "logits": logits.astype(np.float32)}
    if case.n_short_tokens:  # a fresh model: transformers picks LongRoPE's table by the sequence's length
        ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        short = tokens[:case.n_short_tokens]
        with torch.no_grad():
            arrays["short_logits"] = ref(torch.tensor(short[None].astype(np.int64))).logits[0].float().numpy()
        arrays["short_tokens"] = short
    np.savez_compressed(os.path.join(out, "reference.npz"), **arrays)

    texts = [{"text": t, "ids": tok(t)["input_ids"]} for t in TEXTS]
    if case.tokenizer in ("spm", "gemma-spm"):
        # transformers' Metaspace adds no "▁" before text that starts with a space; SentencePiece
        # (and llama.cpp) always does. Both are recorded; they differ only for such texts.
        sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer.model"))
        for t in texts:
            t["sentencepiece_ids"] = [sp.bos_id()] + sp.encode(t["text"])
    info = {"texts": texts,
            "add_bos": bool(adds_bos),
            "meta": f"transformers {transformers.__version__}, torch {torch.__version__}, "
                    f"tokenizers via {type(tok).__name__}"}
    if case.template is not None:
        text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
        ids = tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)["input_ids"]
        info["chat"] = {"messages": MESSAGES, "text": text, "ids": list(ids)}
    with open(os.path.join(out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)
        f.write("\n")

    files = sorted(os.listdir(out))
    total = sum(os.path.getsize(os.path.join(out, f)) for f in files)
    print(f"{name}: vocab {vocab_size} (tokenizer {len(tok)}), {len(tokens)} tokens, logits std "
          f"{logits.std():.2f}, {total / 1024:.0f} KiB: {', '.join(files)}", file=sys.stderr)


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    os.environ["HF_HUB_OFFLINE"] = "1"
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    only = sys.argv[1:]
    unknown = [n for n in only if n not in CASES]
    if unknown:
        sys.exit(f"unknown case(s) {', '.join(unknown)}; cases: {', '.join(CASES)}")
    for i, (name, case) in enumerate(CASES.items()):
        if not only or name in only:
            make_case(name, case, SEED + (i if case.seed_index is None else case.seed_index))


if __name__ == "__main__":
    main()
