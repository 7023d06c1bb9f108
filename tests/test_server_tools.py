"""`response_format` and `tools` in `pyllm serve`, as a client sees them: the official `openai`
client against the real server process that tests/test_server.py uses (SmolLM2-135M-Instruct).
Outputs are checked with `jsonschema` against the schema the request gave, streamed replies are
assembled and compared with the whole ones, a follow-up turn with a tool result is compared with
the same model run in this process on the documented prompt format, and the bad requests are
400s in OpenAI's shape naming the field."""
from __future__ import annotations

import json
import os

import httpx
import jsonschema
import pytest
from pydantic import BaseModel

from served import NAME

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
PERSON_ASK = [{"role": "user", "content": "Invent a person: give a name and an age."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}
TOOLS = [WEATHER, SEARCH]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
WEATHER_ASK = [{"role": "user", "content": "What is the weather like in Paris?"}]
# one earlier exchange that shows a call: with it, SmolLM2-135M calls a function on its own (auto)
# where one is needed, and answers in text where none is; without it, it never calls under auto
SHOWN = [{"role": "user", "content": "What is the weather in Paris?"},
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}]


@pytest.fixture(scope="module")
def server(smollm2_server):
    return smollm2_server


@pytest.fixture
def client(server):
    return server.client()


def assembled(chunks) -> tuple[str, list[dict], str | None]:
    """The content, the tool calls ({id, name, arguments}) and the finish reason of a streamed chat."""
    content, calls, finish = "", [], None
    for c in chunks:
        if not c.choices:
            continue
        delta = c.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            if tc.id is not None:  # a call opens: its id, type, name and empty arguments come first
                assert tc.index == len(calls) and tc.type == "function" and tc.function.arguments == ""
                calls.append({"id": tc.id, "name": tc.function.name, "arguments": ""})
            else:
                assert tc.function.name is None
                calls[tc.index]["arguments"] += tc.function.arguments
        finish = c.choices[0].finish_reason or finish
    return content, calls, finish


def calls_of(message) -> list[dict]:
    return [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or []]


def assert_valid_calls(calls: list[dict], allow_none: bool = False) -> None:
    """There are calls (unless allow_none), each names a given function, and its arguments validate
    against that function's parameters."""
    assert calls or allow_none
    for call in calls:
        assert call["id"].startswith("call_")
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


# ------------------------------------------------------------------------------------ response_format

def test_json_schema_whole_and_streamed(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    r = client.chat.completions.create(model=NAME, messages=PERSON_ASK, response_format=fmt, temperature=0,
                                       max_tokens=60)
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), PERSON)
    chunks = list(client.chat.completions.create(model=NAME, messages=PERSON_ASK, response_format=fmt, temperature=0,
                                                 max_tokens=60, stream=True, stream_options={"include_usage": True}))
    content, calls, finish = assembled(chunks)
    assert (content, calls, finish) == (text, [], "stop")
    assert chunks[-1].usage == r.usage


def test_json_schema_with_sampling_n_and_logprobs(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    r = client.chat.completions.create(model=NAME, messages=PERSON_ASK, response_format=fmt, temperature=0.9,
                                       seed=3, n=3, max_tokens=60, logprobs=True, top_logprobs=2)
    assert len(r.choices) == 3
    for choice in r.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), PERSON)
        assert "".join(bytes(t.bytes).decode("utf-8", "replace") for t in choice.logprobs.content) == \
            choice.message.content


