"""`pyllm serve` as a client sees it: the official `openai` client (and httpx for raw HTTP) against
a real server process on SmolLM2, on a free loopback port. Answers are checked against the same
model run in this process: greedy text equals Model.complete / Model.chat, logprobs equal
log_softmax of Model.logits, embeddings equal Model.embed. Then the error cases in OpenAI's shape,
a client that disconnects mid-stream (its request stops running), a full queue (429), the API key,
and a graceful SIGTERM."""
from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import openai
import pytest

from served import CTX, NAME, ROOT, Served

KEY = "sk-test-2f9c"
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def model(smollm2):
    return smollm2


@pytest.fixture(scope="module")
def server(smollm2_server):
    return smollm2_server


@pytest.fixture(scope="module")
def busy_server(model):
    """One request at a time, one waiting, an API key: for 429, 401 and SIGTERM."""
    srv = Served("--parallel", "1", "--max-queued", "1", "--api-key", KEY)
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    return server.client()


def no_end(model) -> dict[str, float]:
    """A logit_bias (OpenAI's -100) that keeps the model from ending its text."""
    ends = {model.tokenizer.eos_id, *(i for i, t in enumerate(model.tokenizer.tokens) if t in ("<|im_end|>", "<|endoftext|>"))}
    return {str(i): -100 for i in ends if i is not None}


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


# ------------------------------------------------------------------------------------ answers

def test_chat_equals_model_chat(client, model):
    r = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=16, temperature=0)
    expected = model.chat(MESSAGES, max_tokens=16, temperature=0, stream=True)
    text = expected.text()
    assert r.choices[0].message.content == text and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == ("length" if expected.finish_reason == "length" else "stop")
    assert r.usage.prompt_tokens == len(model.chat_prompt(MESSAGES))
    assert r.usage.completion_tokens == len(expected.tokens)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model == NAME and r.object == "chat.completion"


def test_streaming_chat_with_usage(client, model):
    whole = client.chat.completions.create(model=NAME, messages=MESSAGES, max_completion_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model=NAME, messages=MESSAGES, max_completion_tokens=16,
                                                 temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # the usage chunk comes last
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_of_a_list_of_prompts(client, model):
    r = client.completions.create(model=NAME, prompt=PROMPTS, max_tokens=8, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.text for c in r.choices] == [model.complete(p, max_tokens=8, temperature=0) for p in PROMPTS]
    assert r.usage.prompt_tokens == sum(len(model.tokenize(p)) for p in PROMPTS)
    assert r.usage.completion_tokens == 24 and all(c.finish_reason == "length" for c in r.choices)


def test_stop_penalties_and_logit_bias_reach_the_sampler(client, model):
    full = model.complete(PROMPTS[0], max_tokens=24, temperature=0)
    stop = full[6:10]
    r = client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=24, temperature=0, stop=[stop])
    assert r.choices[0].text == full[:full.index(stop)] and r.choices[0].finish_reason == "stop"

    first = model.tokenize(full, add_bos=False)[0]
    options = dict(max_tokens=8, temperature=0, presence_penalty=1.5, frequency_penalty=0.5)
    expected = model.complete(PROMPTS[0], logit_bias={first: -100.0}, **options)
    r = client.completions.create(model=NAME, prompt=PROMPTS[0], logit_bias={str(first): -100}, **options)
    assert r.choices[0].text == expected != full[:len(expected)]


def test_n_choices_use_seed_plus_index(client, model):
    sampling = dict(max_tokens=8, temperature=1.0)
    r = client.completions.create(model=NAME, prompt=PROMPTS[2], n=2, seed=5, **sampling)
    expected = [model.complete(PROMPTS[2], seed=s, top_k=0, top_p=1.0, min_p=0.0, **sampling) for s in (5, 6)]
    assert [c.text for c in r.choices] == expected
    assert r.usage.completion_tokens == 16
    # OpenAI's seeds are any int64; the sampler's are non-negative: they wrap around 2**64
    r = client.completions.create(model=NAME, prompt=PROMPTS[2], seed=-1, **sampling)
    assert r.choices[0].text == model.complete(PROMPTS[2], seed=2**64 - 1, top_k=0, top_p=1.0, min_p=0.0, **sampling)


