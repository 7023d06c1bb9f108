"""Tool calls: the one format pyllm writes them in, the grammar that holds a reply to it, the
system-prompt section that describes the functions to a model whose chat template cannot, and the
parser that splits a reply, as it streams, into text and calls.

A call is written `<tool_call>{"name": "<function>", "arguments": {...}}</tool_call>` (the Hermes /
Qwen format), several calls one after another with nothing between them: with a line break
between calls, SmolLM2-135M repeats its call until max_tokens; without one, it ends. (For a chat
template that teaches the format with line breaks, the grammar follows its layout.) The grammar is
one llguidance Lark grammar: a choice of the functions, each `{"name": <its name as a constant>,
"arguments": <its parameters schema>}`. When the reply may also be text (tool_choice "auto"), the
text is a lazy rule that ends at the first `<tool_call>`: the model writes freely until it opens a
call, and from there on the call is held to the grammar; a reply that never opens one may end
anywhere.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ConstraintError
from .spec import JSON_OPTIONS, closed_objects, llguidance_module

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


@dataclass(frozen=True)
class Function:
    """One function a reply may call: its name, what it does, and its arguments' JSON Schema."""

    name: str
    description: str | None
    parameters: Mapping[str, Any]

    def declaration(self) -> dict[str, Any]:
        """The function as OpenAI's `tools` entry (what a chat template and the system prompt show)."""
        fn: dict[str, Any] = {"name": self.name}
        if self.description:
            fn["description"] = self.description
        fn["parameters"] = dict(self.parameters)
        return {"type": "function", "function": fn}


def make_function(name: Any, description: Any, parameters: Any) -> Function:
    """A Function from a request's fields; ConstraintError saying which part is wrong (a bad name,
    parameters that are not an object schema, or a schema structured output cannot enforce)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConstraintError(f"function name {name!r} must be 1 to 64 letters, digits, '_' or '-'")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, Mapping):
        raise ConstraintError(f"function {name!r}: parameters must be a JSON Schema object")
    if parameters.get("type", "object") != "object":
        raise ConstraintError(f"function {name!r}: parameters must describe an object (type \"object\"), "
                              f"got type {parameters.get('type')!r}")
    parameters = {"type": "object", **parameters}
    error = schema_error(closed_objects(parameters))
    if error:
        raise ConstraintError(f"function {name!r}: parameters: {error}")
    return Function(name, description if isinstance(description, str) else None, parameters)


def schema_error(schema: Mapping[str, Any]) -> str | None:
    """Why llguidance cannot enforce a JSON Schema (an unsupported keyword, a malformed schema), or None."""
    llg = llguidance_module()
    try:
        grammar = llg.LLMatcher.grammar_from_json_schema(json.dumps(schema), JSON_OPTIONS)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return llg.LLMatcher.validate_grammar(grammar).strip() or None


def call_schema(functions: Sequence[Function]) -> dict[str, Any]:
    """The JSON Schema of one call's object: one of the functions, its name a constant and its
    arguments its parameters (objects closed to the properties they list, unless they say otherwise)."""
    options = [{"type": "object", "properties": {"name": {"const": f.name}, "arguments": closed_objects(f.parameters)},
                "required": ["name", "arguments"], "additionalProperties": False} for f in functions]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "x-guidance": JSON_OPTIONS}


def tool_call_grammar(functions: Sequence[Function], *, text: bool, parallel: bool,
                      answer_schema: Mapping[str, Any] | None = None, line_breaks: bool = False) -> str:
    """The grammar (llguidance's Lark) of a reply: tool calls only (text=False), or text that may
    open calls (text=True: free text up to the first `<tool_call>`, then calls only). With
    answer_schema, the alternative to the calls is a JSON value of that schema instead of free
    text. parallel=False allows one call, True several. line_breaks=True writes a call as the
    chat templates that render tools teach it (`<tool_call>` line break `{...}` line break `</tool_call>`, calls on
    separate lines); False, pyllm's compact form."""
    if not functions:
        raise ConstraintError("no functions to call")
    nl = "\n" if line_breaks else ""
    body = f"%json {json.dumps(call_schema(functions))} {json.dumps(nl + CALL_CLOSE)}"
    if nl:
        body = f"{json.dumps(nl)} {body}"
    more = (f" ({json.dumps(nl)} call)*" if nl else " call*") if parallel else ""
    if answer_schema is not None and text:  # a JSON answer, or calls
        start = f"start: %json {json.dumps({**answer_schema, 'x-guidance': JSON_OPTIONS})} | call{more}"
    elif text:  # text up to the first opening (lazily: it ends there), then calls
        start = f"start: TEXT | lead body{more}\nTEXT: /(?s:.*)/\nlead[lazy]: TEXT {json.dumps(CALL_OPEN)}"
    else:
        start = f"start: call{more}"
    return f"%llguidance {{}}\n{start}\ncall: {json.dumps(CALL_OPEN)} body\nbody: {body}\n"


# -- the prompt, for a chat template that does not render tools ---------------------------------

def system_section(functions: Sequence[Function], parallel: bool) -> str:
    """The system-prompt text that shows the functions and the call format to the model."""
    listing = "\n".join(json.dumps(f.declaration(), ensure_ascii=False) for f in functions)
    how = "one call after another" if parallel else "at most one call"
    return ("# Tools\n\nYou are an expert in composing functions. You are given a question and a set of possible "
            "functions. Based on the question, you will need to make one or more function calls to achieve the "
            f"purpose.\n\nThe functions, as JSON Schemas of their arguments:\n<tools>\n{listing}\n</tools>\n\n"
            f"To call a function, answer with its name and arguments as JSON inside {CALL_OPEN} tags, {how}:\n"
            f'{CALL_OPEN}{{"name": "<function name>", "arguments": <arguments as a JSON object>}}{CALL_CLOSE}\n'
            f"The results come back inside {RESPONSE_OPEN} tags.")


def call_text(name: str, arguments: str) -> str:
    """A past call as the model writes one (arguments that are not JSON are kept as a JSON string)."""
    try:
        args: Any = json.loads(arguments)
    except ValueError:
        args = arguments
    return CALL_OPEN + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + CALL_CLOSE


def response_text(content: str) -> str:
    """A function's result as the model reads it."""
    return f"{RESPONSE_OPEN}\n{content}\n{RESPONSE_CLOSE}"


# -- reading a reply ------------------------------------------------------------------------------

@dataclass
class ToolCall:
    """A call read from a reply: its name, its arguments' JSON text so far, and whether it closed."""

    name: str
    arguments: str = ""
    complete: bool = False


@dataclass
class Event:
    """A piece of a reply: text ("content"), a call opening with its name ("call"), a fragment of
    a call's arguments ("arguments"); `index` is the call's position in the reply."""

    kind: str
    text: str = ""
    index: int = 0


_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]*)"\s*,\s*"arguments"\s*:\s*(?=\S)')
_TAIL = re.compile(r"\s*\}\s*" + re.escape(CALL_CLOSE))


