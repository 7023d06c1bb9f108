"""The generation loop: prompt -> tokens -> (forward pass, sample, detokenize)* -> text pieces."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterator, Sequence

from .chat import END_OF_TURN
from .sampling import Sampler, SamplingParams

if TYPE_CHECKING:
    from .model import Model


def stop_tokens(model: "Model") -> set[int]:
    """Token ids that end generation: EOS and the end-of-turn control tokens the vocabulary has."""
    tok = model.tokenizer
    ids = {tok.eos_id} if tok.eos_id is not None else set()
    ids.update(tok.special[t] for t in END_OF_TURN if t in tok.special)
    return ids


def _held_back(text: str, stops: Sequence[str]) -> int:
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
    """

    def __init__(self, model: "Model", prompt_tokens: Sequence[int], params: SamplingParams,
                 max_tokens: int, stop: Sequence[str]):
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        if any(not isinstance(s, str) or not s for s in stop):
            raise ValueError("stop strings must be non-empty strings")
        params.check(model.config.vocab_size)
        self.model, self.params, self.max_tokens, self.stop = model, params, max_tokens, list(stop)
        self.prompt_tokens = list(prompt_tokens)
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.n_prompt = len(self.prompt_tokens)
        self.n_evaluated_prompt = 0
        self.prompt_seconds = self.generate_seconds = 0.0
        self._pieces = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def text(self) -> str:
        """Run to the end and return all the text."""
        return "".join(self._pieces)

    def _run(self) -> Iterator[str]:
        model = self.model
        t0 = time.perf_counter()
        before = model.n_evaluated
        logits = model.prefill(self.prompt_tokens)
        self.n_evaluated_prompt = model.n_evaluated - before
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
                    keep = _held_back(pending, self.stop)
                    ready, pending = pending[:len(pending) - keep], pending[len(pending) - keep:]
                else:
                    ready, pending = pending, ""
                if ready:
                    yield ready
                if model.n_past >= model.n_ctx:
                    self.finish_reason = "context"
                    break
                logits = model.eval([token])
            if self.finish_reason != "stop":
                pending += decoder.flush()
            if pending:
                yield pending
        finally:
            self.generate_seconds = time.perf_counter() - t1
