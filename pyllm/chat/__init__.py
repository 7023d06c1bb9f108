"""Chat templates: the model's own Jinja template, rendered in a sandbox, or a built-in one.

A template comes from a downloaded file, so it is untrusted code. It is rendered in jinja2's
ImmutableSandboxedEnvironment (as Hugging Face transformers does), where reaching Python
internals (`__class__`, `__globals__`, ...) raises instead of executing, and pyllm bounds what the
sandbox does not: rendering time, the size of every value the template makes and of the prompt,
and the total it may allocate (sandbox.py). Every failure, at compile or render time, is a
TemplateError.

Message contents are the caller's text, not the template's: `render_marked` reports where the
control-token text inside them landed in the prompt, so that the tokenizer reads it as plain text
and a message cannot open or close a turn of its own (render.py).
"""
from ..errors import TemplateError
from .builtin import BUILTIN_TEMPLATES, END_OF_TURN
from .render import render, render_marked

__all__ = ["BUILTIN_TEMPLATES", "END_OF_TURN", "TemplateError", "render", "render_marked"]
