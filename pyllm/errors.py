"""Exceptions raised by pyllm: one base class, so callers can catch everything pyllm raises."""


class PyllmError(Exception):
    """Base class of every error pyllm raises on purpose."""


class FormatError(PyllmError, ValueError):
    """A model file (weights.bin, GGUF, ...) is malformed; the message names the file and the problem."""


class EngineError(PyllmError, RuntimeError):
    """The C core reported an error (out of memory, bad argument); the message says which."""
