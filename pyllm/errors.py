"""Every exception pyllm raises on purpose, in one place, under one base class, so callers can
catch everything pyllm raises."""


class PyllmError(Exception):
    """Base class of every error pyllm raises on purpose."""


class FormatError(PyllmError, ValueError):
    """A model file (weights.bin, GGUF, ...) is malformed; the message names the file and the problem."""


class EngineError(PyllmError, RuntimeError):
    """The C core reported an error (out of memory, bad argument); the message says which."""


class ContextFullError(PyllmError, ValueError):
    """The tokens do not fit in what is left of the model's context (KV cache)."""


class TemplateError(PyllmError, ValueError):
    """A chat template failed to render, or tried something the sandbox forbids."""
