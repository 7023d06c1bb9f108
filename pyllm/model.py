"""pyllm.Model: a loaded model (ModelCore) that is also ready to talk to: its own generate, chat,
eval and logits run in a default session, made on first use; `session()` makes more, one per
conversation, any number at once.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .core import ModelCore, default_threads
from .errors import ContextFullError
from .generation import Generation
from .paged import PagedCache
from .session import Session

__all__ = ["Model", "ContextFullError", "default_threads"]


class Model(ModelCore):
    """A llama-family model ready to run: `Model(path, n_threads=None, n_ctx=None, kernels="auto",
    kv_type="f32", use_mmap=None)`.

    Loading options as for ModelCore. One model serves any number of sessions at once, one per
    thread; generate/eval/logits/... on the model itself run in its default session.
    """

    _default: Session | None = None

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

    # The default session's API, on the model

    @property
    def n_past(self) -> int:
        """Tokens in the default session's KV cache."""
        return self._default.n_past if self._default is not None else 0

    @property
    def n_evaluated(self) -> int:
        """Tokens the default session has run through the forward pass."""
        return self._default.n_evaluated if self._default is not None else 0

    def logits(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Logits (len(tokens), vocab) for every position, from an empty cache (which then holds tokens)."""
        return self._session().logits(tokens)

    def eval(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Append tokens to the default session's cache; returns the logits (vocab,) after the last one."""
        return self._session().eval(tokens)

    def reset(self) -> None:
        """Empty the default session's KV cache."""
        self._session().reset()

    def truncate(self, n_keep: int) -> None:
        """Keep the first n_keep tokens of the default session's cache and forget the rest."""
        self._session().truncate(n_keep)

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Make the default session's cache hold exactly `tokens`; the logits after the last one
        (only the suffix that differs from what the cache holds is evaluated)."""
        return self._session().prefill(tokens)

    def generate(self, prompt: str | Sequence[int], **options: Any) -> Generation:
        """Generate from a prompt in the default session; iterate the result for text pieces.
        Options (max_tokens, temperature, top_k, ..., stop, logit_bias, and one constraint:
        json_schema, regex, grammar, choices) as for Session.generate."""
        return self._session().generate(prompt, **options)

    def complete(self, prompt: str | Sequence[int], **options: Any) -> str:
        """The whole completion of a prompt as one string (options as for generate)."""
        return self._session().complete(prompt, **options)

    def chat(self, messages: Sequence[Mapping[str, str]], *, stream: bool = False,
             template: str | None = None, special_in_messages: bool = False,
             **options: Any) -> str | Generation:
        """The assistant's reply to a conversation ({"role", "content"} dicts); with stream=True,
        a Generation to iterate for pieces. Options as for generate. Control-token text inside
        messages stays plain text unless special_in_messages=True (see chat_prompt)."""
        return self._session().chat(messages, stream=stream, template=template,
                                    special_in_messages=special_in_messages, **options)

    def parse(self, messages: Sequence[Mapping[str, str]], schema: Any, **options: Any) -> Any:
        """The reply to a conversation held to a JSON Schema (a dict, its JSON text, or a Pydantic
        model class), as a value: an instance of the class, or the JSON value; IncompleteOutputError
        if max_tokens cut it before it was complete. Options as for chat (default session)."""
        return self._session().parse(messages, schema, **options)

    def embed(self, texts: str | Sequence[str], *, max_batch: int = 512) -> np.ndarray:
        """Unit-length embedding vectors (len(texts), dim), float32, for retrieval: the mean of each
        text's final normed hidden states over its tokens (BOS included when the model adds one),
        scaled to length 1. Texts go through the forward pass together, max_batch tokens at a time."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items or any(not isinstance(t, str) for t in items):
            raise ValueError("texts must be a string or a non-empty list of strings")
        ids = [self.tokenize(t) or [self.tokenizer.bos_id or 0] for t in items]
        longest = max(len(t) for t in ids)
        if longest > self.n_ctx:
            raise ContextFullError(f"a text of {longest} tokens does not fit in the context of {self.n_ctx}")
        max_batch = max(max_batch, longest)
        cache = PagedCache(self, -(-max_batch // 16) + len(ids), n_ctx=longest, max_seqs=min(len(ids), 64),
                           n_batch=max_batch, prefix_sharing=False)
        out = np.empty((len(ids), self.config.dim), dtype=np.float32)
        try:
            i = 0
            while i < len(ids):
                group: list[int] = []
                while i < len(ids) and len(group) < cache.max_seqs and \
                        sum(len(ids[j]) for j in group) + len(ids[i]) <= max_batch:
                    group.append(i)
                    i += 1
                seqs = [cache.open(ids[j])[0] for j in group]
                for j, seq, hidden in zip(group, seqs, cache.forward([(s, ids[j], True) for j, s in zip(group, seqs)],
                                                                      hidden=True)):
                    mean = hidden.astype(np.float64).mean(axis=0)
                    out[j] = mean / max(np.linalg.norm(mean), 1e-12)
                    cache.close(seq)
        finally:
            cache.free()
        return out
