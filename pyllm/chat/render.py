"""Rendering a conversation: the caller's strings go in marked, so that the control-token text
inside them can be told from the template's own when the prompt is tokenized."""
from __future__ import annotations

import re
import secrets
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import TemplateError
from .builtin import BUILTIN_TEMPLATES
from .sandbox import render_bounded

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


def _substituted(value: Any, controls: re.Pattern[str], replace: Callable[[re.Match[str]], str]) -> Any:
    """A copy of value whose strings have each control-token text replaced by replace(match)."""
    if isinstance(value, str):
        return controls.sub(replace, value)
    if isinstance(value, Mapping):
        return {_substituted(k, controls, replace): _substituted(v, controls, replace) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_substituted(v, controls, replace) for v in value]
    return value


def _unmarked(text: str, open_run: str, close_run: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text without the marker runs, and the (start, end) spans they enclosed."""
    mangled = TemplateError("the chat template cut or reordered control-token text that came from a "
                            "message, so it cannot be kept from acting as control tokens")
    open_char, close_char, run = open_run[0], close_run[0], len(open_run)
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0       # where the text after the last closing run starts
    out_len = 0   # the length of the text without markers, so far
    while (opening := text.find(open_char, pos)) >= 0:
        inside = opening + run
        closing = text.find(close_run, inside)
        if (closing < 0                                   # an opening run that is never closed
                or text[opening:inside] != open_run       # an opening run cut short
                or close_char in text[pos:opening]        # a closing marker before the opening run
                or open_char in text[inside:closing]      # another opening marker inside the span
                or close_char in text[inside:closing]):   # a closing run cut short inside the span
            raise mangled
        pieces += [text[pos:opening], text[inside:closing]]
        out_len += opening - pos
        spans.append((out_len, out_len + closing - inside))
        out_len += closing - inside
        pos = closing + run
    if close_char in text[pos:]:  # a closing marker after the last span
        raise mangled
    pieces.append(text[pos:])
    return "".join(pieces), spans


def _controls_outside(text: str, spans: Sequence[tuple[int, int]], controls: re.Pattern[str]) -> int:
    """How many control tokens the tokenizer reads in text given the plain spans (it skips a
    match that overlaps a span and looks further on, as Tokenizer._special_matches does)."""
    count, k, start = 0, 0, 0
    while (m := controls.search(text, start)) is not None:
        while k < len(spans) and spans[k][1] <= m.start():
            k += 1
        if k < len(spans) and spans[k][0] < m.end():
            start = m.start() + 1
            continue
        count += 1
        start = m.end()
    return count


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
    tokenize as plain text. The text is what render() gives.

    A template can carry a message's control-token text into the prompt without its marker runs
    (tojson(ensure_ascii=True) escapes them, urlencode encodes them). So when the caller's strings
    hold control-token text, the template is rendered a second time with that text replaced by a
    placeholder that holds none: the prompt may hold no more control tokens outside the spans than
    that render holds in all, or it is refused."""
    source = _template_source(template)
    caller = {"messages": _check_messages(messages), **extra}
    fixed = {"add_generation_prompt": add_generation_prompt, "bos_token": bos_token, "eos_token": eos_token}
    try:
        runs = _marker_runs(caller, controls, source)
        if runs is None:
            return render_bounded(source, {**caller, **fixed}, sum(map(len, _strings(caller)))), []
        assert controls is not None
        open_run, close_run, placeholder = runs
        marked = _substituted(caller, controls, lambda m: open_run + m.group() + close_run)
        neutral = _substituted(caller, controls, lambda m: placeholder * len(m.group()))
    except RecursionError:
        raise ValueError("the messages (or extra template variables) nest too deeply") from None
    text, spans = _unmarked(render_bounded(source, {**marked, **fixed}, sum(map(len, _strings(marked)))),
                            open_run, close_run)
    neutral_text = render_bounded(source, {**neutral, **fixed}, sum(map(len, _strings(neutral))))
    if _controls_outside(text, spans, controls) > len(controls.findall(neutral_text)):
        raise TemplateError("the chat template changed control-token text that came from a message so that "
                            "where it came from cannot be told, and it would act as control tokens")
    return text, spans


def _marker_runs(caller: dict[str, Any], controls: re.Pattern[str] | None,
                 source: str) -> tuple[str, str, str] | None:
    """The opening and closing marker runs and the placeholder character, or None when the
    caller's strings hold no control-token text (and nothing needs marking)."""
    strings = list(_strings(caller))
    if controls is None or not any(controls.search(s) for s in strings):
        return None
    used = set(source).union(*strings)
    free = (chr(c) for c in _MARKER_CHARS if chr(c) not in used)
    o, c, p = next(free, None), next(free, None), next(free, None)
    if p is None:
        raise TemplateError("the messages use every character pyllm could mark their control tokens with")
    k = 8 + secrets.randbelow(25)
    return o * k, c * k, p
