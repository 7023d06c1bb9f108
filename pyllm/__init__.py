"""pyllm: a small, fast LLM inference engine for CPUs — a C core driven by a thin Python package."""
from .errors import EngineError, FormatError, PyllmError
from . import fetch
from .model import ContextFullError, Model
from .tokenizer import Tokenizer

__all__ = ["Model", "Tokenizer", "fetch", "PyllmError", "FormatError", "EngineError", "ContextFullError"]
__version__ = "0.1.0"
