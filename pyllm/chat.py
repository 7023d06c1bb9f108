"""Chat templates: the model's own Jinja template, rendered in a sandbox, or a built-in one.

A template comes from a downloaded file, so it is untrusted code. It is rendered in jinja2's
ImmutableSandboxedEnvironment (as Hugging Face transformers does), where reaching Python
internals (`__class__`, `__globals__`, ...) raises instead of executing, and pyllm bounds what the
sandbox does not: rendering time, the size of every value the template makes and of the prompt,
and the total it may allocate. Every failure, at compile or render time, is a TemplateError.

Message contents are the caller's text, not the template's: `render_marked` reports where the
control-token text inside them landed in the prompt, so that the tokenizer reads it as plain text
and a message cannot open or close a turn of its own.
"""
from __future__ import annotations

import json
import re
import secrets
import sys
import time
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache, wraps
from typing import Any, Callable, Iterable, Mapping, Sequence

from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from .errors import TemplateError

# Limits. Real chat templates render in milliseconds into a prompt a little longer than the
# messages; these bounds are far above that and far below what exhausts a machine.
RENDER_SECONDS = 2.0            # compile + render time of one prompt
OUTPUT_BASE_CHARS = 1_000_000   # a prompt may be this long whatever the messages, ...
OUTPUT_CHARS_PER_INPUT_CHAR = 8  # ... plus this many characters per character of the caller's strings
# Every string, list or number width the template makes is bounded by the prompt limit too, and
# all the values it makes may add up to this many prompt limits (a string doubled in a loop stops
# at the limit; a loop of limit-sized copies stops at the total).
WORK_FACTOR = 64

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system = '<<SYS>>\n' + messages[0]['content'] + '\n<</SYS>>\n\n' %}"
        "{% set messages = messages[1:] %}"
        "{% else %}{% set system = '' %}{% endif %}"
        "{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate user/assistant/user/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
        "{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
    "llama3": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}"
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system = messages[0]['content'] + '\n\n' %}{% set messages = messages[1:] %}"
        "{% else %}{% set system = '' %}{% endif %}"
        "{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate user/assistant/user/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
        "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
}


# control tokens that end a turn in the common chat formats, besides the model's EOS
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


MAX_INT_BITS = 65_536  # integers a template computes (about 20,000 digits; Python prints at most 4,300)

_PRINTF_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d*)(?:\.(\d*))?")  # '%10.3f' -> 10, 3
_FORMAT_SPEC = re.compile(r"\{[^{}]*:([^{}]*)\}")                         # '{:>10}' -> '>10'
_DIGITS = re.compile(r"\d+")


class _Limits:
    """The size limits of one render (the environment and its compiled templates are shared)."""

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        self.work_left = WORK_FACTOR * max_chars


_render_limits: ContextVar[_Limits] = ContextVar("pyllm_chat_template_limits")


class _LimitExceeded(BaseException):
    """A render went past one of the limits above. A BaseException so that nothing inside jinja2
    (which catches Exception, and ValueError in filters like int) can swallow it; render() turns it
    into a TemplateError."""


