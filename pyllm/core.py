"""ModelCore: a weights.bin mapped into memory, validated, and built into the C core's model; what
every session on it shares and nothing ever writes.

The C model lives as long as its last user: forward passes in flight are counted under a lock, and
close() frees the sessions' sequences, the C model and the mapping once none is running.
"""
from __future__ import annotations

import os
import threading
import warnings
import weakref
from typing import Any, Mapping, Protocol, Sequence, TypeVar

import numpy as np

from . import _native, arch
from ._native import check, ffi, lib
from .chat import render_marked
from .errors import ClosedError, FormatError, PyllmError, TemplateError
from .formats.mapped import huge_pages_available
from .formats.weights import WeightsFile
from .quant import TYPES
from .tokenizer import Tokenizer
from .types import ModelConfig

MAX_CTX = 1 << 24
KV_TYPES = {"f32": 0, "f16": 1}  # how a KV cache stores keys and values (enum pyllm_kv_type)
MAX_THREADS = 512  # beyond any CPU pyllm runs on; thousands of threads only thrash (and can exhaust memory)
Loaded = TypeVar("Loaded", bound="ModelCore")


class SequenceHolder(Protocol):
    """What the core needs of a session (pyllm.Session): its C sequence, its state, and a way to
    free the sequence when the model goes."""

    _seq: Any
    _closed: bool
    _running: bool
    n_ctx: int
    n_threads: int

    def _free_sequence(self) -> None: ...


