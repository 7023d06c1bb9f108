"""Rendering an untrusted Jinja template within bounds: jinja2's ImmutableSandboxedEnvironment
(as Hugging Face transformers uses) blocks Python internals; pyllm adds a time limit and checks the
size of every value a template makes, before allocating it where it can tell, so that a template
cannot exhaust time or memory. Every failure, at compile or render time, is a TemplateError."""
from __future__ import annotations

import json
import re
import sys
import time
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache, wraps
from string import Formatter
from typing import Any, Callable, Iterable, Mapping, Sequence

from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import Namespace

from ..errors import TemplateError

# Limits. Real chat templates render in milliseconds into a prompt a little longer than the
# messages; these bounds are far above that and far below what exhausts a machine.
RENDER_SECONDS = 2.0            # compile + render time of one prompt
OUTPUT_BASE_CHARS = 1_000_000   # a prompt may be this long whatever the messages, ...
OUTPUT_CHARS_PER_INPUT_CHAR = 8  # ... plus this many characters per character of the caller's strings
# Every string, list or number width the template makes is bounded by the prompt limit too, and
# all the values it makes may add up to this many prompt limits (a string doubled in a loop stops
# at the limit; a loop of limit-sized copies stops at the total).
WORK_FACTOR = 64


MAX_INT_BITS = 65_536  # integers a template computes (about 20,000 digits; Python prints at most 4,300)

# one printf conversion: '%(key)-10.3f' -> key, width, precision, type ('*' takes the width from the values)
_PRINTF_SPEC = re.compile(r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d*)(?:\.(?P<precision>\*|\d*))?"
                          r"[hlL]?(?P<type>.?)", re.DOTALL)
_DIGITS = re.compile(r"\d+")
_FIELD_BASE = re.compile(r"[^.\[]*")  # the argument a str.format field names: '0' of '0.attr' or '0[1]'
# the characters str.splitlines (and so the indent filter) breaks lines at
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


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