def test_completion_logprobs_are_the_models_distribution(client, model):
    ids = model.tokenize(PROMPTS[1])
    gen = model.generate(ids, max_tokens=6, temperature=0)
    text = gen.text()
    r = client.completions.create(model=NAME, prompt=ids, max_tokens=6, temperature=0, logprobs=5)
    assert r.choices[0].text == text
    lp = r.choices[0].logprobs
    logits = model.logits(ids + gen.tokens[:-1])[len(ids) - 1:]
    piece = [model.tokenizer.token_bytes(t).decode("utf-8", "replace") for t in range(model.config.vocab_size)]
    assert lp.tokens == [piece[t] for t in gen.tokens]
    for i, (token, row) in enumerate(zip(gen.tokens, logits)):
        ref = log_softmax(row)
        top = np.argsort(-ref, kind="stable")[:5]
        assert lp.token_logprobs[i] == pytest.approx(ref[token], abs=1e-4)
        assert list(lp.top_logprobs[i]) == [piece[t] for t in top]
        assert list(lp.top_logprobs[i].values()) == pytest.approx(ref[top], abs=1e-4)
    assert lp.text_offset == list(np.cumsum([0] + [len(t) for t in lp.tokens[:-1]]))


def test_chat_logprobs_are_the_models_distribution(client, model):
    ids = model.chat_prompt(MESSAGES)
    gen = model.generate(ids, max_tokens=5, temperature=0)
    gen.text()
    r = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=5, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert [bytes(c.bytes) for c in content] == [model.tokenizer.token_bytes(t) for t in gen.tokens]
    logits = model.logits(ids + gen.tokens[:-1])[len(ids) - 1:]
    for c, row in zip(content, logits):
        ref = log_softmax(row)
        top = np.argsort(-ref, kind="stable")[:3]
        assert [bytes(t.bytes) for t in c.top_logprobs] == [model.tokenizer.token_bytes(t) for t in top]
        assert [t.logprob for t in c.top_logprobs] == pytest.approx(ref[top], abs=1e-4)


def test_embeddings_are_model_embed(client, model):
    texts = ["The cat sat on the mat.", "Quantum field theory"]
    expected = model.embed(texts)  # the model's own pooling (see docs/serving.md)
    for fmt in ("float", "base64"):  # asked for explicitly, base64 comes back as the string
        r = client.embeddings.create(model=NAME, input=texts, encoding_format=fmt)
        got = np.array([d.embedding if fmt == "float" else np.frombuffer(base64.b64decode(d.embedding), "<f4")
                        for d in r.data], dtype=np.float32)
        assert got.shape == (2, model.config.dim)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert r.usage.prompt_tokens == sum(len(model.tokenize(t)) for t in texts)


def test_models(client):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_tokenize_round_trip(server, model):
    text = "Hello <|im_start|> wörld, ça va? 日本語"
    r = httpx.post(server.url + "/tokenize", json={"content": text}, timeout=10)
    tokens = r.json()["tokens"]
    assert tokens == model.tokenize(text, add_bos=False, special=True)
    r = httpx.post(server.url + "/detokenize", json={"tokens": tokens}, timeout=10)
    assert r.json() == {"content": text}
    pieces = httpx.post(server.url + "/tokenize", json={"content": "ça", "with_pieces": True}, timeout=10).json()
    assert [p["id"] for p in pieces["tokens"]] == model.tokenize("ça", add_bos=False)


def test_metrics_count_a_request(server, client):
    before = server.metrics()
    r = client.completions.create(model=NAME, prompt=PROMPTS[2], max_tokens=7, temperature=0)
    after = server.metrics()
    assert after["pyllm_generation_tokens_total"] - before["pyllm_generation_tokens_total"] == r.usage.completion_tokens
    assert after["pyllm_prompt_tokens_total"] - before["pyllm_prompt_tokens_total"] == r.usage.prompt_tokens
    for h in ("pyllm_time_to_first_token_seconds", "pyllm_time_per_output_token_seconds"):
        assert after[h + "_count"] - before[h + "_count"] == 1
        assert after[h + '_bucket{le="+Inf"}'] == after[h + "_count"]
    assert after['pyllm_requests_finished_total{reason="length"}'] - \
        before['pyllm_requests_finished_total{reason="length"}'] == 1
    assert after["pyllm_requests_running"] == 0 and after["pyllm_kv_blocks_used"] == 0


