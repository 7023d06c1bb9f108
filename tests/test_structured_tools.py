"""The tool-call format (pyllm.structured.tools): which replies its grammar accepts, followed token
by token by llguidance over SmolLM2's vocabulary, and how the parser splits a reply into text and
calls, fed whole or a character at a time. The server's use of both is in test_server_tools.py."""
from __future__ import annotations

import json

import pytest

from pyllm import ConstraintError
from pyllm.generation import stop_tokens
from pyllm.structured import Constraint, spec_from_options
from pyllm.structured.tools import ToolCallParser, make_function, tool_call_grammar

pytest.importorskip("llguidance")

WEATHER = make_function("get_weather", "Get the weather", {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]})
ADD = make_function("add", None, {"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                                  "required": ["a", "b"]})
PARIS = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
SUM = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return smollm2


def accepts(model, grammar: str, text: str) -> bool:
    """Whether the grammar takes `text` (as SmolLM2's tokens) as a whole reply."""
    c = Constraint(spec_from_options(grammar=grammar, grammar_format="lark"), model.tokenizer,
                   model.config.vocab_size, sorted(stop_tokens(model)))
    ids = model.tokenize(text, add_bos=False)
    return c.matcher.try_consume_tokens(ids) == len(ids) and c.complete


def test_required_one_call(tokenizer):
    g = tool_call_grammar([WEATHER, ADD], text=False, parallel=False)
    assert accepts(tokenizer, g, PARIS) and accepts(tokenizer, g, SUM)
    assert accepts(tokenizer, g, PARIS.replace('"}}', '", "days": 3}}'))
    for bad in (PARIS + SUM,                                   # a second call
                "Sure. " + PARIS,                              # text before the call
                PARIS.replace("get_weather", "get_time"),      # a function that is not given
                PARIS.replace('"city"', '"town"'),             # a missing required argument
                PARIS.replace('"Paris"', '"Paris", "country": "FR"'),  # an argument not declared
                SUM.replace("2", '"2"'),                       # a string for an integer
                PARIS[:-3]):                                   # unclosed
        assert not accepts(tokenizer, g, bad), bad


def test_parallel_calls(tokenizer):
    g = tool_call_grammar([WEATHER, ADD], text=False, parallel=True)
    assert accepts(tokenizer, g, PARIS + SUM + PARIS) and not accepts(tokenizer, g, PARIS + "\n" + SUM)
    lines = tool_call_grammar([WEATHER, ADD], text=False, parallel=True, line_breaks=True)
    as_lines = [c.replace("<tool_call>", "<tool_call>\n").replace("</tool_call>", "\n</tool_call>") for c in (PARIS, SUM)]
    assert accepts(tokenizer, lines, "\n".join(as_lines)) and not accepts(tokenizer, lines, PARIS + SUM)


def test_named_function_only(tokenizer):
    g = tool_call_grammar([ADD], text=False, parallel=False)
    assert accepts(tokenizer, g, SUM) and not accepts(tokenizer, g, PARIS)


def test_auto_text_or_calls(tokenizer):
    g = tool_call_grammar([WEATHER, ADD], text=True, parallel=True)
    for good in ("It is sunny.", "A <tool_c is not a call", "", PARIS, "Let me check.\n" + PARIS + SUM):
        assert accepts(tokenizer, g, good), good
    for bad in ("Let me check. <tool_call>{\"weather\": 1}</tool_call>",   # once opened, a call must follow
                PARIS + " Done.",                                          # nothing after the calls
                "x <tool_call>" + PARIS[len("<tool_call>"):].replace("get_weather", "nope")):
        assert not accepts(tokenizer, g, bad), bad


def test_auto_with_a_json_answer(tokenizer):
    g = tool_call_grammar([WEATHER], text=True, parallel=False,
                          answer_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})
    assert accepts(tokenizer, g, '{"ok": true}') and accepts(tokenizer, g, PARIS)
    assert not accepts(tokenizer, g, "Sure.") and not accepts(tokenizer, g, '{"ok": 1}')


def test_bad_functions_are_refused():
    for name, params, part in (("get weather", None, "name"), ("f", {"type": "array"}, "object"),
                               ("f", [1], "JSON Schema object"),
                               ("f", {"properties": {"x": {"type": "strng"}}}, "strng"),
                               ("f", {"properties": {"x": {"type": "array", "uniqueItems": True}}}, "uniqueItems")):
        with pytest.raises(ConstraintError, match=part):
            make_function(name, None, params)
    assert make_function("f", None, None).parameters == {"type": "object", "properties": {}}


def parse(text: str, by_char: bool) -> tuple[str, list, list]:
    """content, calls and the events, from the reply fed whole or one character at a time."""
    p = ToolCallParser()
    events = [e for ch in text for e in p.feed(ch)] if by_char else p.feed(text)
    events += p.finish()
    return p.content, [(c.name, c.arguments, c.complete) for c in p.calls], events


def test_parser_splits_text_and_calls():
    tricky = '{"q": "a}</tool_call>\\"{[", "n": [1, {"m": null}]}'  # braces and the closing tag in a string
    reply = ("Checking. " + PARIS + f'<tool_call>{{"name": "search", "arguments": {tricky}}}</tool_call>')
    for by_char in (False, True):
        content, calls, events = parse(reply, by_char)
        assert content == "Checking. "
        assert calls == [("get_weather", '{"city": "Paris"}', True), ("search", tricky, True)]
        assert json.loads(calls[1][1]) == {"q": 'a}</tool_call>"{[', "n": [1, {"m": None}]}
        # the events rebuild the same reply: content, then each call's name and argument pieces
        assert "".join(e.text for e in events if e.kind == "content") == content
        assert [e.text for e in events if e.kind == "call"] == ["get_weather", "search"]
        for i, (_, args, _) in enumerate(calls):
            assert "".join(e.text for e in events if e.kind == "arguments" and e.index == i) == args


def test_parser_on_line_breaks_and_cut_replies():
    lines = PARIS.replace("<tool_call>", "<tool_call>\n").replace("</tool_call>", "\n</tool_call>")
    assert parse(lines + "\n" + lines, True)[1] == [("get_weather", '{"city": "Paris"}', True)] * 2
    assert parse("Plain text, no call <tool_c", True)[:2] == ("Plain text, no call <tool_c", [])
    # cut inside the arguments: the call is there, unfinished; cut before its name: no call
    assert parse(PARIS[:PARIS.index("Paris") + 3], True)[1] == [("get_weather", '{"city": "Par', False)]
    assert parse("Hi " + PARIS[:20], True)[:2] == ("Hi ", [])
    assert parse(PARIS + "<tool", True)[:2] == ("", [("get_weather", '{"city": "Paris"}', True)])
