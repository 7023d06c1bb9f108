"""pyllm.Engine: many generation requests on one model at once, with continuous batching.

Callers submit requests from any thread (or from asyncio) and read each request's steps from its
Stream. One scheduler thread owns the forward pass: at every token boundary it admits queued
requests while slots and KV memory allow, and runs one batch through the C core that holds a token
of every running request and a chunk of the prompts being read (each weight matrix is read once for
all of them); it then samples each request's next token with its own sampler and hands the pieces
to the streams. Requests join and leave between steps; a request that is cancelled (its client went
away) leaves at the next step and gives its cache blocks back. The KV cache is paged
(pyllm.paged.PagedCache): requests whose prompts start alike share the blocks of that prefix.

    engine = Engine(model, max_running=8)
    stream = engine.submit(model.tokenize("Once upon a time"), max_tokens=32, temperature=0)
    for step in stream:            # or: async for step in stream
        print(step.text, end="")
    print(stream.finish_reason)    # "eos", "stop", "length", "context" or "cancelled"
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from .core import ModelCore, check_count
from .errors import ClosedError, ContextFullError, IncompleteOutputError, PyllmError, QueueFullError
from .generation import DEFAULT_MAX_TOKENS, held_back, stop_tokens
from .paged import BLOCK_ROWS, CachedSequence, PagedCache
from .sampling import Sampler, SamplingParams, token_logprobs
from .structured import CONSTRAINT_OPTIONS, Constraint, ConstraintSpec, spec_from_options

T = TypeVar("T")

MAX_TOP_LOGPROBS = 20  # OpenAI's limit on top_logprobs
DEFAULT_KV_BUDGET = 1 << 30  # bytes of KV cache when the caller sets none (at most max_running full contexts)


@dataclass
class Step:
    """One generated token: its id, the text it completes (may be empty while a multi-byte
    character or a possible stop string is held back), and its log-probability with the top
    alternatives when the request asked for them. Text held back until the end comes as a last
    step whose token is None."""

    token: int | None
    text: str
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None


@dataclass
class Usage:
    """Token counts of one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose keys/values were reused, not computed

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Stream:
    """The steps of one request, in order, as the engine produces them.

    Iterate it (blocking, from any one thread) or `async for` it (from an event loop). After the
    last step, `finish_reason` says why it ended; `usage` counts tokens; `cancel()` ends it early
    from any thread and frees its cache at the next step.
    """

    _ids = itertools.count()

    def __init__(self, prompt: list[int], params: SamplingParams, max_tokens: int, stop: list[str],
                 logprobs: int | None, constraint: Constraint | None = None):
        self.id = next(self._ids)
        self.prompt = prompt
        self.constraint = constraint  # its own parser state: json_schema=, regex=, grammar=, choices=
        self.tokens: list[int] = []   # the generated ids
        self.params, self.max_tokens, self.stop, self.logprobs = params, max_tokens, stop, logprobs
        self.usage = Usage(prompt_tokens=len(prompt))
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self._followers: list[Stream] = []  # the other choices of one prompt, forked after it is read
        self._sampler: Sampler | None = None
        self._steps: deque[Step] = deque()
        self._done = False
        self._cancelled = False
        self._cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    # producer side (the scheduler thread)

    def _push(self, step: Step | None, finish: str | None = None, error: BaseException | None = None) -> None:
        with self._cond:
            if step is not None:
                self._steps.append(step)
            if finish is not None or error is not None:
                self.finish_reason, self.error, self._done = finish, error, True
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_wake, fut)

    # consumer side

    @property
    def done(self) -> bool:
        """True once the request has ended (its last steps may still be unread)."""
        return self._done

    def cancel(self) -> None:
        """End the request early (a client went away); the engine frees its cache at the next step."""
        self._cancelled = True

    def __iter__(self) -> Iterator[Step]:
        return self

    def __next__(self) -> Step:
        with self._cond:
            while not self._steps and not self._done:
                self._cond.wait()
            if self._steps:
                return self._steps.popleft()
        if self.error is not None:
            raise self.error
        raise StopIteration

    def __aiter__(self) -> "Stream":
        return self

    async def __anext__(self) -> Step:
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._steps:
                    return self._steps.popleft()
                if self._done:
                    if self.error is not None:
                        raise self.error
                    raise StopAsyncIteration
                fut = loop.create_future()
                self._waiters.append((loop, fut))
            await fut

    def text(self) -> str:
        """Run to the end (blocking) and return all the text."""
        return "".join(step.text for step in self)

    @property
    def parsed(self) -> object:
        """The constrained output as a value (as Generation.parsed): IncompleteOutputError unless
        the request has ended with its structure complete."""
        if self.constraint is None:
            raise ValueError("this request has no constraint (json_schema=, regex=, grammar=, choices=)")
        if not self._done or self.finish_reason != "eos" or not self.constraint.complete:
            raise IncompleteOutputError(f"the output ended (finish_reason {self.finish_reason!r}) before its "
                                        f"{self.constraint.spec.kind} was complete; it is not valid")
        return self.constraint.spec.parse(self.constraint.tokenizer.decode(self.tokens))


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class _Running:
    """A request the scheduler is working on: its stream, cache sequence, sampler and text state."""

    stream: Stream
    seq: CachedSequence
    need: int             # cache blocks the request may hold at most (prompt + max_tokens)
    sampler: Sampler
    decoder: Any
    history: list[int]
    followers: list[Stream] = field(default_factory=list)  # choices to fork when the prompt is read
    fed: int = 0          # prompt tokens already in the cache
    feed: list[int] = field(default_factory=list)  # the token to run next (decoding)
    pending: str = ""     # text held back: it could be the start of a stop string


