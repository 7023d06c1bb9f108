#!/usr/bin/env python3
"""Make tests/data/templates/tool_templates.json: chat templates that render tools themselves
(Qwen2.5-7B-Instruct and Qwen3-0.6B, copied from the llama.cpp reference tree's models/templates,
which holds them as their Hugging Face repositories publish them), a conversation with tools, past tool calls and their results, and the prompt text each
template renders for it with transformers' own renderer (`render_jinja_template`, what
`apply_chat_template(tools=...)` runs), with the messages in the shape transformers documents.
tests/test_server_tools.py renders the same conversation, given in OpenAI's request shape, the
way `pyllm serve` does and compares. Needs transformers (a reference tool, not a dependency),
run with a Python that has it:

    python tools/make_tool_template_fixture.py [LLAMA_CPP_TREE]
"""
import json
import os
import sys

from transformers.utils.chat_template_utils import render_jinja_template

TREE = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/llama.cpp-ref")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "templates",
                   "tool_templates.json")
TEMPLATES = ["Qwen-Qwen2.5-7B-Instruct", "Qwen-Qwen3-0.6B"]  # both Apache-2.0 (tests/data/templates/SOURCES.md)

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
# what a client sends (OpenAI's shape: arguments are JSON text, results name their call by id)
OPENAI_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris and in Tokyo?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, cloudy"},
    {"role": "tool", "tool_call_id": "call_2", "content": "25 C, sunny"},
    {"role": "assistant", "content": "Paris: 18 C and cloudy. Tokyo: 25 C and sunny."},
    {"role": "user", "content": "And in Rome?"},
]
# the same conversation as transformers' chat-template documentation writes it (arguments as a dict)
HF_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris and in Tokyo?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}]},
    {"role": "tool", "name": "get_weather", "content": "18 C, cloudy"},
    {"role": "tool", "name": "get_weather", "content": "25 C, sunny"},
    {"role": "assistant", "content": "Paris: 18 C and cloudy. Tokyo: 25 C and sunny."},
    {"role": "user", "content": "And in Rome?"},
]


def main() -> None:
    cases = []
    for name in TEMPLATES:
        with open(os.path.join(TREE, "models", "templates", name + ".jinja"), encoding="utf-8") as f:
            template = f.read()
        rendered = render_jinja_template([HF_MESSAGES], tools=TOOLS, chat_template=template,
                                         add_generation_prompt=True)
        text = rendered[0][0] if isinstance(rendered, tuple) else rendered
        text = text[0] if isinstance(text, list) else text
        cases.append({"name": name, "template": template, "expected": text})
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"tools": TOOLS, "messages": OPENAI_MESSAGES, "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} templates")


if __name__ == "__main__":
    main()