def _measure(value: Any, limit: int) -> int:
    """About how many characters value prints as (str of a list includes its items), counted only
    until limit is passed, so a list holding one big string 10**6 times costs no more than limit."""
    total, stack = 0, [value]
    while stack and total <= limit:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, bool) or v is None:
            total += 5
        elif isinstance(v, int):
            total += v.bit_length() // 3 + 1
        elif isinstance(v, (list, tuple, set, frozenset, dict)):
            total += 2 + 2 * len(v)
            if total <= limit:
                stack.extend(v.items() if isinstance(v, dict) else v)
        elif isinstance(v, Namespace):
            stack.append(v._Namespace__attrs)  # the one attribute jinja2's Namespace lets through
        else:  # floats, Undefined, macros, loop objects: a short repr
            total += 24
    return total


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, except that `a ~ b` calls environment.concat (like + and * call
    call_binop), so that string concatenation is bounded too."""

    def visit_Concat(self, node: Any, frame: Any) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus size limits: each operation that can make a large value (+ * ** % ~,
    calls, filters) checks the size of what it will make before making it where the size can be
    known (widths, repetitions, joins, replacements), and the size of what it made otherwise."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, finalize=self._check_printed)
        self.filters["tojson"] = self._tojson
        self.filters = {name: self._bounded_filter(name, f) for name, f in self.filters.items()}
        del self.globals["lipsum"]  # makes n paragraphs of filler in a Python loop; no chat template uses it

        def raise_exception(message: str) -> None:
            raise JinjaError(message)

        def strftime_now(fmt: str) -> str:
            return datetime.now().strftime(fmt)

        self.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)

    @property
    def max_chars(self) -> int:
        """The size limit of the render under way in this thread."""
        return _render_limits.get().max_chars

    # -- the checks --------------------------------------------------------------------------

    def _refuse(self, what: str) -> None:
        raise _LimitExceeded(f"the chat template exceeded the size limit of {self.max_chars:,} characters: {what}")

    def _check_size(self, size: int, what: str) -> None:
        if size > self.max_chars:
            self._refuse(f"{what} would make more than that")

    def _check_numbers(self, values: Iterable[Any], what: str) -> None:
        """Widths, counts and repetitions come from numbers; a number above the limit is refused
        before anything that large is allocated."""
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > self.max_chars:
                self._refuse(f"{what} was given a number above it")

    def _check_format(self, fmt: str, args: Iterable[Any], what: str) -> None:
        """printf ('%10s') and str.format ('{:>10}') widths written in the format string."""
        widths = [w for m in _PRINTF_WIDTHS.finditer(fmt) for w in m.groups() if w]
        widths += [d for m in _FORMAT_SPEC.finditer(fmt) for d in _DIGITS.findall(m.group(1))]
        if any(len(w) > 9 or int(w) > self.max_chars for w in widths):
            self._refuse(f"{what} has a width above it")
        args = list(args)
        self._check_numbers(args, what)
        self._check_size(len(fmt) + _measure(args, self.max_chars), what)

    def _charge(self, value: Any, what: str) -> Any:
        """Count a value the template made against the limits, and return it."""
        limits = _render_limits.get()
        size = len(value) if type(value) is str else _measure(value, limits.max_chars)
        if size > limits.max_chars:
            self._refuse(f"{what} made more than that")
        limits.work_left -= size
        if limits.work_left < 0:
            raise _LimitExceeded(f"the chat template exceeded the work limit: the values it made add up "
                                 f"to more than {WORK_FACTOR * limits.max_chars:,} characters")
        return value

    def _check_printed(self, value: Any) -> Any:
        """Every {{ value }} is printed with str(); a list may print far larger than it is."""
        if not isinstance(value, str):
            self._check_size(_measure(value, self.max_chars), "a printed value")
        return value

    # -- the hooks jinja2 calls --------------------------------------------------------------

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """+ * ** % of the template, with their results bounded in advance where they can grow."""
        what = f"'{operator}'"
        if operator == "+" and type(left) is str and type(right) is str:  # the common case, kept quick
            return self._charge(left + right, f"the result of {what}")
        if operator == "*":
            seq, n = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(n, int) and isinstance(seq, (str, list, tuple)):
                self._check_size(_measure(seq, self.max_chars) * max(n, 0), f"a repetition {what}")
            elif isinstance(left, int) and isinstance(right, int) and \
                    left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _LimitExceeded(f"the chat template exceeded the size limit: a product of more "
                                     f"than {MAX_INT_BITS} bits")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
                and right * left.bit_length() > MAX_INT_BITS:
            raise _LimitExceeded(f"the chat template exceeded the size limit: a power of more than "
                                 f"{MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            self._check_format(left, right if isinstance(right, tuple) else (right,), "a '%' format")
        return self._charge(super().call_binop(context, operator, left, right), f"the result of {what}")

    def concat(self, values: tuple) -> str:
        """a ~ b ~ c (jinja2's str_join, bounded)."""
        self._check_size(sum(_measure(v, self.max_chars) for v in values), "a '~' concatenation")
        return self._charge("".join(map(str, values)), "a '~' concatenation")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """A call from the template (a global, a macro, a method like 'x'.center(10))."""
        what = f"{getattr(__obj, '__name__', 'a call')}()"
        __self._check_numbers((*args, *kwargs.values()), what)
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)  # str.format is wrapped
        if isinstance(owner, str):
            args = __self._check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return __self._charge(super().call(__context, __obj, *args, **kwargs), f"the result of {what}")

    def _check_str_method(self, s: str, name: str, args: tuple, kwargs: dict) -> tuple:
        """The str methods whose result can be far larger than the string and their arguments."""
        what = f"str.{name}()"
        if name == "join" and args:
            items = list(args[0])
            self._check_size(_measure(items, self.max_chars) + len(s) * len(items), what)
            return (items, *args[1:])
        if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
            self._check_size(len(s) + s.count(args[0]) * len(args[1]), what)
        elif name == "expandtabs":
            tab = (args or tuple(kwargs.values()) or (8,))[0]
            self._check_size(len(s) + s.count("\t") * (tab if isinstance(tab, int) else 8), what)
        elif name in ("format", "format_map"):
            self._check_format(s, (*args, *kwargs.values()), what)
        return args

    def _bounded_filter(self, name: str, func: Callable) -> Callable:
        """A jinja2 filter whose numbers are bounded, whose known large outputs are checked in
        advance, and whose result is charged."""
        skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context/environment
        what = f"the {name} filter"

        @wraps(func)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            own = list(args[skip:])
            self._check_numbers((*own, *kwargs.values()), what)
            if own and name == "join":
                own[0] = list(own[0])
                sep = own[1] if len(own) > 1 else kwargs.get("d", "")
                self._check_size(_measure(own[0], self.max_chars) + len(str(sep)) * len(own[0]), what)
            elif own and name == "replace" and len(own) >= 3:
                s = str(own[0])
                self._check_size(len(s) + s.count(str(own[1])) * len(str(own[2])), what)
            elif own and name == "indent":
                width = own[1] if len(own) > 1 else kwargs.get("width", 4)
                if isinstance(width, str):
                    self._check_size(len(str(own[0])) * (1 + len(width)), what)
            elif own and name == "wordwrap":
                wrap = own[4] if len(own) > 4 else kwargs.get("wrapstring")
                self._check_size(len(str(own[0])) * (1 + len(str(wrap or "\n"))), what)
            elif own and name == "format":
                self._check_format(str(own[0]), (*own[1:], *kwargs.values()), what)
            return self._charge(func(*args[:skip], *own, **kwargs), what)

        return bounded

    def _tojson(self, value: Any, ensure_ascii: bool = False, indent: int | str | None = None,
                separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        """Hugging Face's tojson (json.dumps, not HTML-escaped, non-ASCII kept), encoded piece by
        piece so that a large indent stops at the size limit."""
        encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                                   sort_keys=sort_keys)
        pieces, size = [], 0
        for piece in encoder.iterencode(value):
            size += len(piece)
            self._check_size(size, "the tojson filter")
            pieces.append(piece)
        return "".join(pieces)