@dataclass
class EngineStats:
    """Counters for /metrics: what runs and waits now, and totals since the engine started."""

    running: int
    queued: int
    prompt_tokens: int
    generated_tokens: int
    requests_finished: int
    kv_blocks_used: int
    kv_blocks_free: int
    kv_block_bytes: int


class Engine:
    """Serves many generation requests on one model with continuous batching (see the module doc).

    max_running: requests decoded together; max_queued: requests waiting beyond them (more raise
    QueueFullError); n_ctx: the longest prompt + completion of one request (default the model's);
    prefill_chunk: prompt tokens read per step, so that running streams keep flowing while a long
    prompt is read; kv_budget: bytes of KV cache (full-attention layers) all requests may hold
    together (default: max_running requests of n_ctx tokens, at most 1 GiB); a request is admitted
    only when the blocks for its prompt and max_tokens are there, so running requests never run
    out of room. kv_type: "f32" or "f16" (half the memory), default the model's.
    """

    def __init__(self, model: ModelCore, *, max_running: int = 8, max_queued: int = 64,
                 n_ctx: int | None = None, prefill_chunk: int = 256, kv_budget: int | None = None,
                 kv_type: str | None = None):
        self.model = model
        self.max_running = check_count("max_running", max_running, 1024)
        self.max_queued = check_count("max_queued", max_queued, 1 << 20)
        self.n_ctx = model.check_n_ctx(model.n_ctx if n_ctx is None else n_ctx)
        self.prefill_chunk = check_count("prefill_chunk", prefill_chunk, 2048)
        cfg = model.config
        kv_type = model.kv_type if kv_type is None else kv_type
        value_bytes = {"f32": 4, "f16": 2}.get(kv_type)
        if value_bytes is None:
            raise ValueError(f"kv_type must be f32 or f16, got {kv_type!r}")
        per_block = 2 * BLOCK_ROWS * cfg.n_kv_heads * cfg.head_dim * value_bytes * \
            (cfg.n_layers - len(model.sliding_layers))
        if kv_budget is None:
            n_blocks = min(self.max_running * -(-self.n_ctx // BLOCK_ROWS), max(2, DEFAULT_KV_BUDGET // per_block))
        else:
            n_blocks = check_count("kv_budget", kv_budget, 1 << 50) // max(per_block, 1)
            if n_blocks < 2:
                raise ValueError(f"kv_budget of {kv_budget} bytes holds less than two cache blocks "
                                 f"({per_block} bytes each)")
        self.cache = PagedCache(model, max(n_blocks, 1), n_ctx=self.n_ctx, max_seqs=self.max_running,
                                n_batch=self.prefill_chunk + self.max_running, kv_type=kv_type)
        self.kv_budget = n_blocks * per_block
        self._ends = stop_tokens(model)
        self._queue: deque[Stream] = deque()
        self._running: list[_Running] = []
        self._jobs: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._lock = threading.Condition()
        self._closed = False
        self.prompt_tokens = self.generated_tokens = self.requests_finished = 0
        self._thread = threading.Thread(target=self._loop, name="pyllm-engine", daemon=True)
        self._thread.start()

    # --------------------------------------------------------------------------------------------
    # Callers' side

    def submit(self, prompt: str | Sequence[int], *, max_tokens: int = DEFAULT_MAX_TOKENS,
               stop: str | Sequence[str] | None = None, logprobs: int | None = None,
               **options: Any) -> Stream:
        """Queue a request (text or token ids, sampling options as for Model.generate); returns
        its Stream at once. ValueError for bad options, ContextFullError when the prompt and
        max_tokens cannot fit in n_ctx, QueueFullError when too many requests wait."""
        return self.submit_choices(prompt, 1, max_tokens=max_tokens, stop=stop, logprobs=logprobs, **options)[0]

    def submit_choices(self, prompt: str | Sequence[int], n: int, *, max_tokens: int = DEFAULT_MAX_TOKENS,
                       stop: str | Sequence[str] | None = None, logprobs: int | None = None,
                       **options: Any) -> list[Stream]:
        """n completions of one prompt (OpenAI's `n`), as n Streams: the prompt is read once and
        the n continue from its cache blocks, each copying a shared block before writing into it.
        Choice i samples with seed + i when a seed is given. A constraint (json_schema, regex,
        grammar, grammar_format, choices: as for Model.generate) holds every choice; tokens it
        forces are sampled here like any other (the check passes at once). Errors as for submit;
        ConstraintError for an unsupported constraint."""
        n = check_count("n", n, self.max_running)
        spec = spec_from_options(**{k: options.pop(k) for k in list(options) if k in CONSTRAINT_OPTIONS})
        params = SamplingParams.from_options(options)
        params.check(self.model.config.vocab_size)
        tokens = self.model.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not tokens:
            raise ValueError("the prompt is empty")
        vocab = self.model.config.vocab_size
        if any(t < 0 or t >= vocab for t in tokens):
            raise ValueError(f"prompt token ids must be in 0..{vocab - 1}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
            raise ValueError(f"max_tokens must be a non-negative integer, got {max_tokens!r}")
        if len(tokens) >= self.n_ctx:
            raise ContextFullError(f"the prompt has {len(tokens)} tokens; the context holds {self.n_ctx}")
        if self.cache.blocks_for(len(tokens) + 1) > self.cache.n_blocks:
            raise ContextFullError(f"the prompt has {len(tokens)} tokens; the KV cache budget holds "
                                   f"{self.cache.n_blocks * BLOCK_ROWS}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError("stop strings must be non-empty strings")
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                     or not 0 <= logprobs <= MAX_TOP_LOGPROBS):
            raise ValueError(f"logprobs must be an integer in 0..{MAX_TOP_LOGPROBS}, got {logprobs!r}")
        streams = [Stream(tokens, params if params.seed is None or i == 0 else
                          dataclasses.replace(params, seed=(params.seed + i) % (1 << 64)), max_tokens, stops, logprobs,
                          self._constraint(spec))
                   for i in range(n)]
        for stream in streams:  # made here, so that a bad seed is the caller's error
            stream._sampler = Sampler(stream.params, stream.constraint)
        if n > 1 and self.cache.window:  # no forks with sliding-window layers: n requests
            streams[0]._followers = []
            queued = streams
        else:
            streams[0]._followers = streams[1:]
            queued = streams[:1]
        with self._lock:
            if self._closed:
                raise ClosedError("the engine is closed")
            if len(self._queue) + len(queued) > self.max_queued:
                raise QueueFullError(f"{len(self._queue)} requests are already waiting")
            self._queue.extend(queued)
            self._lock.notify()
        return streams

    def call(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run fn() on the scheduler thread between two steps; returns a Future of its result. Other
        work on the model's C core (Model.embed in a server) goes through here, so that it waits
        for the batch in progress instead of running beside it on the same cores."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise ClosedError("the engine is closed")
            self._jobs.append((fn, future))
            self._lock.notify()
        return future

    @property
    def alive(self) -> bool:
        """Whether the scheduler runs (False once the engine is closed or has failed)."""
        return self._thread.is_alive() and not self._closed

    def _constraint(self, spec: ConstraintSpec | None) -> Constraint | None:
        if spec is None:
            return None
        return Constraint(spec, self.model.tokenizer, self.model.config.vocab_size, sorted(self._ends))

    def stats(self) -> EngineStats:
        """What runs and waits now, and the totals so far."""
        with self._lock:
            free = self.cache.available()  # two counters: no walk over a cache a step may be changing
            return EngineStats(len(self._running), len(self._queue), self.prompt_tokens, self.generated_tokens,
                               self.requests_finished, self.cache.n_blocks - free, free,
                               self.cache.kv_bytes_per_block)

    def close(self) -> None:
        """Stop the scheduler: running and queued requests end with finish_reason "cancelled"."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()
            self.cache.free()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------------------
    # The scheduler thread

    def _admit(self) -> None:
        """Move queued requests to running while there are slots and cache blocks for them: every
        running request can always grow to its prompt + max_tokens, so none runs out of room."""
        while self._queue and len(self._running) + 1 + len(self._queue[0]._followers) <= self.max_running:
            stream = self._queue[0]
            total = min(self.n_ctx, len(stream.prompt) + stream.max_tokens + 1)
            need = min(self.cache.blocks_for(total), self.cache.n_blocks)
            group = 1 + len(stream._followers)  # a fork may copy the prompt's last block: one more each
            seq, cached = self.cache.open(stream.prompt)
            promised = sum(r.need - len(r.seq.blocks) for r in self._running)
            if self.cache.available() - promised < need * group + group - 1 - len(seq.blocks):
                self.cache.close(seq)
                return
            self._queue.popleft()
            stream.usage.cached_tokens = cached
            self._running.append(_Running(stream, seq, need + (group > 1), stream._sampler,
                                          self.model.tokenizer.decoder(), list(stream.prompt),
                                          followers=stream._followers, fed=cached))

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._closed and not self._running and not self._queue and not self._jobs:
                        self._lock.wait()
                    if self._closed:
                        break
                    jobs, self._jobs = self._jobs, deque()
                self._run_jobs(jobs)
                with self._lock:
                    self._admit()
                    if not self._running:  # the head of the queue waits for blocks of requests ending
                        self._lock.wait(0.01)
                        continue
                self._step()
        except BaseException as exc:  # a failure of the engine itself ends every request with it
            with self._lock:
                self._closed = True
            self._end_all(None, exc)
            raise
        finally:
            self._end_all("cancelled")

    @staticmethod
    def _run_jobs(jobs: deque[tuple[Callable[[], Any], concurrent.futures.Future]]) -> None:
        for fn, future in jobs:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # the caller's error, raised where it waits
                    future.set_exception(exc)

    def _end_all(self, reason: str | None, error: BaseException | None = None) -> None:
        """End every running and queued request (and the choices waiting on them) and every job."""
        for r in list(self._running):
            self._finish(r, reason, error)
        with self._lock:
            waiting, self._queue = list(self._queue), deque()
            jobs, self._jobs = self._jobs, deque()
        for _, future in jobs:
            if future.set_running_or_notify_cancel():
                future.set_exception(error or ClosedError("the engine is closed"))
        for s in waiting:
            for t in [s] + s._followers:
                t._push(None, reason, error)

    def _step(self) -> None:
        """One token boundary: one batch with a token of every decoding request and prompt chunks
        (prefill_chunk tokens in all) of those still reading, then a token sampled for each request
        whose logits came out."""
        work: list[tuple[CachedSequence, list[int], bool]] = []
        owners: list[_Running] = []
        budget = self.prefill_chunk
        for r in list(self._running):
            s = r.stream
            if s._cancelled:
                self._finish(r, "cancelled")
                continue
            if r.fed < len(s.prompt):
                if budget == 0:
                    continue
                chunk = s.prompt[r.fed:r.fed + budget]
                budget -= len(chunk)
                r.fed += len(chunk)
                self.prompt_tokens += len(chunk)
                work.append((r.seq, chunk, r.fed == len(s.prompt)))
            else:
                work.append((r.seq, r.feed, True))
            owners.append(r)
        if not work:
            return
        try:
            results = self.cache.forward(work)
        except PyllmError as exc:  # this batch's requests end with the error; the engine goes on
            for r in owners:
                self._finish(r, None, exc)
            return
        for r, logits in zip(owners, results):
            if logits is not None:
                for follower in r.followers:  # the other choices start from this prompt's cache
                    follower.usage.cached_tokens = len(follower.prompt)
                    forked = _Running(follower, self.cache.fork(r.seq), r.need, follower._sampler,
                                      self.model.tokenizer.decoder(), list(follower.prompt), fed=len(follower.prompt))
                    with self._lock:
                        self._running.append(forked)
                    self._emit(forked, logits)
                r.followers = []
                self._emit(r, logits)

    def _emit(self, r: _Running, logits: np.ndarray) -> None:
        """Sample the next token of a request whose logits are ready, and stream its text."""
        s = r.stream
        if s.usage.completion_tokens >= s.max_tokens:
            return self._finish(r, "length")
        token = r.sampler(logits, r.history)
        if token in self._ends:
            return self._finish(r, "eos")
        if s.constraint is not None:
            s.constraint.accept(token)
        s.tokens.append(token)
        s.usage.completion_tokens += 1
        self.generated_tokens += 1
        if s.first_token_at is None:
            s.first_token_at = time.perf_counter()
        r.history.append(token)
        logprob = top = None
        if s.logprobs is not None:  # the model's distribution, before bias, penalties and filters
            lp = token_logprobs(logits, token, s.logprobs)
            logprob = lp.logprob
            top = [(int(t), float(v)) for t, v in zip(lp.top_ids, lp.top_logprobs)]
        r.pending += r.decoder.feed(token)
        finish = None
        if s.stop:
            cut = min((i for i in (r.pending.find(x) for x in s.stop) if i >= 0), default=-1)
            if cut >= 0:
                ready, r.pending, finish = r.pending[:cut], "", "stop"
            else:
                keep = held_back(r.pending, s.stop)
                ready = r.pending[:len(r.pending) - keep]
                r.pending = r.pending[len(r.pending) - keep:]
        else:
            ready, r.pending = r.pending, ""
        s._push(Step(token, ready, logprob, top))
        if finish:
            return self._finish(r, finish)
        if s.constraint is not None and s.constraint.done:  # complete: only an end token could follow
            return self._finish(r, "eos")
        if s.usage.completion_tokens >= s.max_tokens:  # the last token is not run: nothing would read its logits
            return self._finish(r, "length")
        if len(r.seq.tokens) + 1 > min(self.n_ctx, r.need * BLOCK_ROWS):  # its context, or all its blocks
            return self._finish(r, "context")
        r.feed = [token]

    def _finish(self, r: _Running, reason: str | None, error: BaseException | None = None) -> None:
        """End a request: flush held-back text (not after a stop string), return its cache blocks."""
        tail = ""
        if reason in ("eos", "length", "context"):
            tail = r.pending + r.decoder.flush()
        with self._lock:
            if r in self._running:
                self._running.remove(r)
            self.cache.close(r.seq)
            self.requests_finished += 1
            self._lock.notify()
        if tail:
            r.stream._push(Step(None, tail))
        r.stream._push(None, reason, error)
        for follower in r.followers:  # choices that never started: their prompt was not read
            follower._push(None, reason if reason == "cancelled" or error else "cancelled", error)
        r.followers = []
