"""Every exception pyllm raises on purpose, in one place, under one base class, so callers can
catch everything pyllm raises."""


class PyllmError(Exception):
    """Base class of every error pyllm raises on purpose."""


class FormatError(PyllmError, ValueError):
    """A model file (weights.bin, GGUF, ...) is malformed; the message names the file and the problem."""


class EngineError(PyllmError, RuntimeError):
    """The C core reported an error (out of memory, bad argument); the message says which."""


class ContextFullError(PyllmError, ValueError):
    """The tokens do not fit in what is left of a session's context (KV cache)."""


class SessionBusyError(PyllmError, RuntimeError):
    """A session (or a generation) was used from a second thread while another thread held it."""


class QueueFullError(PyllmError, RuntimeError):
    """An engine's queue of waiting requests is full; try again later (HTTP 429)."""


class ClosedError(PyllmError, RuntimeError):
    """The model or session was closed; it cannot run anything any more."""


class GenerationCancelledError(PyllmError, RuntimeError):
    """A suspended generation was resumed after a later call on its session took the session over."""


class NumericalError(PyllmError, ValueError):
    """The model computed logits that cannot be sampled (NaN): its weights hold NaN or infinity."""


class ConstraintError(PyllmError, ValueError):
    """A JSON Schema, regex, grammar or choice list is invalid or uses a construct structured output
    does not support; raised before generation, naming the construct."""


class IncompleteOutputError(PyllmError, ValueError):
    """A constrained generation ended before its structure was complete (max_tokens, a stop string,
    a full context), so its text is not claimed to be valid."""


class TemplateError(PyllmError, ValueError):
    """A chat template failed to render, or tried something the sandbox forbids."""


def describe(exc: BaseException) -> str:
    """An error as the command line reports it: an OSError as 'path: reason' (both paths of a
    rename), anything else as its message."""
    if isinstance(exc, OSError) and exc.strerror:
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        return f"{paths}: {exc.strerror}" if paths else exc.strerror
    return str(exc)