class _Deadline:
    """The render time limit. A loop in a template whose body calls nothing never gives jinja2 a
    chance to check a clock, so the check runs from a trace function (sys.settrace), set only
    while a template compiles and renders: it counts Python calls everywhere (jinja2's compiler
    and filters) and lines in compiled template code, which is all that can loop, and looks at the
    clock every 256 events. Other frames are not traced line by line, so the cost is small.
    Simpler than a custom code generator that plants checks in every loop, and it also covers
    loops inside filters and jinja2's own compiler."""

    TEMPLATE_FILE = "<template>"  # the file name jinja2 gives code compiled from a string

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.events = 0

    def trace(self, frame: Any, event: str, arg: Any) -> Callable | None:
        self.events += 1
        if not self.events & 255 and time.monotonic() > self.end:
            raise _LimitExceeded(f"the chat template exceeded the time limit of {self.seconds:g} s")
        return self.trace if frame.f_code.co_filename == self.TEMPLATE_FILE else None


@lru_cache(maxsize=1)
def _environment() -> _BoundedEnvironment:
    return _BoundedEnvironment()


@lru_cache(maxsize=16)
def _compiled(source: str) -> Any:
    """A template compiled once: compiling costs milliseconds, rendering a conversation far less."""
    return _environment().from_string(source)


