"""The generation loop: prompt -> tokens -> (forward pass, sample, detokenize)* -> text pieces."""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Iterator, Sequence

from .chat import END_OF_TURN
from .core import ModelCore
from .errors import IncompleteOutputError, SessionBusyError
from .sampling import Sampler, SamplingParams
from .structured import Constraint, ConstraintSpec

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

    With a constraint (json_schema=, regex=, grammar=, choices=), every token fits the grammar,
    tokens the grammar forces are appended without sampling (and go through the forward pass
    together, as one batch), and the generation ends with "eos" when the structure is complete;
    `parsed` is then the output as a value, and `constraint.stats` says how the constraint worked.
    """

    def __init__(self, session: "Session", prompt_tokens: Sequence[int], params: SamplingParams,
                 max_tokens: int, stop: Sequence[str], spec: ConstraintSpec | None = None):
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        if any(not isinstance(s, str) or not s for s in stop):
            raise ValueError("stop strings must be non-empty strings")
        self.session = session
        self.model: ModelCore = session.model  # held strongly: the generation keeps its model alive
        params.check(self.model.config.vocab_size)
        self.params, self.max_tokens, self.stop = params, max_tokens, list(stop)
        self.prompt_tokens = list(prompt_tokens)
        # the constraint is compiled now, so that an unsupported schema is refused before generation
        self.constraint = None if spec is None else \
            Constraint(spec, self.model.tokenizer, self.model.config.vocab_size, sorted(stop_tokens(self.model)))
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

    @property
    def parsed(self) -> object:
        """The constrained output as a value: an instance of the Pydantic model class given as
        json_schema, the JSON value of any other schema, else the text. IncompleteOutputError unless
        the generation has ended with its structure complete (max_tokens, a stop string or a full
        context cut it: the text is then not claimed to be valid)."""
        if self.constraint is None:
            raise ValueError("this generation has no constraint (json_schema=, regex=, grammar=, choices=)")
        if self.finish_reason is None:
            raise IncompleteOutputError("the generation has not ended yet: iterate it, or call text(), first")
        if self.finish_reason != "eos" or not self.constraint.complete:
            raise IncompleteOutputError(f"the output ended (finish_reason {self.finish_reason!r}) before its "
                                        f"{self.constraint.spec.kind} was complete; it is not valid")
        return self.constraint.spec.parse(self.model.tokenizer.decode(self.tokens))

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

        constraint = self.constraint
        sampler, ends = Sampler(self.params, constraint), stop_tokens(model)
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
                batch = [token]
                if constraint is not None:
                    constraint.accept(token)
                    # forced tokens, as many as max_tokens and the context leave room for
                    room = min(self.max_tokens - len(self.tokens), session.n_ctx - session.n_past) - 1
                    batch += constraint.forced(room)
                for t in batch:
                    self.tokens.append(t)
                    history.append(t)
                    pending += decoder.feed(t)
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
                if constraint is not None and constraint.done:  # complete: only an end token could follow
                    self.finish_reason = "eos"
                    break
                if len(self.tokens) >= self.max_tokens:  # the last token is not run: nothing would read its logits
                    self.finish_reason = "length"
                    break
                if session.n_past >= session.n_ctx:
                    self.finish_reason = "context"
                    break
                if self._stop_requested:  # close() from another thread while the piece was made
                    return
                logits = session._eval(batch)  # a token and the tokens it forced: one batch
            if self.finish_reason != "stop":
                pending += decoder.flush()
            if pending:
                yield pending
        finally:
            self.generate_seconds = time.perf_counter() - t1