def test_json_object(client):
    """json_object mode: the reply is one JSON object, and the request ends with "stop" when it
    closes. The request names the object's two keys: asked for an open-ended object, the small
    model's greedy text can repeat keys until max_tokens, and whether it does turns on rounding
    (with AVX2 kernels "Describe a cat as a JSON object." runs past 400 tokens; with AVX-512 it
    closes after 47)."""
    messages = [{"role": "user", "content": "Give a JSON object for a cat: its name and its colour."}]
    r = client.chat.completions.create(model=NAME, messages=messages, response_format={"type": "json_object"},
                                       temperature=0, max_tokens=80)
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_cut_by_max_tokens_is_length(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    r = client.chat.completions.create(model=NAME, messages=PERSON_ASK, response_format=fmt, temperature=0,
                                       max_tokens=4)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4
    with pytest.raises(ValueError):
        json.loads(r.choices[0].message.content)


def test_parse_with_a_pydantic_model(client):
    class Person(BaseModel):
        name: str
        age: int

    r = client.chat.completions.parse(model=NAME, messages=PERSON_ASK, response_format=Person, temperature=0,
                                      max_tokens=60)
    person = r.choices[0].message.parsed
    assert isinstance(person, Person) and person == Person.model_validate_json(r.choices[0].message.content)


def test_completions_take_response_format(client):
    r = client.completions.create(model=NAME, prompt="A person, as JSON:", max_tokens=60, temperature=0,
                                  extra_body={"response_format": {"type": "json_schema",
                                                                  "json_schema": {"name": "p", "schema": PERSON}}})
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].text), PERSON)


# ------------------------------------------------------------------------------------ tools

def test_required_tool_call_whole_and_streamed(client):
    options = dict(model=NAME, messages=WEATHER_ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=60)
    r = client.chat.completions.create(**options)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = calls_of(choice.message)
    assert_valid_calls(calls)
    chunks = list(client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True},
                                                 logprobs=True))
    content, streamed, finish = assembled(chunks)
    assert content == "" and finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in streamed] == [(c["name"], c["arguments"]) for c in calls]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls) > 2  # arguments come in pieces
    assert chunks[-1].usage == r.usage
    # every generated token's logprob is streamed once, whichever delta its text went to
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert len(tokens) == r.usage.completion_tokens
    assert "".join(bytes(t.bytes).decode() for t in tokens) == \
        "<tool_call>" + json.dumps({"name": calls[0]["name"], "arguments": json.loads(calls[0]["arguments"])}) + \
        "</tool_call>"


def test_sampled_tool_calls_fit_their_schemas(client):
    options = dict(model=NAME, messages=WEATHER_ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=11,
                   n=4, max_tokens=80)
    for choice in client.chat.completions.create(**options, parallel_tool_calls=False).choices:
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1, choice
        assert_valid_calls(calls_of(choice.message))
    for choice in client.chat.completions.create(**options).choices:  # several calls may come; the last may be cut
        calls = calls_of(choice.message)
        assert calls and choice.finish_reason in ("tool_calls", "length")
        assert_valid_calls(calls if choice.finish_reason == "tool_calls" else calls[:-1], allow_none=True)


def test_named_function_is_the_one_called(client):
    r = client.chat.completions.create(model=NAME, messages=WEATHER_ASK, tools=TOOLS, temperature=0, max_tokens=60,
                                       tool_choice={"type": "function", "function": {"name": "search"}})
    calls = calls_of(r.choices[0].message)
    assert [c["name"] for c in calls] == ["search"] and r.choices[0].finish_reason == "tool_calls"
    assert_valid_calls(calls)