# ------------------------------------------------------------------------------------ errors

def assert_error(r: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param and err["code"] == code, err
    return err


def test_bad_requests_are_400_in_openai_shape(server, model):
    url = server.url + "/v1/chat/completions"
    ok = {"model": NAME, "messages": MESSAGES, "max_tokens": 2}
    assert_error(httpx.post(url, content=b'{"model": "smollm2", "messages": [', timeout=10), 400)
    assert_error(httpx.post(url, content=b"[1, 2]", timeout=10), 400)
    assert_error(httpx.post(url, json={**ok, "temperature": "hot"}, timeout=10), 400, "temperature")
    assert_error(httpx.post(url, json={**ok, "max_tokens": 2.5}, timeout=10), 400, "max_tokens")
    assert_error(httpx.post(url, json={**ok, "messages": "hi"}, timeout=10), 400, "messages")
    assert_error(httpx.post(url, json={**ok, "temperature": -1}, timeout=10), 400, "temperature")
    assert_error(httpx.post(url, json={**ok, "logit_bias": {"x": 1}}, timeout=10), 400, "logit_bias")
    assert_error(httpx.post(url, json={**ok, "frobnicate": True}, timeout=10), 400, "frobnicate")
    assert_error(httpx.post(url, json={**ok, "tools": [{"type": "function"}]}, timeout=10), 400, "tools")
    assert_error(httpx.post(url, json={k: v for k, v in ok.items() if k != "messages"}, timeout=10), 400, "messages")
    assert_error(httpx.post(server.url + "/v1/completions", json={"model": NAME, "prompt": [[]]}, timeout=10),
                 400, "prompt")
    assert_error(httpx.post(server.url + "/detokenize", json={"tokens": [10 ** 9]}, timeout=10), 400, "tokens")
    assert_error(httpx.post(url, json={**ok, "model": "gpt-4o"}, timeout=10), 404, "model", "model_not_found")
    assert_error(httpx.get(server.url + "/v1/nothing", timeout=10), 404)
    assert_error(httpx.post(url, content=b" " * (9 << 20), timeout=10), 413)


def test_prompt_longer_than_the_context_is_400(client, server):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=NAME, prompt="hello " * (CTX + 10), max_tokens=4)
    assert e.value.code == "context_length_exceeded" and e.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi " * CTX}])
    assert e.value.code == "context_length_exceeded"
    assert server.metrics()['pyllm_requests_rejected_total{reason="context_full"}'] >= 2


def test_disconnect_mid_stream_cancels_the_request(server, model):
    body = {"model": NAME, "prompt": PROMPTS[2], "max_tokens": CTX - 16, "temperature": 0, "stream": True,
            "logit_bias": no_end(model)}
    before = server.metrics()
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", server.url + "/v1/completions", json=body) as r:
            lines = r.iter_lines()  # (dropping this iterator would close the connection)
            line = next(line for line in lines if line.startswith("data: "))
            assert json.loads(line[6:])["choices"][0]["finish_reason"] is None
            assert server.metrics()["pyllm_requests_running"] == 1
    deadline = time.monotonic() + 10
    while (m := server.metrics())["pyllm_requests_running"] != 0:
        assert time.monotonic() < deadline, "the request still runs after its client went away"
        time.sleep(0.05)
    assert m["pyllm_kv_blocks_used"] == 0
    assert m['pyllm_requests_finished_total{reason="cancelled"}'] - \
        before['pyllm_requests_finished_total{reason="cancelled"}'] == 1
    assert m["pyllm_generation_tokens_total"] - before["pyllm_generation_tokens_total"] < CTX - 16


