"""`response_format` and `tools` on the server: what they ask of the prompt (the functions shown to
the model, past calls and their results in the history), of the generation (one constraint per
request, through the engine's per-request constraint), and of the reply (text split into content
and tool calls, whole or as OpenAI streams them).

The prompt: a chat template that renders tools itself (it uses the `tools` variable and writes
calls as `<tool_call>`) gets them as its `tools` variable, with past calls and results as
transformers passes them. Any other template gets pyllm's generic format: a system-prompt section
listing the functions (pyllm.structured.tools.system_section), past calls written as the model
writes them, and results as a user turn of `<tool_response>` blocks.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import ConstraintError
from ..structured.tools import (CALL_OPEN, Function, ToolCallParser, call_text, make_function, response_text,
                                schema_error, system_section, tool_call_grammar)
from .protocol import ApiError, ChatRequest, Message, ResponseFormat, finish_reason


@dataclass
class ChatPlan:
    """How a chat request runs: the messages and tools for the template, the engine's constraint
    options, the request field that constraint comes from (for errors), and whether the reply is
    read for tool calls."""

    messages: list[dict[str, Any]]
    template_tools: list[dict[str, Any]] | None = None
    constraint: dict[str, Any] = field(default_factory=dict)
    param: str | None = None
    reads_calls: bool = False

    def reply(self) -> TextReply:
        """A reader for one choice's reply: tool calls and text, or text."""
        return ToolCallReply() if self.reads_calls else TextReply()


def response_constraint(fmt: ResponseFormat | None) -> dict[str, Any]:
    """The engine options `response_format` asks for: none for text, a JSON Schema otherwise."""
    if fmt is None or fmt.type == "text":
        return {}
    if fmt.type == "json_object":
        return {"json_schema": {"type": "object"}}
    if fmt.json_schema is None:
        raise ApiError(400, "response_format: type json_schema needs a json_schema object {name, schema}",
                       param="response_format")
    schema = fmt.json_schema.schema_
    return {"json_schema": {"type": "object"} if schema is None else schema}


JSON_CALL = re.compile(r'\\?"arguments\\?"')  # a call taught as a {"name", "arguments"} object


def renders_tools(template: str | None) -> bool:
    """Whether a chat template shows tools itself and teaches the call format pyllm reads: it uses
    `tools`, writes `<tool_call>` and a JSON object with "arguments" (Qwen 2.5 and 3, Hermes; not
    the `<function=...>` calls of Qwen3-Coder or Qwen 3.5)."""
    return bool(template and "tools" in template and CALL_OPEN in template and JSON_CALL.search(template))


def plan_chat(req: ChatRequest, template: str | None) -> ChatPlan:
    """The plan of a chat request; ApiError 400 naming the field for bad tools, a bad tool_choice or
    a bad history."""
    native = renders_tools(template)
    functions = [function_of(i, t.function) for i, t in enumerate(req.tools or [])]
    names = [f.name for f in functions]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise ApiError(400, f"tools: function names must differ; {twice!r} is given twice", param="tools")
    choice = req.tool_choice if req.tool_choice is not None else ("auto" if functions else "none")
    if choice != "none" and not functions:
        raise ApiError(400, "tool_choice: there are no tools to choose from", param="tool_choice")
    if not isinstance(choice, str):
        named = [f for f in functions if f.name == choice.function.name]
        if not named:
            raise ApiError(400, f"tool_choice: no function named {choice.function.name!r} in tools",
                           param="tool_choice")
        functions, choice = named, "required"
    messages = history(req.messages, native)
    answer = response_constraint(req.response_format)
    if choice == "none":
        return ChatPlan(messages, constraint=answer, param="response_format" if answer else None)
    if choice == "auto" and answer:  # the answer's schema goes into the tools' grammar: check it on its own
        error = schema_error(answer["json_schema"])
        if error:
            raise ApiError(400, f"response_format: json_schema is not supported: {error}", param="response_format")
    parallel = req.parallel_tool_calls is not False
    tools = [f.declaration() for f in functions]
    if not native:
        messages = with_system_section(messages, system_section(functions, parallel))
    lark = tool_call_grammar(functions, text=choice == "auto", parallel=parallel,
                             answer_schema=answer.get("json_schema"), line_breaks=native)
    return ChatPlan(messages, tools if native else None, {"grammar": lark, "grammar_format": "lark"},
                    "tools", reads_calls=True)


def function_of(index: int, fn: Any) -> Function:
    """tools[index]'s function, checked; ApiError 400 (param tools) saying what is wrong."""
    try:
        return make_function(fn.name, fn.description, fn.parameters)
    except ConstraintError as exc:
        raise ApiError(400, f"tools[{index}].function: {exc}", param="tools") from None
    except ImportError as exc:
        raise ApiError(400, f"tools: {exc}", param="tools") from None