def test_auto_calls_a_function_when_one_is_needed(client):
    messages = SHOWN + [{"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "cloudy"}'},
                        {"role": "assistant", "content": "It is cloudy in Paris."},
                        {"role": "user", "content": "What is the weather in Tokyo?"}]
    options = dict(model=NAME, messages=SHOWN + [{"role": "user", "content": "What is the weather in Tokyo?"}],
                   tools=TOOLS, temperature=0, max_tokens=60, parallel_tool_calls=False)
    r = client.chat.completions.create(**options)
    calls = calls_of(r.choices[0].message)
    assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    assert_valid_calls(calls)
    assert calls[0]["name"] == "get_weather" and "Tokyo" in json.loads(calls[0]["arguments"])["city"]
    content, streamed, finish = assembled(client.chat.completions.create(**options, stream=True))
    assert finish == "tool_calls" and (content or None) == r.choices[0].message.content
    assert [(c["name"], c["arguments"]) for c in streamed] == [(c["name"], c["arguments"]) for c in calls]
    # a longer history, with the call's result and the answer to it, is accepted too
    assert client.chat.completions.create(**{**options, "messages": messages}).choices[0].finish_reason


def test_auto_answers_in_text_when_no_call_is_needed(client):
    messages = SHOWN + [{"role": "user", "content": "What is 2 + 2?"}]
    r = client.chat.completions.create(model=NAME, messages=messages, tools=TOOLS, temperature=0, max_tokens=60)
    assert r.choices[0].finish_reason == "stop" and not r.choices[0].message.tool_calls
    assert "4" in r.choices[0].message.content and "<tool_call>" not in r.choices[0].message.content
    content, calls, finish = assembled(client.chat.completions.create(model=NAME, messages=messages, tools=TOOLS,
                                                                       temperature=0, max_tokens=60, stream=True))
    assert (content, calls, finish) == (r.choices[0].message.content, [], "stop")
    # with a response_format, the reply is JSON of its schema or calls, never free text (here: a call,
    # as the reply can no longer start with "2 + 2")
    answer = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    r = client.chat.completions.create(model=NAME, messages=messages, tools=TOOLS, temperature=0, max_tokens=60,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "a", "schema": answer}})
    if r.choices[0].finish_reason == "tool_calls":
        assert r.choices[0].message.content is None
        assert_valid_calls(calls_of(r.choices[0].message))
    else:
        assert r.choices[0].finish_reason == "stop" and not r.choices[0].message.tool_calls
        jsonschema.validate(json.loads(r.choices[0].message.content), answer)


def test_follow_up_turn_with_the_tool_result(client, smollm2):
    from pyllm.structured.tools import Function, system_section

    first = client.chat.completions.create(model=NAME, messages=WEATHER_ASK, tools=TOOLS, tool_choice="required",
                                           temperature=0, max_tokens=60)
    call = first.choices[0].message.tool_calls[0]
    result = '{"temperature": 31, "unit": "celsius", "sky": "sunny"}'
    # the reply message goes back as the client returned it, then the tool's result
    messages = WEATHER_ASK + [first.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": result}]
    r = client.chat.completions.create(model=NAME, messages=messages, tools=TOOLS, tool_choice="none",
                                       temperature=0, max_tokens=24)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length")
    # the documented generic format (docs/structured.md), run in this process: the same prompt and reply
    # (tool_choice "none": the functions are not shown)
    written = WEATHER_ASK + [
        {"role": "assistant", "content": f'<tool_call>{{"name": "{call.function.name}", "arguments": '
                                         f'{call.function.arguments}}}</tool_call>'},
        {"role": "user", "content": f"<tool_response>\n{result}\n</tool_response>"}]
    assert r.usage.prompt_tokens == len(smollm2.chat_prompt(written))
    assert r.choices[0].message.content == smollm2.chat(written, max_tokens=24, temperature=0, stream=True).text()
    # with the functions shown (tool_choice auto), the system prompt carries their section
    functions = [Function(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
                 for t in TOOLS]
    shown = [{"role": "system", "content": system_section(functions, True)}] + written
    r = client.chat.completions.create(model=NAME, messages=messages, tools=TOOLS, temperature=0, max_tokens=8)
    assert r.usage.prompt_tokens == len(smollm2.chat_prompt(shown))


# ------------------------------------------------------------------------------------ errors

def assert_400(r: httpx.Response, param: str, *words: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param, err
    for w in words:
        assert w in err["message"], err


def test_bad_response_formats_are_400(server):
    url = server.url + "/v1/chat/completions"
    ok = {"model": NAME, "messages": PERSON_ASK, "max_tokens": 2}
    for fmt, words in (({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "strng"}}}, ["strng"]),
                       ({"type": "json_schema", "json_schema": {"name": "p", "schema": {
                           "type": "array", "uniqueItems": True}}}, ["uniqueItems"]),
                       ({"type": "json_schema", "json_schema": {"name": "p", "schema": {
                           "type": "object", "properties": {"a": {"not": {"type": "string"}}}}}}, ["not"]),
                       ({"type": "json_schema"}, ["json_schema"]),
                       ({"type": "xml"}, []),
                       ({"type": "json_schema", "json_schema": {"name": "bad name", "schema": PERSON}}, [])):
        before = server.metrics()["pyllm_prompt_tokens_total"]
        assert_400(httpx.post(url, json={**ok, "response_format": fmt}, timeout=30), "response_format", *words)
        assert server.metrics()["pyllm_prompt_tokens_total"] == before  # refused before anything ran
    assert_400(httpx.post(server.url + "/v1/completions", timeout=30, json={
        "model": NAME, "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {
            "name": "p", "schema": {"type": "strng"}}}}), "response_format", "strng")