def test_disconnect_while_waiting_for_a_whole_answer_cancels_it(server, model):
    body = {"model": NAME, "prompt": PROMPTS[0], "max_tokens": CTX - 16, "temperature": 0,
            "logit_bias": no_end(model)}
    before = server.metrics()
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(server.url + "/v1/completions", json=body, timeout=httpx.Timeout(10, read=1.0))
    deadline = time.monotonic() + 10
    while (m := server.metrics())["pyllm_requests_running"] != 0:
        assert time.monotonic() < deadline, "the request still runs after its client went away"
        time.sleep(0.05)
    assert m['pyllm_requests_finished_total{reason="cancelled"}'] - \
        before['pyllm_requests_finished_total{reason="cancelled"}'] == 1
    assert m["pyllm_generation_tokens_total"] - before["pyllm_generation_tokens_total"] < CTX - 16


# ------------------------------------------------------------------------------------ the busy server

def test_api_key(busy_server):
    url = busy_server.url
    assert httpx.get(url + "/health", timeout=10).status_code == 200  # probes need no key
    assert_error(httpx.get(url + "/v1/models", timeout=10), 401, code="invalid_api_key")
    assert_error(httpx.get(url + "/metrics", timeout=10), 401, code="invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        busy_server.client("wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        busy_server.client(KEY[:-1]).completions.create(model=NAME, prompt="Hi", max_tokens=1)
    assert busy_server.client(KEY).completions.create(model=NAME, prompt="Hi", max_tokens=1).usage.completion_tokens == 1


def test_full_queue_is_429(busy_server, model):
    headers = {"Authorization": "Bearer " + KEY}
    body = {"model": NAME, "prompt": PROMPTS[0], "max_tokens": 400, "temperature": 0, "stream": True,
            "logit_bias": no_end(model)}
    client = busy_server.client(KEY)
    with httpx.Client(timeout=30, headers=headers) as http:
        with http.stream("POST", busy_server.url + "/v1/completions", json=body) as running:
            running_lines = running.iter_lines()  # kept: dropping it would close the connection
            next(running_lines)  # the first request runs
            with http.stream("POST", busy_server.url + "/v1/completions", json=body) as queued:
                assert queued.status_code == 200  # submitted: it waits in the queue
                with pytest.raises(openai.RateLimitError) as e:
                    client.completions.create(model=NAME, prompt="Hi", max_tokens=1)
                assert e.value.status_code == 429 and e.value.code == "rate_limit_exceeded"
                assert httpx.get(busy_server.url + "/health/ready", timeout=10).status_code == 503
                assert httpx.get(busy_server.url + "/health", timeout=10).status_code == 200
    deadline = time.monotonic() + 10
    while (m := busy_server.metrics(headers))["pyllm_requests_running"] + m["pyllm_requests_queued"]:
        assert time.monotonic() < deadline, "requests still run after their clients went away"
        time.sleep(0.05)
    assert m['pyllm_requests_rejected_total{reason="queue_full"}'] == 1
    assert httpx.get(busy_server.url + "/health/ready", timeout=10).status_code == 200


def test_sigterm_lets_running_requests_finish(busy_server):
    body = {"model": NAME, "prompt": PROMPTS[1], "max_tokens": 64, "temperature": 0, "stream": True}
    with httpx.Client(timeout=30, headers={"Authorization": "Bearer " + KEY}) as http:
        with http.stream("POST", busy_server.url + "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            next(lines)
            busy_server.proc.send_signal(signal.SIGTERM)
            events = [line[6:] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")
    code, err = busy_server.stop()
    assert code == 0 and "Traceback" not in err, err[-3000:]


# ------------------------------------------------------------------------------------ the command line

def test_kv_options_reach_the_engine():
    from pyllm.cli import parser
    from pyllm.server.command import engine_options

    args = parser().parse_args(["serve", "--kv-type", "f16", "--kv-budget", "1.5", "--parallel", "3"])
    assert engine_options(args) == {"max_running": 3, "max_queued": 64, "kv_budget": 3 << 19, "kv_type": "f16"}
    assert engine_options(parser().parse_args(["serve"]))["kv_type"] == "f32"


def test_bad_command_lines_are_one_line_errors(tmp_path):
    for args, part in (([str(tmp_path / "missing.bin")], "no such file"),
                       ([NAME, "--port", "70000"], "--port"),
                       ([NAME, "--kv-budget", "-1"], "--kv-budget")):
        r = subprocess.run([sys.executable, "-m", "pyllm", "serve", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and part in r.stderr, r.stderr
