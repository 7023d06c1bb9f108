"""Generation on the real model: greedy/seeded reproducibility, stop strings split across tokens,
EOS, context exhaustion, prompt-prefix reuse, chat templates, and the CLI in a subprocess."""
import os
import subprocess
import sys

import pytest

from pyllm import Model
from pyllm.chat import BUILTIN_TEMPLATES, TemplateError, render
from pyllm.fetch import default_model

PROMPT = "The three primary colors are"


@pytest.fixture(scope="module")
def model():
    with Model(default_model(quiet=True), n_ctx=1024) as m:
        yield m


def test_seed_reproduces_text(model):
    a = model.complete(PROMPT, max_tokens=40, seed=1234)
    model.reset()
    b = model.complete(PROMPT, max_tokens=40, seed=1234)
    c = model.complete(PROMPT, max_tokens=40, seed=99)  # prompt reused from the cache this time
    d = model.complete(PROMPT, max_tokens=40, seed=1234)
    assert a == b == d and a != c


def test_greedy_matches_argmax_loop(model):
    g = model.generate(PROMPT, max_tokens=20, temperature=0)
    text = g.text()
    model.reset()
    ids = model.tokenize(PROMPT)
    logits, expected = model.eval(ids), []
    for _ in range(20):
        expected.append(int(logits.argmax()))
        logits = model.eval([expected[-1]])
    assert g.tokens == expected and text == model.detokenize(expected)
    assert g.finish_reason == "length"


def test_stop_string_split_across_tokens_is_never_emitted(model):
    g = model.generate(PROMPT, max_tokens=40, temperature=0)
    full = g.text()
    pieces = [model.detokenize([t]) for t in g.tokens]
    # a stop string made of the end of one token and the start of the next
    i = next(i for i in range(3, len(pieces) - 1) if len(pieces[i]) >= 2 and len(pieces[i + 1]) >= 2)
    stop = pieces[i][-2:] + pieces[i + 1][:2]
    cut = full.index(stop)
    g2 = model.generate(PROMPT, max_tokens=40, temperature=0, stop=["never-appears", stop])
    streamed = list(g2)
    assert "".join(streamed) == full[:cut] and g2.finish_reason == "stop"
    assert all(stop not in p for p in streamed)


def test_eos_ends_generation(model):
    eos = model.tokenizer.eos_id
    g = model.generate(PROMPT, max_tokens=10, temperature=0, logit_bias={eos: 100.0})
    assert g.text() == "" and g.finish_reason == "eos" and g.tokens == []


def test_context_exhaustion(tmp_path):
    with Model(default_model(quiet=True), n_ctx=24) as m:
        prompt = m.tokenize(PROMPT)
        g = m.generate(prompt, max_tokens=100, temperature=0, logit_bias={m.tokenizer.eos_id: -1e9})
        g.text()
        assert g.finish_reason == "context" and len(g.tokens) == 24 - len(prompt) + 1
        assert m.n_past == 24


def test_prompt_prefix_reuse_counts_evaluated_tokens(model):
    model.reset()
    turn1 = [{"role": "user", "content": "Name a fruit."}]
    g1 = model.chat(turn1, stream=True, temperature=0, max_tokens=30)
    reply = g1.text()
    assert g1.n_evaluated_prompt == g1.n_prompt
    turn2 = turn1 + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Another one?"}]
    g2 = model.chat(turn2, stream=True, temperature=0, max_tokens=30)
    g2.text()
    prompt2 = model.chat_prompt(turn2)
    cached = g1.prompt_tokens + g1.tokens[:-1] if g1.finish_reason != "eos" else g1.prompt_tokens + g1.tokens
    common = next((i for i, (a, b) in enumerate(zip(cached, prompt2)) if a != b), min(len(cached), len(prompt2)))
    assert g2.n_evaluated_prompt == len(prompt2) - common
    assert g2.n_evaluated_prompt < len(prompt2) // 2


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye."}]
EXPECTED = {  # the published prompt formats of each family
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
              "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye.<|im_end|>\n<|im_start|>assistant\n",
    "llama2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] Bye. [/INST]",
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
              "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye.<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral": "<s>[INST] Be brief.\n\nHi! [/INST] Hello.</s>[INST] Bye. [/INST]",
}
TOKENS = {"chatml": ("", ""), "llama2": ("<s>", "</s>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
          "mistral": ("<s>", "</s>")}


@pytest.mark.parametrize("name", list(BUILTIN_TEMPLATES))
def test_builtin_templates(name):
    bos, eos = TOKENS[name]
    assert render(name, MESSAGES, bos_token=bos, eos_token=eos) == EXPECTED[name]


def test_smollm2_template_from_gguf(model):
    text = render(model.chat_template, [{"role": "user", "content": "Hi!"}])
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
    ids = model.chat_prompt([{"role": "user", "content": "Hi!"}])
    assert ids[0] == 1 and ids.count(1) == 3  # <|im_start|> parsed as a control token


@pytest.mark.parametrize("attack", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }}",
    "{% set x = messages.append({'role': 'x', 'content': 'y'}) %}{{ x }}",
    "{{ raise_exception('nope') }}",
])
def test_hostile_templates_are_refused(attack):
    with pytest.raises(TemplateError):
        render(attack, [{"role": "user", "content": "hi"}])


def run_cli(*args, stdin=""):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "pyllm.run", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.parametrize("prompt", ["The three primary colors are", "def add(a, b):", "Paris is"])
def test_cli_greedy_completion_matches_api(model, prompt):
    r = run_cli(str(default_model(quiet=True)), "-p", prompt, "-n", "24", "--temp", "0")
    assert r.returncode == 0, r.stderr
    expected = model.complete(prompt, max_tokens=24, temperature=0)
    assert r.stdout == expected + "\n"
    assert "generated: 24 tokens" in r.stderr


def test_cli_chat_through_stdin_answers_two_turns():
    r = run_cli("--chat", "--temp", "0", "-n", "40", "--system", "You are a helpful assistant.",
                stdin="What is the capital of France?\nAnd of Spain?\n")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) >= 2 and "Paris" in r.stdout and "Madrid" in r.stdout
    assert r.stderr.count("[prompt:") == 2


def test_cli_user_errors_are_one_line():
    r = run_cli("/nonexistent/weights.bin", "-p", "x")
    assert r.returncode == 1 and r.stderr.strip() == "pyllm run: /nonexistent/weights.bin: no such file"
    r = run_cli("--temp", "warm")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_an_unknown_template_name_lists_the_built_in_ones():
    with pytest.raises(TemplateError, match="unknown chat template 'chatmll'; the built-in ones are chatml, llama2"):
        render("chatmll", MESSAGES)
    assert render("{{ messages[0]['content'] }}", MESSAGES) == MESSAGES[0]["content"]  # Jinja source still works