def check_count(name: str, value: object, limit: int | None = None) -> int:
    """value if it is a positive integer (at most limit), else ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (limit and value > limit):
        bound = f" of at most {limit}" if limit else ""
        raise ValueError(f"{name} must be a positive integer{bound}, got {value!r}")
    return value


def check_loadable(file: WeightsFile) -> tuple[arch.Family, Tokenizer | None]:
    """The family and the built tokenizer of a mapped (so validated) weights.bin: what loading checks
    beyond the file's own validation, before the C core checks shapes and numbers. A tokenizer that
    cannot be built is refused at load (naming the file), not at the first text."""
    family = arch.by_name(file.config.architecture)
    if family is None:
        raise FormatError(f"{file.path}: model family {file.config.architecture!r} is not one pyllm runs "
                          f"({', '.join(f.name for f in arch.FAMILIES)})")
    try:
        tokenizer = Tokenizer(file.tokenizer) if file.tokenizer is not None else None
    except FormatError as exc:
        raise FormatError(f"{file.path}: tokenizer: {exc}") from None
    return family, tokenizer


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


class ModelCore:
    """A weights.bin loaded for the C core: the mapped, validated file, the C model, the tokenizer,
    and the lifetime of both, shared by every session that runs on it.

    `n_threads` defaults to the physical cores, `n_ctx` (the most tokens a KV cache holds) to the
    model's training context; both are the defaults of its sessions. `kernels` picks "auto" (the
    fastest here), "avx512", "avx2", "neon" or "portable"; `kv_type` how its KV caches store keys
    and values: "f32", or "f16" for half the memory.
    `use_mmap`: decoding reads every weight once per token, and where Linux offers transparent huge
    pages (the default None) the weights are read into memory backed by them: 2 MB pages instead of
    the file's 4 KB ones decode 7% faster at SmolLM2-135M, 13% at Gemma 3 270M and 21% at
    Llama-3.2-1B shapes (docs/performance.md), for a load that copies the file (0.5 s for 640 MB). True maps the
    file instead, as elsewhere: loading takes milliseconds and processes that load the same file
    share its pages. False reads it even without huge pages. Nothing here changes after loading,
    so any number of sessions run on one model at once.
    """

    def __init__(self, path: str | os.PathLike, n_threads: int | None = None,
                 n_ctx: int | None = None, kernels: str = "auto", kv_type: str = "f32",
                 use_mmap: bool | None = None):
        # Lifetime: C calls in flight are counted under the lock; close() frees the C model, its
        # sessions' sequences and the mapping once the count is back to zero.
        self._lock = threading.RLock()
        self._closed = False
        self._users = 0
        self._sessions: weakref.WeakSet[SequenceHolder] = weakref.WeakSet()
        self._model = self._buffer = self._file = None
        if kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
        self.kv_type = kv_type
        if use_mmap not in (None, True, False):
            raise ValueError(f"use_mmap must be True, False or None, got {use_mmap!r}")
        self.use_mmap = use_mmap if use_mmap is not None else not huge_pages_available()
        self._file = WeightsFile(path, read=not self.use_mmap)
        try:
            self._build(n_threads, n_ctx, kernels)
        except BaseException:
            self.close()
            raise

    def _build(self, n_threads: int | None, n_ctx: int | None, kernels: str) -> None:
        cfg = self._config = self._file.config
        self.path = self._file.path
        family, self._tokenizer = check_loadable(self._file)
        self.chat_template = self._file.chat_template
        self.n_threads = check_count("n_threads", default_threads() if n_threads is None else n_threads,
                                     MAX_THREADS)
        context = cfg.max_seq_len
        if n_ctx is None and context > MAX_CTX:
            warnings.warn(f"{self.path}: the model's context of {context} tokens is more than pyllm "
                          f"allocates for one sequence; n_ctx defaults to {MAX_CTX}", stacklevel=3)
        self.n_ctx = self.check_n_ctx(min(context, MAX_CTX) if n_ctx is None else n_ctx)
        isa = _native.kernel_id(kernels)
        self.kernels = ffi.string(lib.pyllm_isa_name(isa)).decode()

        # The C structs point into the mapping; keep the buffer handle alive as long as the model.
        self._buffer = ffi.from_buffer(self._file.buffer())
        c_config = ffi.new("pyllm_config *", family.c_config(cfg))
        layers = ffi.new("pyllm_layer[]", cfg.n_layers)
        nope, sliding = set(cfg.nope_layers), family.c_sliding_layers(cfg)
        self.sliding_layers = frozenset(sliding)  # layers with a sliding attention window
        for i in range(cfg.n_layers):
            matrices, vectors = family.c_layer(cfg, i)
            for field, name in matrices.items():
                self._set_matrix(getattr(layers[i], field), name)
            for field, name in vectors.items():
                setattr(layers[i], field, self._floats(name))
            layers[i].no_rope = i in nope
            layers[i].sliding = i in sliding
        weights = ffi.new("pyllm_weights *")
        matrices, vectors = family.c_globals(cfg)
        for field, name in matrices.items():
            self._set_matrix(getattr(weights, field), name)
        for field, name in vectors.items():
            setattr(weights, field, self._floats(name))
        weights.layers = layers
        freq_swa = family.c_rope_freq_swa(cfg)  # copied by pyllm_model_new
        if freq_swa is not None:
            freq_swa = np.ascontiguousarray(freq_swa, dtype=np.float32)
            weights.rope_freq_swa = ffi.cast("const float *", ffi.from_buffer(freq_swa))

        out = ffi.new("pyllm_model **")
        check(lib.pyllm_model_new(c_config, weights, isa, out), f"{self._file.path}: building the model")
        self._model = out[0]

    def check_n_ctx(self, n_ctx: object) -> int:
        """n_ctx if it is a positive integer within pyllm's bound, else ValueError saying so."""
        return check_count("n_ctx", n_ctx, MAX_CTX)

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
    # Sessions and the lifetime of the C objects (called by Session, always under self._lock)

    def _check_open(self, session: SequenceHolder) -> None:
        if self._closed:
            raise ClosedError("the model was closed")
        if session._closed:
            raise ClosedError("the session is closed")

    def _open_session(self, session: SequenceHolder) -> None:
        """Give a new session its C sequence."""
        with self._lock:
            if self._closed:
                raise ClosedError("the model was closed")
            out = ffi.new("pyllm_seq **")
            check(lib.pyllm_seq_new(self._model, session.n_ctx, session.n_threads, KV_TYPES[self.kv_type], out),
                  "creating a session")
            session._seq = out[0]
            self._sessions.add(session)

    def _enter(self, session: SequenceHolder):
        """The C model and the session's sequence, kept alive until the matching _leave."""
        with self._lock:
            self._check_open(session)
            self._users += 1
            session._running = True
            return self._model, session._seq

    def _leave(self, session: SequenceHolder) -> None:
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
        """The model's tokenizer, built at load from the one stored in its file (which checks it)."""
        if self._tokenizer is None:
            raise PyllmError(f"{self.path}: this model file has no tokenizer")
        return self._tokenizer

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Token ids of text; add_bos defaults to the model's rule, special=True parses control tokens."""
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        """Text of token ids (control tokens left out unless special=True)."""
        return self.tokenizer.decode(ids, special=special)

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]], template: str | None = None, *,
                    special_in_messages: bool = False, tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        """Token ids of a conversation formatted with the model's chat template (or a built-in
        one by name: chatml, llama2, llama3, mistral), ready for the assistant's reply.

        Only text the template writes becomes control tokens: "<|im_end|>" inside a message is
        read as plain text, so a message cannot end its turn or start another role's. Pass
        special_in_messages=True to read control tokens in messages too (as Hugging Face and
        llama.cpp do), for messages you wrote yourself. `tools` (OpenAI's function declarations) is
        given to the template as its `tools` variable, as transformers' apply_chat_template does.
        """
        tok = self.tokenizer
        bos = tok.tokens[tok.bos_id] if tok.bos_id is not None else ""
        eos = tok.tokens[tok.eos_id] if tok.eos_id is not None else ""
        controls = None if special_in_messages else tok.control_pattern
        extra = {} if tools is None else {"tools": [dict(t) for t in tools]}
        text, plain = render_marked(template or self.chat_template or "chatml", messages, controls,
                                    bos_token=bos, eos_token=eos, **extra)
        starts_with_bos = bos and text.startswith(bos) and not (plain and plain[0][0] == 0)
        ids = tok.encode(text, add_bos=tok.add_bos and not starts_with_bos, special=True, plain_spans=plain)
        if not ids:
            raise TemplateError("the chat template rendered an empty prompt")
        return ids

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

    def __enter__(self: Loaded) -> Loaded:
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
        return (f"{type(self).__name__}({self.path!r}, layers={c.n_layers}, dim={c.dim}, vocab={c.vocab_size}, "
                f"n_ctx={self.n_ctx}, threads={self.n_threads}, kernels={self.kernels})")
