"""pyllm.Session: one conversation on a model - its KV cache, the tokens it holds, and generation.

A Model holds what every conversation shares and never changes (the weights, the tokenizer, the
chat template); a Session holds what one conversation writes (the C sequence: KV cache and scratch
buffers). Sessions on one model run at the same time, each in its own thread. One session serves
one thread at a time: a call, or an unfinished generation, holds it for the thread that made it,
and a call from another thread meanwhile raises SessionBusyError.
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ._native import check, ffi, lib
from .core import MAX_THREADS, ModelCore, check_count
from .errors import ClosedError, ContextFullError, GenerationCancelledError, SessionBusyError
from .generation import DEFAULT_MAX_TOKENS, Generation
from .sampling import SamplingParams
from .structured import spec_from_options

# Lists of up to this many ids are checked in Python: a decoding step's token, checked by numpy's
# general path, cost about a tenth of a millisecond with the caches cold from the forward pass.
SHORT_LIST = 8

BUSY = "this session is in use by another thread; use model.session() for one per thread"


def token_array(tokens: Sequence[int] | np.ndarray, vocab_size: int) -> np.ndarray:
    """Token ids as a contiguous int32 array, after checking they are ids of the vocabulary."""
    if type(tokens) is list and 0 < len(tokens) <= SHORT_LIST and all(
            type(t) is int and 0 <= t < vocab_size for t in tokens):
        return np.array(tokens, dtype=np.int32)  # a decoding step's few ids: checked without numpy
    arr = np.asarray(tokens)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("tokens must be a non-empty 1-D sequence of token ids")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= vocab_size))
    if bad.size:
        raise ValueError(f"token id {int(arr[bad[0]])} at position {int(bad[0])} is outside the "
                         f"vocabulary (0..{vocab_size - 1})")
    return np.ascontiguousarray(arr, dtype=np.int32)


class Claim:
    """One call's or one generation's hold on a session, for the thread that made it.

    A later call of the same thread supersedes a generation's claim: the generation is suspended
    between pieces, and the new call would rewrite the cache under it, so it is cancelled.
    """

    __slots__ = ("thread", "generation", "superseded")

    def __init__(self, generation: bool):
        self.thread = threading.get_ident()
        self.generation = generation
        self.superseded = False


class Session:
    """One conversation on a model: its KV cache, the tokens the cache holds, and generation.

    Made by `model.session(n_ctx, n_threads)`. A new prompt that starts with what the cache
    already holds evaluates only the rest. Close it (or use it as a context manager) to free its
    cache at once; closing the model closes its sessions.
    """

    def __init__(self, model: ModelCore, n_ctx: int, n_threads: int, *, _model_default: bool = False):
        self.n_ctx = model.check_n_ctx(n_ctx)
        self.n_threads = check_count("n_threads", n_threads, MAX_THREADS)
        # The model's own default session refers to it weakly, so that dropping the model frees it.
        self._model_ref = weakref.ref(model) if _model_default else (lambda: model)
        self._lock = model._lock  # guards the fields below and the model's lifetime fields
        self._seq = None          # the C sequence (NULL once freed)
        self._closed = False
        self._running = False     # a C call on the sequence is in flight
        self._claim: Claim | None = None
        self._cached: list[int] = []  # the tokens whose keys/values are in the cache, in order
        self.n_evaluated = 0  # tokens run through the forward pass by this session
        model._open_session(self)

    @property
    def model(self) -> ModelCore:
        """The model this session runs on."""
        model = self._model_ref()
        if model is None:
            raise ClosedError("the model was closed")
        return model

    @property
    def n_past(self) -> int:
        """Tokens in the KV cache."""
        return len(self._cached)

    # --------------------------------------------------------------------------------------------
    # Holding the session: one thread at a time

    def _take(self, generation: bool = False) -> Claim:
        """Claim the session for this thread; SessionBusyError if another thread holds it."""
        model = self.model
        claim = Claim(generation)
        with self._lock:
            model._check_open(self)
            held = self._claim
            if held is not None:
                if held.thread != claim.thread:
                    raise SessionBusyError(BUSY)
                if not held.generation:
                    raise SessionBusyError("this session is already running a call in this thread")
                held.superseded = True  # this thread's suspended generation gives way
            self._claim = claim
        return claim

    def _resume(self, claim: Claim) -> None:
        """Check that a generation's claim still holds the session, and move it to this thread."""
        with self._lock:
            if claim.superseded or self._claim is not claim:
                raise GenerationCancelledError(
                    "this generation was cancelled: a later call on its session took the session over")
            self.model._check_open(self)
            claim.thread = threading.get_ident()

    def _give_back(self, claim: Claim) -> None:
        """Release the session if `claim` still holds it (a superseded claim holds nothing)."""
        with self._lock:
            if self._claim is claim:
                self._claim = None

    @contextmanager
    def _held(self) -> Iterator[None]:
        claim = self._take()
        try:
            yield
        finally:
            self._give_back(claim)

    # --------------------------------------------------------------------------------------------
    # The forward pass and the cache

    def _forward(self, tokens: np.ndarray, pos: int, all_logits: bool) -> np.ndarray:
        if pos + tokens.size > self.n_ctx:
            raise ContextFullError(
                f"{tokens.size} tokens do not fit in the context: {pos} of {self.n_ctx} positions "
                f"are used (pass a larger n_ctx, or reset())")
        model = self.model
        c_model, seq = model._enter(self)
        try:
            start, run = pos, tokens
            if 0 < pos < lib.pyllm_seq_min_resume(seq):
                # the sliding-window layers have dropped keys this position needs: replay from the start
                start, run = 0, np.concatenate([np.array(self._cached[:pos], dtype=np.int32), tokens])
            out = np.empty((run.size if all_logits else 1, model.config.vocab_size), dtype=np.float32)
            code = lib.pyllm_forward(c_model, seq, ffi.from_buffer("int32_t[]", run), run.size, start,
                                     ffi.from_buffer("float[]", out), int(all_logits))
        finally:
            model._leave(self)
        check(code, "forward pass")
        del self._cached[pos:]
        self._cached.extend(tokens.tolist())
        self.n_evaluated += run.size
        return out[pos - start:] if all_logits else out

    def _tokens(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        return token_array(tokens, self.model.config.vocab_size)

    def _eval(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._forward(self._tokens(tokens), self.n_past, False)[0]

    def _prefill(self, tokens: Sequence[int]) -> np.ndarray:
        tokens = self._tokens(tokens).tolist()
        keep = 0
        for a, b in zip(self._cached, tokens):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)  # the last token must run to produce logits
        del self._cached[keep:]
        return self._eval(tokens[keep:])

    def logits(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Logits (len(tokens), vocab) for every position, from an empty cache (which then holds tokens)."""
        with self._held():
            return self._forward(self._tokens(tokens), 0, True)

    def eval(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Append tokens to the cache; returns the logits (vocab,) after the last one."""
        claim = self._take()  # _held() without the context manager: this runs once per token
        try:
            return self._eval(tokens)
        finally:
            self._give_back(claim)

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly `tokens` and return the logits after the last one.

        Only the suffix that differs from what the cache already holds is evaluated, so a
        conversation that grows turn by turn never re-reads its history.
        """
        with self._held():
            return self._prefill(tokens)

    def reset(self) -> None:
        """Empty the KV cache."""
        self.truncate(0)

    def truncate(self, n_keep: int) -> None:
        """Keep the first n_keep tokens of the cache and forget the rest: the next eval continues
        after them (rewinding a conversation, or rerunning from a fixed depth)."""
        if isinstance(n_keep, bool) or not isinstance(n_keep, int) or n_keep < 0:
            raise ValueError(f"n_keep must be a non-negative integer, got {n_keep!r}")
        with self._held():
            del self._cached[n_keep:]

    # --------------------------------------------------------------------------------------------
    # Generation

    def _prompt_tokens(self, prompt: str | Sequence[int], special: bool = False) -> list[int]:
        if isinstance(prompt, str):
            return self.model.tokenize(prompt, special=special)
        return self._tokens(prompt).tolist()

    def generate(self, prompt: str | Sequence[int], *, max_tokens: int = DEFAULT_MAX_TOKENS,
                 stop: str | Sequence[str] | None = None, json_schema: Any = None, regex: str | None = None,
                 grammar: str | None = None, grammar_format: str | None = None,
                 choices: Sequence[str] | None = None, constraint_prefix: str | None = None,
                 **options: Any) -> Generation:
        """Generate from a prompt (text or token ids); iterate the result for text pieces as they come.

        `options` are the sampling options (pyllm.sampling.SamplingParams: temperature, top_k,
        top_p, min_p, repeat_penalty, repeat_last_n, frequency_penalty, presence_penalty, seed,
        logit_bias). temperature=0 is greedy; a fixed seed reproduces the text. Generation ends at an
        end token, a stop string (never emitted), max_tokens, or a full context;
        `result.finish_reason` says which. The generation holds the session from its first piece
        until it ends or is closed.

        One constraint may hold the output to a structure: `json_schema` (a dict, its JSON text, or
        a Pydantic model class), `regex`, `grammar` (Lark, or llama.cpp's GBNF: detected, or say
        grammar_format="lark"/"gbnf") or `choices` (a list of strings). An invalid or unsupported
        one raises ConstraintError (a ValueError) here, before generation; `result.parsed` is the
        finished output as a value. When the prompt already ends with the start of the output (an
        assistant turn begun by the caller, or a cut generation continued), pass that text as
        `constraint_prefix`: the constraint starts after it, and `parsed` reads it with the rest.
        """
        with self._lock:  # fail early; the generation claims the session when it starts
            self.model._check_open(self)
            if self._claim is not None and self._claim.thread != threading.get_ident():
                raise SessionBusyError(BUSY)
        params = SamplingParams.from_options(options)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        spec = spec_from_options(json_schema, regex, grammar, grammar_format, choices, constraint_prefix)
        return Generation(self, self._prompt_tokens(prompt), params, max_tokens, stops, spec)

    def complete(self, prompt: str | Sequence[int], **options: Any) -> str:
        """The whole completion of a prompt as one string (options as for generate)."""
        return self.generate(prompt, **options).text()

    def chat_prompt(self, messages: Sequence[Mapping[str, str]], template: str | None = None, *,
                    special_in_messages: bool = False) -> list[int]:
        """Token ids of a conversation in the model's chat template (see Model.chat_prompt)."""
        return self.model.chat_prompt(messages, template, special_in_messages=special_in_messages)

    def chat(self, messages: Sequence[Mapping[str, str]], *, stream: bool = False,
             template: str | None = None, special_in_messages: bool = False,
             **options: Any) -> str | Generation:
        """The assistant's reply to a conversation ({"role", "content"} dicts); with stream=True,
        a Generation to iterate for pieces. Options as for generate. Control-token text inside
        messages stays plain text unless special_in_messages=True (see Model.chat_prompt)."""
        prompt = self.chat_prompt(messages, template, special_in_messages=special_in_messages)
        result = self.generate(prompt, **options)
        return result if stream else result.text()

    def parse(self, messages: Sequence[Mapping[str, str]], schema: Any, **options: Any) -> Any:
        """The reply to a conversation held to a JSON Schema (a dict, its JSON text, or a Pydantic
        model class), as a value: an instance of the class, or the JSON value. IncompleteOutputError
        if max_tokens (or a stop string, or the context) cut it before it was complete. Options as
        for chat."""
        result = self.chat(messages, stream=True, json_schema=schema, **options)
        assert isinstance(result, Generation)
        result.text()
        return result.parsed

    # --------------------------------------------------------------------------------------------

    def _free_sequence(self) -> None:
        """Free the C sequence now (the lock is held and no C call is running on it)."""
        self._closed = True
        seq, self._seq = self._seq, None
        if seq is not None:
            lib.pyllm_seq_free(seq)

    def close(self) -> None:
        """Free the session's KV cache; if a call is running on it, as soon as that call returns.

        Safe from any thread and more than once; calls afterwards raise ClosedError.
        """
        with self._lock:
            self._closed = True
            if not self._running:
                self._free_sequence()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"n_past={self.n_past}"
        return f"Session(n_ctx={self.n_ctx}, threads={self.n_threads}, {state})"