def _render_bounded(source: str, variables: dict[str, Any], input_chars: int) -> str:
    """Compile and render a template within the limits; every failure is a TemplateError."""
    max_chars = OUTPUT_BASE_CHARS + OUTPUT_CHARS_PER_INPUT_CHAR * input_chars
    limits = _render_limits.set(_Limits(max_chars))
    deadline = _Deadline(RENDER_SECONDS)
    previous = sys.gettrace()
    sys.settrace(deadline.trace)
    try:
        pieces, size = [], 0
        for piece in _compiled(source).generate(**variables):
            size += len(piece)
            if size > max_chars:
                raise _LimitExceeded(f"the chat template exceeded the size limit of {max_chars:,} "
                                     f"characters: the prompt would be longer")
            pieces.append(piece)
        return "".join(pieces)
    except _LimitExceeded as exc:
        raise TemplateError(str(exc)) from None
    except SecurityError as exc:
        raise TemplateError(f"the chat template tried something unsafe and was refused: {exc}") from None
    except JinjaError as exc:
        raise TemplateError(f"the chat template failed: {exc}") from None
    except MemoryError:
        raise TemplateError("the chat template ran out of memory") from None
    except RecursionError:
        raise TemplateError("the chat template nests or recurses too deeply") from None
    except Exception as exc:  # any other error in a template's code is the template's failure
        raise TemplateError(f"the chat template failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    finally:
        sys.settrace(previous)
        _render_limits.reset(limits)


# -- control tokens in the caller's text -------------------------------------------------------
#
# Before rendering, every control-token text inside the caller's strings (message contents,
# roles, extra variables) is wrapped in two marker runs; after rendering, the runs are removed and
# the spans between them are reported, so that the tokenizer reads them as plain text. A marker
# is a run of one character that appears in none of the caller's strings nor the template, from
# a block no one types (CJK Extension B), printable and caseless so that upper/lower, trim,
# tojson and repr keep it; its length is random, so that content cannot be shaped to survive a
# template's slicing. If a template cuts or reorders a run, the prompt is refused: the control
# tokens of a message must never slip through.

_MARKER_CHARS = range(0x20000, 0x2A6E0)


def _strings(value: Any) -> Iterable[str]:
    """Every string inside the caller's values (dicts, lists), keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _marked(value: Any, controls: re.Pattern[str], open_run: str, close_run: str) -> Any:
    """A copy of value whose strings have each control-token text wrapped in the marker runs."""
    if isinstance(value, str):
        return controls.sub(lambda m: open_run + m.group() + close_run, value)
    if isinstance(value, Mapping):
        return {_marked(k, controls, open_run, close_run): _marked(v, controls, open_run, close_run)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_marked(v, controls, open_run, close_run) for v in value]
    return value


def _unmarked(text: str, open_run: str, close_run: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text without the marker runs, and the (start, end) spans they enclosed."""
    mangled = TemplateError("the chat template cut or reordered control-token text that came from a "
                            "message, so it cannot be kept from acting as control tokens")
    o, c, k = open_run[0], close_run[0], len(open_run)
    out, spans, pos, n = [], [], 0, 0
    while (i := text.find(o, pos)) >= 0:
        j = text.find(close_run, i + k)
        if j < 0 or text[i:i + k] != open_run or c in text[pos:i] or o in text[i + k:j] or c in text[i + k:j]:
            raise mangled
        out += [text[pos:i], text[i + k:j]]
        n += i - pos
        spans.append((n, n + j - i - k))
        n += j - i - k
        pos = j + k
    if c in text[pos:]:
        raise mangled
    out.append(text[pos:])
    return "".join(out), spans


def _template_source(template: str) -> str:
    if template not in BUILTIN_TEMPLATES and "{" not in template:  # a name, not Jinja source
        raise TemplateError(f"unknown chat template {template!r}; the built-in ones are "
                            f"{', '.join(BUILTIN_TEMPLATES)} (or give a Jinja template)")
    return BUILTIN_TEMPLATES.get(template, template)


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be a dict with string 'role' and 'content'")
    return [dict(m) for m in messages]


def render(template: str, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
           bos_token: str = "", eos_token: str = "", **extra: Any) -> str:
    """The prompt text for a conversation, from a Jinja chat template (or a built-in name)."""
    text, _ = render_marked(template, messages, None, add_generation_prompt=add_generation_prompt,
                            bos_token=bos_token, eos_token=eos_token, **extra)
    return text


def render_marked(template: str, messages: Sequence[Mapping[str, Any]], controls: re.Pattern[str] | None, *,
                  add_generation_prompt: bool = True, bos_token: str = "", eos_token: str = "",
                  **extra: Any) -> tuple[str, list[tuple[int, int]]]:
    """The prompt text, and the (start, end) spans of it that hold text matching `controls` (the
    tokenizer's control tokens) copied from the caller's messages and extra values: the spans to
    tokenize as plain text. The text is what render() gives."""
    source = _template_source(template)
    caller = {"messages": _check_messages(messages), **extra}
    try:
        open_run, close_run, caller, strings = _marked_caller(caller, controls, source)
    except RecursionError:
        raise ValueError("the messages (or extra template variables) nest too deeply") from None
    text = _render_bounded(source, {**caller, "add_generation_prompt": add_generation_prompt,
                                    "bos_token": bos_token, "eos_token": eos_token},
                           sum(map(len, strings)))
    return _unmarked(text, open_run, close_run) if open_run else (text, [])


def _marked_caller(caller: dict[str, Any], controls: re.Pattern[str] | None,
                   source: str) -> tuple[str, str, dict[str, Any], list[str]]:
    """The marker runs ('' if nothing needs them), the caller's values with their control-token
    text marked, and the strings in them."""
    strings = list(_strings(caller))
    if controls is not None and any(controls.search(s) for s in strings):
        used = set(source).union(*strings)
        free = (chr(c) for c in _MARKER_CHARS if chr(c) not in used)
        o, c = next(free, None), next(free, None)
        if c is None:
            raise TemplateError("the messages use every character pyllm could mark their control tokens with")
        k = 8 + secrets.randbelow(25)
        open_run, close_run = o * k, c * k
        caller = _marked(caller, controls, open_run, close_run)
        return open_run, close_run, caller, list(_strings(caller))
    return "", "", caller, strings