def history(messages: Sequence[Message], native: bool) -> list[dict[str, Any]]:
    """The messages as the chat template reads them, past tool calls and results included: as
    transformers passes them to a template that renders tools (native), else in the generic
    format (calls as text in the assistant's turn, results as one user turn per run of them)."""
    names: dict[str, str] = {}  # tool call id -> function name
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        check_message(i, m)
        if m.role == "assistant" and m.tool_calls:
            names.update((c.id, c.function.name) for c in m.tool_calls)
            if native:
                calls = [{"id": c.id, "type": "function",
                          "function": {"name": c.function.name, "arguments": arguments_value(c.function.arguments)}}
                         for c in m.tool_calls]
                out.append({"role": "assistant", "content": m.text, "tool_calls": calls})
            else:
                text = "\n".join(call_text(c.function.name, c.function.arguments) for c in m.tool_calls)
                out.append({"role": "assistant", "content": (m.text + "\n" if m.text else "") + text})
        elif m.role == "tool":
            if native:
                out.append({"role": "tool", "content": m.text, "tool_call_id": m.tool_call_id,
                            "name": names.get(m.tool_call_id or "", "")})
            elif out and out[-1].get("role") == "user" and out[-1].get("tool_results"):
                out[-1]["content"] += "\n" + response_text(m.text)
            else:
                out.append({"role": "user", "content": response_text(m.text), "tool_results": True})
        else:
            out.append(m.as_dict())
    for m in out:
        m.pop("tool_results", None)
    return out


def check_message(i: int, m: Message) -> None:
    """ApiError 400 (param messages) for a message whose tool fields do not fit its role."""
    if m.tool_calls and m.role != "assistant":
        raise ApiError(400, f"messages[{i}]: only assistant messages carry tool_calls", param="messages")
    if m.role == "tool" and not m.tool_call_id:
        raise ApiError(400, f"messages[{i}]: a tool message needs the tool_call_id of the call it answers",
                       param="messages")
    if m.function_call is not None:
        raise ApiError(400, f"messages[{i}]: function_call is not supported; use tool_calls", param="messages")


def arguments_value(arguments: str) -> Any:
    """A past call's arguments as a template expects them: the JSON value, or the text if it is not JSON."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def with_system_section(messages: list[dict[str, Any]], section: str) -> list[dict[str, Any]]:
    """The messages with `section` at the end of the system message (one is added if there is none)."""
    if messages and messages[0]["role"] == "system":
        first = messages[0]
        return [{**first, "content": (first["content"] + "\n\n" if first["content"] else "") + section},
                *messages[1:]]
    return [{"role": "system", "content": section}, *messages]


# -- the reply ------------------------------------------------------------------------------------

def call_id() -> str:
    """A new tool call id, in OpenAI's shape."""
    return "call_" + uuid.uuid4().hex[:24]


class TextReply:
    """One choice's reply as text: every piece is content."""

    def deltas(self, text: str | None) -> list[dict[str, Any]]:
        """The stream deltas of a piece of text (None: the end of the reply, nothing held back)."""
        return [] if text is None else [{"content": text}]

    def message(self, text: str) -> dict[str, Any]:
        """The whole reply as OpenAI's assistant message."""
        return {"role": "assistant", "content": text}

    def finish_reason(self, engine_reason: str | None) -> str:
        """OpenAI's finish reason for the engine's."""
        return finish_reason(engine_reason)


class ToolCallReply(TextReply):
    """One choice's reply read for tool calls: the parser, and the ids given to its calls."""

    def __init__(self) -> None:
        self.parser = ToolCallParser()
        self.ids: list[str] = []

    def deltas(self, text: str | None) -> list[dict[str, Any]]:
        """The stream deltas `text` completes (None: the end of the reply, releasing what was held)."""
        events = self.parser.finish() if text is None else self.parser.feed(text)
        out: list[dict[str, Any]] = []
        for e in events:
            if e.kind == "content":
                out.append({"content": e.text})
            elif e.kind == "call":
                self.ids.append(call_id())
                out.append({"tool_calls": [{"index": e.index, "id": self.ids[e.index], "type": "function",
                                            "function": {"name": e.text, "arguments": ""}}]})
            else:
                out.append({"tool_calls": [{"index": e.index, "function": {"arguments": e.text}}]})
        return out

    def message(self, text: str) -> dict[str, Any]:
        """The whole reply as OpenAI's assistant message: content (None if there is only white
        space around the calls) and tool_calls."""
        self.deltas(text)
        self.deltas(None)
        content: str | None = self.parser.content
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.parser.calls:
            message["content"] = content if content and not content.isspace() else None
            message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                     for i, c in zip(self.ids, self.parser.calls)]
        return message

    def finish_reason(self, engine_reason: str | None) -> str:
        """"tool_calls" when the reply ended on its own after whole calls, else as for text."""
        calls = self.parser.calls
        if engine_reason == "eos" and calls and all(c.complete for c in calls):
            return "tool_calls"
        return finish_reason(engine_reason)