def test_bad_tools_are_400(server):
    url = server.url + "/v1/chat/completions"
    ok = {"model": NAME, "messages": WEATHER_ASK, "max_tokens": 2, "tools": TOOLS}
    fn = WEATHER["function"]
    for change, param, words in (
            ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools", []),
            ({"tools": [{"type": "function", "function": {**fn, "name": "get weather"}}]}, "tools", ["tools[0]"]),
            ({"tools": [SEARCH, {"type": "function", "function": {**fn, "parameters": {"type": "string"}}}]},
             "tools", ["tools[1]", "object"]),
            ({"tools": [{"type": "function", "function": {**fn, "parameters": {
                "type": "object", "properties": {"days": {"type": "array", "uniqueItems": True}}}}}]},
             "tools", ["get_weather", "uniqueItems"]),
            ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice", ["get_time"]),
            ({"tool_choice": "sometimes"}, "tool_choice", []),
            ({"tools": None, "tool_choice": "required"}, "tool_choice", []),
            ({"messages": WEATHER_ASK + [{"role": "tool", "content": "18C"}]}, "messages", ["tool_call_id"]),
            ({"messages": [{"role": "user", "content": "hi", "tool_calls": SHOWN[1]["tool_calls"]}]}, "messages", []),
            ({"tools": [WEATHER, SEARCH, WEATHER]}, "tools", ["get_weather", "twice"]),
            ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "strng"}}}},
             "response_format", ["strng"]),  # with tools under auto: the answer's schema is still named
            ({"functions": [fn]}, "functions", [])):
        assert_400(httpx.post(url, json={**ok, **change}, timeout=30), param, *words)


# ------------------------------------------------------------------------------------ templates with tools

def test_templates_that_render_tools_get_them_as_transformers_passes_them():
    """A conversation with tools, two past calls and their results, in OpenAI's request shape,
    rendered as `pyllm serve` renders it, against transformers' rendering of the same conversation
    (tools/make_tool_template_fixture.py) for two templates that render tools themselves."""
    from pyllm.chat import render
    from pyllm.server.protocol import Message
    from pyllm.server.structured import history, renders_tools

    with open(os.path.join(os.path.dirname(__file__), "data", "templates", "tool_templates.json"),
              encoding="utf-8") as f:
        fixture = json.load(f)
    messages = [Message.model_validate(m) for m in fixture["messages"]]
    for case in fixture["cases"]:
        assert renders_tools(case["template"]), case["name"]
        text = render(case["template"], history(messages, native=True), tools=fixture["tools"])
        assert text == case["expected"], case["name"]


def test_a_template_without_tools_gets_the_generic_format(smollm2):
    from pyllm.server.structured import renders_tools

    assert not renders_tools(smollm2.chat_template) and not renders_tools(None)
    # a template that renders tools with another call syntax (Qwen3-Coder's) gets the generic format too
    assert not renders_tools("{% for t in tools %}{{ t | tojson }}{% endfor %}<tool_call>\n<function=NAME>")
