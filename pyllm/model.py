"""pyllm.Model: a weights.bin mapped into memory and run by the C core.

The model is read-only once loaded; conversations run in sessions (pyllm.session.Session), any
number of them at once. Model's own generate/eval/... use a default session made on first use.
"""
from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Mapping, Sequence

import numpy as np

from . import _native
from ._native import check, ffi, lib
from .errors import ClosedError, ContextFullError, PyllmError
from .format import ModelConfig, WeightsFile
from .chat import render
from .generation import Generation
from .quant import TYPES
from .session import MAX_CTX, Session, check_count
from .tokenizer import Tokenizer

__all__ = ["Model", "ContextFullError", "default_threads"]


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
    model's training context; both are the defaults of `session()`. `kernels` picks "auto" (the
    fastest here), "avx512", "avx2", "neon" or "portable".
    The weights stay in the mapped file: loading takes milliseconds and pages are shared between
    processes that load the same file. One model serves any number of sessions at once, one per
    thread; generate/eval/logits/... on the model itself run in its default session.
    """

    def __init__(self, path: str | os.PathLike, n_threads: int | None = None,
                 n_ctx: int | None = None, kernels: str = "auto"):
        # Lifetime: C calls in flight are counted under the lock; close() frees the C model, its
        # sessions' sequences and the mapping once the count is back to zero.
        self._lock = threading.RLock()
        self._closed = False
        self._users = 0
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self._default: Session | None = None
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
        self.n_threads = check_count("n_threads", default_threads() if n_threads is None else n_threads)
        self.n_ctx = check_count("n_ctx", cfg.max_seq_len if n_ctx is None else n_ctx, MAX_CTX)
        isa = _native.kernel_id(kernels)
        self.kernels = ffi.string(lib.pyllm_isa_name(isa)).decode()

        # The C structs point into the mapping; keep the buffer handle alive as long as the model.
        self._buffer = ffi.from_buffer(self._file.buffer())
        c_config = ffi.new("pyllm_config *", {
            "dim": cfg.dim, "hidden_dim": cfg.hidden_dim, "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
            "vocab_size": cfg.vocab_size, "rope_theta": cfg.rope_theta, "norm_eps": cfg.norm_eps})
        layers = ffi.new("pyllm_layer[]", cfg.n_layers)
        for i in range(cfg.n_layers):
            p, layer = f"blk.{i}.", layers[i]
            layer.attn_norm = self._floats(p + "attn_norm.weight")
            layer.ffn_norm = self._floats(p + "ffn_norm.weight")
            for field, name in (("wq", "attn_q"), ("wk", "attn_k"), ("wv", "attn_v"), ("wo", "attn_output"),
                                ("w_gate", "ffn_gate"), ("w_up", "ffn_up"), ("w_down", "ffn_down")):
                self._set_matrix(getattr(layer, field), p + name + ".weight")
            if cfg.qkv_bias:
                layer.bq = self._floats(p + "attn_q.bias")
                layer.bk = self._floats(p + "attn_k.bias")
                layer.bv = self._floats(p + "attn_v.bias")
        weights = ffi.new("pyllm_weights *")
        self._set_matrix(weights.token_embd, "token_embd.weight")
        self._set_matrix(weights.output, "token_embd.weight" if cfg.tied_embeddings else "output.weight")
        weights.output_norm = self._floats("output_norm.weight")
        weights.layers = layers

        out = ffi.new("pyllm_model **")
        check(lib.pyllm_model_new(c_config, weights, isa, out), f"{self._file.path}: building the model")
        self._model = out[0]

    def _address(self, name: str):
        return self._buffer + self._file.tensors[name].offset

    def _floats(self, name: str):
        return ffi.cast("const float *", self._address(name))

    def _set_matrix(self, dst, name: str) -> None:
        t = self._file.tensors[name]
        dst.type = TYPES[t.type][0]
        dst.rows, dst.cols = t.shape
        dst.data = self._address(name)

    # --------------------------------------------------------------------------------------------
    # Sessions and the lifetime of the C objects (called by Session, always under self._lock)

    def _check_open(self, session: Session) -> None:
        if self._closed:
            raise ClosedError("the model was closed")
        if session._closed:
            raise ClosedError("the session is closed")

    def _open_session(self, session: Session) -> None:
        """Give a new session its C sequence."""
        with self._lock:
            if self._closed:
                raise ClosedError("the model was closed")
            out = ffi.new("pyllm_seq **")
            check(lib.pyllm_seq_new(self._model, session.n_ctx, session.n_threads, out), "creating a session")
            session._seq = out[0]
            self._sessions.add(session)

    def _enter(self, session: Session):
        """The C model and the session's sequence, kept alive until the matching _leave."""
        with self._lock:
            self._check_open(session)
            self._users += 1
            session._running = True
            return self._model, session._seq

    def _leave(self, session: Session) -> None:
        """End a C call; frees what was closed while it ran if it was the last one."""
        with self._lock:
            self._users -= 1
            session._running = False
            if session._closed:
                session._free_sequence()
            if self._closed and self._users == 0:
                self._free()

    def _free(self) -> None:
        """Free the sessions' sequences, then the C model, then the mapping (no C call is running)."""
        for session in list(self._sessions):
            session._free_sequence()
        if self._model is not None:
            lib.pyllm_model_free(self._model)
            self._model = None
        if self._buffer is not None:
            ffi.release(self._buffer)
            self._buffer = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def session(self, n_ctx: int | None = None, n_threads: int | None = None) -> Session:
        """A new conversation with its own KV cache (n_ctx and n_threads default to the model's);
        sessions run at the same time, one thread each."""
        return Session(self, self.n_ctx if n_ctx is None else n_ctx,
                       self.n_threads if n_threads is None else n_threads)

    def _session(self) -> Session:
        """The default session, made on first use, that the model's own generate/eval/... run in."""
        session = self._default
        if session is None:
            with self._lock:
                if self._default is None:
                    self._default = Session(self, self.n_ctx, self.n_threads, _model_default=True)
                session = self._default
        return session

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

    def chat_prompt(self, messages: Sequence[Mapping[str, str]], template: str | None = None) -> list[int]:
        """Token ids of a conversation formatted with the model's chat template (or a built-in
        one by name: chatml, llama2, llama3, mistral), ready for the assistant's reply."""
        tok = self.tokenizer
        bos = tok.tokens[tok.bos_id] if tok.bos_id is not None else ""
        eos = tok.tokens[tok.eos_id] if tok.eos_id is not None else ""
        text = render(template or self.chat_template or "chatml", messages, bos_token=bos, eos_token=eos)
        add_bos = tok.add_bos and not (bos and text.startswith(bos))
        return self.tokenize(text, add_bos=add_bos, special=True)

    # The default session's API, on the model

    @property
    def n_past(self) -> int:
        """Tokens in the default session's KV cache."""
        return self._default.n_past if self._default is not None else 0

    @property
    def n_evaluated(self) -> int:
        """Tokens the default session has run through the forward pass."""
        return self._default.n_evaluated if self._default is not None else 0

    @property
    def _cached(self) -> list[int]:
        # the default session's token list (tools/bench.py trims it to rerun from a given depth)
        return self._session()._cached

    def logits(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Logits (len(tokens), vocab) for every position, from an empty cache (which then holds tokens)."""
        return self._session().logits(tokens)

    def eval(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Append tokens to the default session's cache; returns the logits (vocab,) after the last one."""
        return self._session().eval(tokens)

    def reset(self) -> None:
        """Empty the default session's KV cache."""
        self._session().reset()

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Make the default session's cache hold exactly `tokens`; the logits after the last one
        (only the suffix that differs from what the cache holds is evaluated)."""
        return self._session().prefill(tokens)

    def generate(self, prompt: str | Sequence[int], **options: Any) -> Generation:
        """Generate from a prompt in the default session; iterate the result for text pieces.
        Options (max_tokens, temperature, top_k, ..., stop, logit_bias) as for Session.generate."""
        return self._session().generate(prompt, **options)

    def complete(self, prompt: str | Sequence[int], **options: Any) -> str:
        """The whole completion of a prompt as one string (options as for generate)."""
        return self._session().complete(prompt, **options)

    def chat(self, messages: Sequence[Mapping[str, str]], *, stream: bool = False,
             template: str | None = None, **options: Any) -> str | Generation:
        """The assistant's reply to a conversation ({"role", "content"} dicts); with stream=True,
        a Generation to iterate for pieces. Options as for generate."""
        return self._session().chat(messages, stream=stream, template=template, **options)

    def close(self) -> None:
        """Free the C model, its sessions and the mapped file; the model cannot be used afterwards.

        Safe from any thread and more than once: if a forward pass is running, the memory is freed
        when it returns, and that thread's next call raises ClosedError.
        """
        lock = getattr(self, "_lock", None)
        if lock is None:  # __init__ did not get that far
            return
        with lock:
            if self._closed:
                return
            self._closed = True
            if self._users == 0:
                self._free()

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
