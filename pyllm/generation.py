"""The generation loop: prompt -> tokens -> (forward pass, sample, detokenize)* -> text pieces."""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Iterator, Sequence

from .chat import END_OF_TURN
from .core import ModelCore
from .errors import SessionBusyError
from .sampling import Sampler, SamplingParams

if TYPE_CHECKING:  # the session makes generations and they drive it: a type-only back-reference
    from .session import Claim, Session

DEFAULT_MAX_TOKENS = 256  # tokens generated when the caller does not say


def stop_tokens(model: ModelCore) -> set[int]:
    """Token ids that end generation: EOS and the end-of-turn control tokens the vocabulary has."""
    tok = model.tokenizer
    ids = {tok.eos_id} if tok.eos_id is not None else set()
    ids.update(tok.special[t] for t in END_OF_TURN if t in tok.special)
    return ids


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of text that could still grow into a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class Generation:
    """Text pieces of one generation, produced as they are iterated.

    After the iteration ends, `finish_reason` says why: "eos" (an end token), "stop" (a stop
    string, which is not emitted), "length" (max_tokens) or "context" (the KV cache is full).
    `tokens` holds the generated ids; `n_prompt` / `n_evaluated_prompt` the prompt's length and how
    many of its tokens were actually evaluated (the rest reused from the cache); the timings are in
    seconds.

    From its first piece until it ends (or close()), the generation holds its session: another
    thread's call on the session raises SessionBusyError, and a later call of the same thread
    cancels it (its next piece raises GenerationCancelledError).
    """

    def __init__(self, session: "Session", prompt_tokens: Sequence[int], params: SamplingParams,
                 max_tokens: int, stop: Sequence[str]):
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        if any(not isinstance(s, str) or not s for s in stop):
            raise ValueError("stop strings must be non-empty strings")
        self.session = session
        self.model: ModelCore = session.model  # held strongly: the generation keeps its model alive
        params.check(self.model.config.vocab_size)
        self.params, self.max_tokens, self.stop = params, max_tokens, list(stop)
        self.prompt_tokens = list(prompt_tokens)
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.n_prompt = len(self.prompt_tokens)
        self.n_evaluated_prompt = 0
        self.prompt_seconds = self.generate_seconds = 0.0
        self._stop_requested = False
        self._stepping = threading.Lock()  # held while a thread advances the generation
        self._pieces = self._run()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self._stepping.acquire(blocking=False):
            raise SessionBusyError("this generation is being advanced by another thread")
        try:
            return next(self._pieces)
        finally:
            self._stepping.release()

    def text(self) -> str:
        """Run to the end and return all the text."""
        return "".join(self)

    def close(self) -> None:
        """Stop the generation and release its session (what was generated stays in `tokens`).

        From another thread while a piece is being made, the generation stops after that piece.
        """
        self._stop_requested = True
        if self._stepping.acquire(blocking=False):
            try:
                self._pieces.close()
            finally:
                self._stepping.release()

    def _run(self) -> Iterator[str]:
        session = self.session
        claim = session._take(generation=True)
        try:
            yield from self._steps(session, claim)
        finally:
            session._give_back(claim)  # only if no later call took the session over

    def _steps(self, session: "Session", claim: "Claim") -> Iterator[str]:
        model = self.model
        t0 = time.perf_counter()
        before = session.n_evaluated
        logits = session._prefill(self.prompt_tokens)
        self.n_evaluated_prompt = session.n_evaluated - before
        self.prompt_seconds = time.perf_counter() - t0

        sampler, ends = Sampler(self.params), stop_tokens(model)
        decoder = model.tokenizer.decoder()
        history = list(self.prompt_tokens)
        pending = ""  # text held back because it could be the start of a stop string
        t1 = time.perf_counter()
        try:
            while True:
                if len(self.tokens) >= self.max_tokens:
                    self.finish_reason = "length"
                    break
                token = sampler(logits, history)
                if token in ends:
                    self.finish_reason = "eos"
                    break
                self.tokens.append(token)
                history.append(token)
                pending += decoder.feed(token)
                if self.stop:
                    cut = min((i for i in (pending.find(s) for s in self.stop) if i >= 0), default=-1)
                    if cut >= 0:
                        pending = pending[:cut]
                        self.finish_reason = "stop"
                        break
                    keep = held_back(pending, self.stop)
                    ready, pending = pending[:len(pending) - keep], pending[len(pending) - keep:]
                else:
                    ready, pending = pending, ""
                if ready:
                    yield ready
                    session._resume(claim)  # raises if the session was taken over or closed meanwhile
                if session.n_past >= session.n_ctx:
                    self.finish_reason = "context"
                    break
                if self._stop_requested:  # close() from another thread while the piece was made
                    return
                logits = session._eval([token])
            if self.finish_reason != "stop":
                pending += decoder.flush()
            if pending:
                yield pending
        finally:
            self.generate_seconds = time.perf_counter() - t1
