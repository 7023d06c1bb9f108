"""pyllm.Model: a weights.bin mapped into memory and run by the C core."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from . import _native, arch
from ._native import check, ffi, lib
from .chat import render
from .errors import ContextFullError, FormatError, PyllmError
from .formats.weights import WeightsFile
from .generation import Generation
from .quant import TYPES
from .sampling import SamplingParams
from .tokenizer import Tokenizer
from .types import ModelConfig

__all__ = ["Model", "ContextFullError"]


def default_threads() -> int:
    """Physical cores available to this process (hyperthreads only slow matmuls down)."""
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        logical = os.cpu_count() or 1
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        siblings = [int(line.split(":")[1]) for line in info.splitlines() if line.startswith("siblings")]
        cores = [int(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu cores")]
        if siblings and cores and siblings[0] > cores[0]:
            return max(1, logical * cores[0] // siblings[0])
    except (OSError, ValueError, IndexError):
        pass
    return max(1, logical)


class Model:
    """A llama-family model ready to run.

    `n_threads` defaults to the physical cores, `n_ctx` (the most tokens the KV cache holds) to the
    model's training context. `kernels` picks "auto" (the fastest here), "avx512", "avx2", "neon" or
    "portable".
    The weights stay in the mapped file: loading takes milliseconds and pages are shared between
    processes that load the same file.
    """

    def __init__(self, path: str | os.PathLike, n_threads: int | None = None,
                 n_ctx: int | None = None, kernels: str = "auto"):
        self._model = self._buffer = self._file = None
        self._file = WeightsFile(path)
        try:
            self._build(n_threads, n_ctx, kernels)
        except BaseException:
            self.close()
            raise

    def _build(self, n_threads: int | None, n_ctx: int | None, kernels: str) -> None:
        cfg = self._config = self._file.config
        self.path = self._file.path
        self._tokenizer_data, self._tokenizer = self._file.tokenizer, None
        self.chat_template = self._file.chat_template
        self.n_threads = default_threads() if n_threads is None else n_threads
        self.n_ctx = cfg.max_seq_len if n_ctx is None else n_ctx
        if isinstance(self.n_threads, bool) or not isinstance(self.n_threads, int) or self.n_threads < 1:
            raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
        if isinstance(self.n_ctx, bool) or not isinstance(self.n_ctx, int) or not 1 <= self.n_ctx <= 1 << 24:
            raise ValueError(f"n_ctx must be a positive integer, got {n_ctx!r}")
        isa = _native.kernel_id(kernels)
        self.kernels = ffi.string(lib.pyllm_isa_name(isa)).decode()

        family = arch.by_name(cfg.architecture)
        if family is None:
            raise FormatError(f"{self.path}: model family {cfg.architecture!r} is not one pyllm runs "
                              f"({', '.join(f.name for f in arch.FAMILIES)})")
        # The C structs point into the mapping; keep the buffer handle alive as long as the model.
        self._buffer = ffi.from_buffer(self._file.buffer())
        c_config = ffi.new("pyllm_config *", {**family.c_config(cfg), "n_ctx": self.n_ctx})
        layers = ffi.new("pyllm_layer[]", cfg.n_layers)
        for i in range(cfg.n_layers):
            matrices, vectors = family.c_layer(cfg, i)
            for field, name in matrices.items():
                self._set_matrix(getattr(layers[i], field), name)
            for field, name in vectors.items():
                setattr(layers[i], field, self._floats(name))
        weights = ffi.new("pyllm_weights *")
        matrices, vectors = family.c_globals(cfg)
        for field, name in matrices.items():
            self._set_matrix(getattr(weights, field), name)
        for field, name in vectors.items():
            setattr(weights, field, self._floats(name))
        weights.layers = layers

        out = ffi.new("pyllm_model **")
        check(lib.pyllm_model_new(c_config, weights, self.n_threads, isa, out),
              f"{self._file.path}: building the model")
        self._model = out[0]
        self._cached: list[int] = []  # the tokens whose keys/values are in the cache, in order
        self.n_evaluated = 0  # tokens run through the forward pass since loading

    def _address(self, name: str):
        return self._buffer + self._file.tensors[name].offset

    def _floats(self, name: str):
        return ffi.cast("const float *", self._address(name))

    def _set_matrix(self, dst, name: str) -> None:
        t = self._file.tensors[name]
        dst.type = TYPES[t.type].ggml_id
        dst.rows, dst.cols = t.shape
        dst.data = self._address(name)

    # --------------------------------------------------------------------------------------------

    @property
    def config(self) -> ModelConfig:
        """The model's hyperparameters (from its file)."""
        return self._config

    @property
    def file(self) -> WeightsFile:
        """The mapped weights.bin (tokenizer data, chat template, tensor table)."""
        return self._file

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (built on first use from the tokenizer stored in its file)."""
        if self._tokenizer is None:
            if self._tokenizer_data is None:
                raise PyllmError(f"{self.path}: this model file has no tokenizer")
            self._tokenizer = Tokenizer(self._tokenizer_data)
        return self._tokenizer

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Token ids of text; add_bos defaults to the model's rule, special=True parses control tokens."""
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        """Text of token ids (control tokens left out unless special=True)."""
        return self.tokenizer.decode(ids, special=special)

    def _tokens(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(tokens)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError("tokens must be a non-empty 1-D sequence of token ids")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got {arr.dtype}")
        bad = np.flatnonzero((arr < 0) | (arr >= self.config.vocab_size))
        if bad.size:
            raise ValueError(f"token id {int(arr[bad[0]])} at position {int(bad[0])} is outside the "
                             f"vocabulary (0..{self.config.vocab_size - 1})")
        return np.ascontiguousarray(arr, dtype=np.int32)

    def _run(self, tokens: np.ndarray, pos: int, all_logits: bool) -> np.ndarray:
        if self._model is None:
            raise PyllmError("the model is closed")
        if pos + tokens.size > self.n_ctx:
            raise ContextFullError(
                f"{tokens.size} tokens do not fit in the context: {pos} of {self.n_ctx} positions "
                f"are used (pass a larger n_ctx, or reset())")
        out = np.empty((tokens.size if all_logits else 1, self.config.vocab_size), dtype=np.float32)
        check(lib.pyllm_forward(self._model, ffi.from_buffer("int32_t[]", tokens), tokens.size, pos,
                                ffi.from_buffer("float[]", out), int(all_logits)), "forward pass")
        del self._cached[pos:]
        self._cached.extend(tokens.tolist())
        self.n_evaluated += tokens.size
        return out

    @property
    def n_past(self) -> int:
        """Tokens in the KV cache."""
        return len(self._cached)

    def logits(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Logits (len(tokens), vocab) for every position, from an empty cache (which then holds tokens)."""
        return self._run(self._tokens(tokens), 0, True)

    def eval(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Append tokens to the cache; returns the logits (vocab,) after the last one."""
        return self._run(self._tokens(tokens), self.n_past, False)[0]

    def reset(self) -> None:
        """Empty the KV cache."""
        self._cached = []

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly `tokens` and return the logits after the last one.

        Only the suffix that differs from what the cache already holds is evaluated, so a
        conversation that grows turn by turn never re-reads its history.
        """
        tokens = self._tokens(tokens).tolist()
        keep = 0
        for a, b in zip(self._cached, tokens):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)  # the last token must run to produce logits
        del self._cached[keep:]
        return self.eval(tokens[keep:])

    def _prompt_tokens(self, prompt: str | Sequence[int], special: bool = False) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenize(prompt, special=special)
        return self._tokens(prompt).tolist()

    def generate(self, prompt: str | Sequence[int], *, max_tokens: int = 256, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 repeat_last_n: int = 64, frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                 seed: int | None = None, stop: str | Sequence[str] | None = None,
                 logit_bias: Mapping[int, float] | None = None) -> Generation:
        """Generate from a prompt (text or token ids); iterate the result for text pieces as they come.

        temperature=0 is greedy; a fixed seed reproduces the text. Generation ends at an end token,
        a stop string (never emitted), max_tokens, or a full context; `result.finish_reason` says which.
        """
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                                frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                                seed=seed, logit_bias=logit_bias)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return Generation(self, self._prompt_tokens(prompt), params, max_tokens, stops)

    def complete(self, prompt: str | Sequence[int], **options: Any) -> str:
        """The whole completion of a prompt as one string (options as for generate)."""
        return self.generate(prompt, **options).text()

    def chat_prompt(self, messages: Sequence[Mapping[str, str]], template: str | None = None) -> list[int]:
        """Token ids of a conversation formatted with the model's chat template (or a built-in
        one by name: chatml, llama2, llama3, mistral), ready for the assistant's reply."""
        tok = self.tokenizer
        bos = tok.tokens[tok.bos_id] if tok.bos_id is not None else ""
        eos = tok.tokens[tok.eos_id] if tok.eos_id is not None else ""
        text = render(template or self.chat_template or "chatml", messages, bos_token=bos, eos_token=eos)
        add_bos = tok.add_bos and not (bos and text.startswith(bos))
        return self.tokenize(text, add_bos=add_bos, special=True)

    def chat(self, messages: Sequence[Mapping[str, str]], *, stream: bool = False,
             template: str | None = None, **options: Any) -> str | Generation:
        """The assistant's reply to a conversation ({"role", "content"} dicts); with stream=True,
        a Generation to iterate for pieces. Options as for generate."""
        result = self.generate(self.chat_prompt(messages, template), **options)
        return result if stream else result.text()

    def close(self) -> None:
        """Free the C model and unmap the file; the model cannot be used afterwards."""
        if self._model is not None:
            lib.pyllm_model_free(self._model)
            self._model = None
        if getattr(self, "_buffer", None) is not None:
            ffi.release(self._buffer)
            self._buffer = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({self.path!r}, layers={c.n_layers}, dim={c.dim}, vocab={c.vocab_size}, "
                f"n_ctx={self.n_ctx}, threads={self.n_threads}, kernels={self.kernels})")