def _nesting(value: Any, limit: int) -> int:
    """How deeply lists and dicts nest in value; past limit items walked, more than limit."""
    deepest, walked, stack = 0, 0, [(value, 0)]
    while stack:
        v, depth = stack.pop()
        walked += 1
        if walked > limit:
            return limit + 1
        if isinstance(v, (list, tuple, dict)):
            deepest = max(deepest, depth + 1)
            stack.extend((item, depth + 1) for item in (v.values() if isinstance(v, dict) else v))
    return deepest


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

    def _check_number(self, value: Any, what: str) -> None:
        """A width, count or repetition above the limit is refused before anything that large is
        allocated. Only arguments that are one are checked (see _FILTER_CHECKS): other numbers,
        ids and timestamps, are data."""
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > self.max_chars:
            self._refuse(f"{what} was given a number above it")

    def _check_width(self, digits: str, what: str) -> int:
        """A width or precision written in a format string, as a number."""
        if len(digits) > 9 or int(digits) > self.max_chars:
            self._refuse(f"{what} has a width above it")
        return int(digits)

    def _check_printf(self, fmt: str, right: Any, what: str) -> None:
        """fmt % right: each conversion makes at most its width, its precision and the value it
        prints; a '*' width or precision is taken from the values, as Python does."""
        values = right if isinstance(right, tuple) else (right,)
        mapping = right if isinstance(right, Mapping) else None
        size, next_value = len(fmt), 0
        for spec in _PRINTF_SPEC.finditer(fmt):
            for part in ("width", "precision"):
                digits = spec.group(part)
                if digits == "*":
                    width = values[next_value] if next_value < len(values) else 0
                    next_value += 1
                    self._check_number(width, what)
                    size += abs(width) if isinstance(width, int) else 0
                elif digits:
                    size += self._check_width(digits, what)
            if spec.group("type") == "%":  # '%%' takes no value
                continue
            key = spec.group("key")
            if key is not None and mapping is not None:
                value = mapping[key] if key in mapping else mapping  # (a key Python reads otherwise: all of them)
            else:
                value = values[next_value] if next_value < len(values) else None
                next_value += 1
            size += _measure(value, self.max_chars - size)
            self._check_size(size, what)
        self._check_size(size, what)

    def _check_str_format(self, fmt: str, args: Sequence[Any], kwargs: Mapping[str, Any], what: str) -> None:
        """fmt.format(*args, **kwargs): each field makes at most the widths in its spec and the
        value it names (a field may name one value many times). A width taken from a nested field
        ('{:{}}') is refused: no chat template uses one, and its size is known only once the spec
        is formatted."""
        size, next_value = 0, 0
        for literal, field, spec, _conversion in Formatter().parse(fmt):
            size += len(literal)
            if field is None:
                continue
            if "{" in (spec or ""):
                raise _LimitExceeded(f"the chat template's size limit of {self.max_chars:,} characters cannot be "
                                     f"checked in advance for {what}: a format spec holds a nested field ('{{:{{}}}}')")
            name = _FIELD_BASE.match(field).group()  # type: ignore[union-attr]  (it matches every string)
            if name == "":
                value = args[next_value] if next_value < len(args) else None
                next_value += 1
            elif len(name) < 10 and name.isdecimal():
                value = args[int(name)] if int(name) < len(args) else None
            else:
                value = kwargs.get(name)
            size += sum(self._check_width(d, what) for d in _DIGITS.findall(spec or ""))
            size += _measure(value, self.max_chars - size)
            self._check_size(size, what)
        self._check_size(size, what)

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
            self._check_printf(left, right, "a '%' format")
        return self._charge(super().call_binop(context, operator, left, right), f"the result of {what}")

    def concat(self, values: Iterable[Any]) -> str:
        """a ~ b ~ c (jinja2's str_join, bounded). jinja2 passes a tuple, or a generator for a
        block ({{ self.name() }}), which is read once and used twice here."""
        values = tuple(values)
        self._check_size(sum(_measure(v, self.max_chars) for v in values), "a '~' concatenation")
        return self._charge("".join(map(str, values)), "a '~' concatenation")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """A call from the template (a global, a macro, a method like 'x'.center(10))."""
        name = getattr(__obj, "__name__", "")
        what = f"{name or 'a call'}()"
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)  # str.format is wrapped
        if isinstance(owner, str) and (check := _STR_METHOD_CHECKS.get(name)):
            subject_and_args = [owner, *args]
            check(__self, subject_and_args, kwargs, f"str.{name}()")
            args = tuple(subject_and_args[1:])
        elif __obj is safe_range and all(isinstance(a, int) for a in args):
            r = range(*args)  # its length, counted without len() (which overflows past 2**63)
            __self._check_number(max(0, -((r.start - r.stop) // r.step)), what)
        return __self._charge(super().call(__context, __obj, *args, **kwargs), f"the result of {what}")

    def _bounded_filter(self, name: str, func: Callable) -> Callable:
        """A jinja2 filter checked in advance by its entry in _FILTER_CHECKS, if it has one, and
        whose result is charged."""
        skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context/environment
        what = f"the {name} filter"
        check = _FILTER_CHECKS.get(name)

        @wraps(func)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            own = list(args[skip:])  # the piped value, then the filter's arguments
            if own and check is not None:
                check(self, own, kwargs, what)
            return self._charge(func(*args[:skip], *own, **kwargs), what)

        return bounded

    def _tojson(self, value: Any, ensure_ascii: bool = False, indent: int | str | None = None,
                separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        """Hugging Face's tojson (json.dumps, not HTML-escaped, non-ASCII kept), encoded piece by
        piece so that a large indent stops at the size limit. The encoder makes one indent per
        nesting level in a piece, so a string indent is bounded by the nesting before encoding."""
        if isinstance(indent, str):
            self._check_size(len(indent) * _nesting(value, self.max_chars), "the tojson filter")
        encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                                   sort_keys=sort_keys)
        pieces, size = [], 0
        for piece in encoder.iterencode(value):
            size += len(piece)
            self._check_size(size, "the tojson filter")
            pieces.append(piece)
        return "".join(pieces)


# -- the filters and str methods that can make a value much larger than their arguments --------
#
# Each check gets the subject (the piped value of a filter, the string of a str method) followed by
# the arguments, as a list it may change (an iterable is read into a list once, so that measuring
# it does not use it up), and the keyword arguments. It refuses, before the call, an argument that
# is a width, count or repetition above the size limit, and a result it can tell from the
# arguments will be above it. What is not listed makes at most a small multiple of what it is
# given, and its result is charged after the call like every other.

_Check = Callable[[_BoundedEnvironment, list, dict, str], None]


def _argument(args: list, kwargs: Mapping[str, Any], index: int, name: str, default: Any = None) -> Any:
    """An argument given by position (the subject is 0) or by name."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def _widths(*params: tuple[int, str]) -> _Check:
    """A check of the arguments, (position, name), that are widths or counts."""
    def check(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
        for index, name in params:
            env._check_number(_argument(args, kwargs, index, name), what)
    return check


def _indent(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
    """indent(s, width): each line, the first too, gains width spaces or the width string."""
    s, width = str(args[0]), _argument(args, kwargs, 1, "width", 4)
    if isinstance(width, int) and not isinstance(width, bool):
        env._check_number(width, what)
    per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    lines = 1 + sum(s.count(c) for c in _LINE_BREAKS)
    env._check_size(len(s) + lines * max(per_line, 0), what)


def _wordwrap(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
    """wordwrap(s, width, break_long_words, wrapstring): at most one wrapstring per character."""
    env._check_number(_argument(args, kwargs, 1, "width"), what)
    wrap = _argument(args, kwargs, 3, "wrapstring")
    env._check_size(len(str(args[0])) * (1 + len(str(wrap or "\n"))), what)


def _join_filter(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
    """join(items, d): the items and a separator between each two."""
    args[0] = items = list(args[0])
    separator = _argument(args, kwargs, 1, "d", "")
    env._check_size(_measure(items, env.max_chars) + len(str(separator)) * len(items), what)


def _str_join(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
    """separator.join(items)."""
    if len(args) > 1:
        args[1] = items = list(args[1])
        env._check_size(_measure(items, env.max_chars) + len(args[0]) * len(items), what)


def _replace(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
    """replace(s, old, new): new once for each old (the filter and the str method alike)."""
    if len(args) >= 3:
        s = str(args[0])
        env._check_size(len(s) + s.count(str(args[1])) * len(str(args[2])), what)


def _expandtabs(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
    """s.expandtabs(tabsize): at most tabsize spaces for each tab."""
    tab = _argument(args, kwargs, 1, "tabsize", 8)
    s = args[0]
    env._check_size(len(s) + s.count("\t") * (tab if isinstance(tab, int) else 8), what)


def _translate(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
    """s.translate(table): each character becomes at most the longest string in the table."""
    table = _argument(args, kwargs, 1, "table")
    mapped = table.values() if isinstance(table, Mapping) else table if isinstance(table, (list, tuple)) else ()
    longest = max((len(v) for v in mapped if isinstance(v, str)), default=1)
    env._check_size(len(args[0]) * max(longest, 1), what)


def _printf_filter(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
    """format(fmt, *values, **names): fmt % (names or values)."""
    env._check_printf(str(args[0]), kwargs or tuple(args[1:]), what)


def _str_format(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
    env._check_str_format(args[0], args[1:], kwargs, what)


def _str_format_map(env: _BoundedEnvironment, args: list, kwargs: dict, what: str) -> None:
    mapping = args[1] if len(args) > 1 and isinstance(args[1], Mapping) else {}
    env._check_str_format(args[0], (), mapping, what)


_FILTER_CHECKS: dict[str, _Check] = {
    "center": _widths((1, "width")),
    "truncate": _widths((1, "length")),
    "batch": _widths((1, "linecount")),
    "slice": _widths((1, "slices")),
    "tojson": _widths((2, "indent")),  # tojson(value, ensure_ascii, indent): ' ' * indent is made first
    "indent": _indent,
    "wordwrap": _wordwrap,
    "join": _join_filter,
    "replace": _replace,
    "format": _printf_filter,
}

_STR_METHOD_CHECKS: dict[str, _Check] = {
    "center": _widths((1, "width")),
    "ljust": _widths((1, "width")),
    "rjust": _widths((1, "width")),
    "zfill": _widths((1, "width")),
    "expandtabs": _expandtabs,
    "join": _str_join,
    "replace": _replace,
    "translate": _translate,
    "format": _str_format,
    "format_map": _str_format_map,
}


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


def render_bounded(source: str, variables: dict[str, Any], input_chars: int) -> str:
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