@dataclass
class ToolCallParser:
    """Splits a reply into text and tool calls as its text arrives (feed), with what is held back
    released at the end (finish). Text that could be the start of `<tool_call>` is held until it
    is known not to be; a call's arguments come out as they are written, their end found by
    following the JSON's nesting (strings and escapes included)."""

    calls: list[ToolCall] = field(default_factory=list)
    content: str = ""
    _buf: str = ""
    _state: str = "text"   # text, head (after <tool_call>), arguments, tail (after the arguments)
    _depth: int = 0
    _in_string: bool = False
    _escaped: bool = False
    _started: bool = False

    def feed(self, text: str) -> list[Event]:
        """The events the text completes."""
        self._buf += text
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def finish(self) -> list[Event]:
        """The events left at the end of the reply: text held back because it could have opened a
        call, unless a call came before it. A call cut before its name (by max_tokens or a stop
        string) is left out: it never named a function."""
        events: list[Event] = []
        if self._state == "text" and self._buf and not self.calls:
            events.append(self._content(self._buf))
        self._buf = ""
        return events

    def _content(self, text: str) -> Event:
        self.content += text
        return Event("content", text)

    def _step(self, events: list[Event]) -> bool:
        """One move of the state machine over the buffer; False when it needs more text."""
        if self._state == "text":
            at = self._buf.find(CALL_OPEN)
            if at < 0:
                keep = next((k for k in range(min(len(CALL_OPEN) - 1, len(self._buf)), 0, -1)
                             if CALL_OPEN.startswith(self._buf[-k:])), 0)
                ready, self._buf = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
                if ready and not (self.calls and ready.isspace()):  # white space between calls is not text
                    events.append(self._content(ready))
                return False
            if at and not (self.calls and self._buf[:at].isspace()):
                events.append(self._content(self._buf[:at]))
            self._buf, self._state = self._buf[at + len(CALL_OPEN):], "head"
            return True
        if self._state == "head":
            m = _HEAD.match(self._buf)
            if m is None:
                return False
            self.calls.append(ToolCall(m.group(1)))
            events.append(Event("call", m.group(1), len(self.calls) - 1))
            self._buf, self._state = self._buf[m.end():], "arguments"
            self._depth, self._in_string, self._escaped, self._started = 0, False, False, False
            return True
        if self._state == "arguments":
            end = self._scan()
            piece, self._buf = self._buf[:end], self._buf[end:]
            call = self.calls[-1]
            if piece:
                call.arguments += piece
                events.append(Event("arguments", piece, len(self.calls) - 1))
            if self._started and self._depth == 0:
                self._state = "tail"
                return True
            return False
        m = _TAIL.match(self._buf)  # tail: the call object's "}" and </tool_call>
        if m is None:
            return False
        self.calls[-1].complete = True
        self._buf, self._state = self._buf[m.end():], "text"
        return True

    def _scan(self) -> int:
        """How much of the buffer belongs to the arguments: up to where their outermost value closes."""
        for i, ch in enumerate(self._buf):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string, self._started = True, True
            elif ch in "{[":
                self._depth, self._started = self._depth + 1, True
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
            elif not ch.isspace():
                self._started = True
        return len(self._buf)
