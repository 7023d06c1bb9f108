"""pyllm: a small, fast LLM inference engine for CPUs — a C core driven by a thin Python package."""
from .errors import (ClosedError, ConstraintError, ContextFullError, EngineError, FormatError,
                     GenerationCancelledError, IncompleteOutputError, NumericalError, PyllmError, QueueFullError,
                     SessionBusyError, TemplateError)
from .engine import Engine, Stream
from .model import Model
from .session import Session
from .tokenizer import Tokenizer

__all__ = ["Model", "Session", "Engine", "Stream", "Tokenizer", "fetch", "QueueFullError", "PyllmError", "FormatError", "EngineError",
           "ContextFullError", "SessionBusyError", "ClosedError", "GenerationCancelledError", "TemplateError",
           "NumericalError", "ConstraintError", "IncompleteOutputError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # pyllm.fetch is imported on first use, so `python -m pyllm.fetch` does not find it loaded twice
    if name == "fetch":
        import importlib
        return importlib.import_module(".fetch", __name__)
    raise AttributeError(f"module 'pyllm' has no attribute {name!r}")
