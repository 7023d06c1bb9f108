"""The engine on the real model: many requests at once give what each gives alone (greedy and
seeded), stop strings, logprobs against the model's own logits, cancellation, the queue limit,
admission against the KV budget, and asyncio streaming."""
import asyncio
import sys
import threading

import numpy as np
import pytest

from pyllm import ContextFullError, Engine, Model, QueueFullError
from pyllm.fetch import default_model

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "Water boils at",
           "The three primary colors are", "import numpy as np\n", "Dear Sir,", "1, 2, 3, 4,"]


@pytest.fixture(scope="module")
def model():
    with Model(default_model(quiet=True), n_ctx=512) as m:
        yield m


def test_concurrent_requests_equal_each_alone(model):
    alone = [model.generate(p, max_tokens=20, temperature=0) for p in PROMPTS]
    alone_text = [g.text() for g in alone]
    seeded_alone = model.complete(PROMPTS[0], max_tokens=20, temperature=0.9, seed=7, top_k=0, top_p=0.9)
    with Engine(model, max_running=8) as engine:
        streams = [engine.submit(p, max_tokens=20, temperature=0) for p in PROMPTS]
        seeded = engine.submit(PROMPTS[0], max_tokens=20, temperature=0.9, seed=7, top_k=0, top_p=0.9)
        texts = [s.text() for s in streams]
        assert seeded.text() == seeded_alone
    assert texts == alone_text
    for s, g in zip(streams, alone):
        assert s.usage.completion_tokens == len(g.tokens)
        assert s.usage.prompt_tokens == g.n_prompt
        assert s.finish_reason == ("length" if g.finish_reason == "length" else g.finish_reason)


def test_more_requests_than_slots_all_finish(model):
    with Engine(model, max_running=2, prefill_chunk=3) as engine:
        streams = [engine.submit(p, max_tokens=6, temperature=0) for p in PROMPTS]
        texts = [s.text() for s in streams]
    assert texts == [model.complete(p, max_tokens=6, temperature=0) for p in PROMPTS]


def test_stop_string_is_not_emitted(model):
    full = model.complete(PROMPTS[3], max_tokens=24, temperature=0)
    stop = full[5:9]
    with Engine(model) as engine:
        s = engine.submit(PROMPTS[3], max_tokens=24, temperature=0, stop=[stop])
        text = s.text()
    assert s.finish_reason == "stop"
    assert text == full[:full.index(stop)]


def test_logprobs_are_the_models_distribution(model):
    tokens = model.tokenize(PROMPTS[0])
    with Engine(model) as engine:
        steps = list(engine.submit(tokens, max_tokens=3, temperature=0, logprobs=5))
    history = list(tokens)
    for step in steps:
        logits = model.logits(history)[-1].astype(np.float64)
        logp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        assert step.token == int(np.argmax(logp))
        assert step.logprob == pytest.approx(float(logp[step.token]), abs=1e-5)
        expect = np.argsort(-logp, kind="stable")[:5]
        assert [t for t, _ in step.top_logprobs] == expect.tolist()
        assert [lp for _, lp in step.top_logprobs] == pytest.approx(logp[expect].tolist(), abs=1e-5)
        history.append(step.token)


def test_cancel_ends_a_stream_and_frees_its_slot(model):
    with Engine(model, max_running=1) as engine:
        long = engine.submit(PROMPTS[2], max_tokens=400, temperature=0)
        next(iter(long))
        waiting = engine.submit(PROMPTS[1], max_tokens=4, temperature=0)
        long.cancel()
        rest = list(long)
        assert long.finish_reason == "cancelled" and len(rest) < 399
        assert waiting.text() == model.complete(PROMPTS[1], max_tokens=4, temperature=0)
        assert engine.stats().running == 0 and engine.stats().kv_blocks_used == 0


def test_queue_limit_and_context_are_refused_up_front(model):
    with Engine(model, max_running=1, max_queued=1, n_ctx=64) as engine:
        first = engine.submit(PROMPTS[0], max_tokens=30, temperature=0)
        next(iter(first))  # running, so the queue is empty again
        engine.submit(PROMPTS[1], max_tokens=2, temperature=0)
        with pytest.raises(QueueFullError):
            engine.submit(PROMPTS[2], max_tokens=2, temperature=0)
        with pytest.raises(ContextFullError):
            engine.submit(list(range(100, 170)), max_tokens=2)
        with pytest.raises(ValueError, match="temperature"):
            engine.submit(PROMPTS[0], temperature=-1)
        with pytest.raises(ValueError, match="logprobs"):
            engine.submit(PROMPTS[0], logprobs=21)
        with pytest.raises(ValueError, match="seed"):  # in the caller's thread, not the scheduler's
            engine.submit(PROMPTS[0], seed=-1)


def test_kv_budget_admits_only_what_fits(model):
    per_token = 2 * model.config.n_layers * model.config.n_kv_heads * model.config.head_dim * 4
    budget = per_token * 40  # one request of 5 + 24 + 1 tokens fits, two do not
    with Engine(model, max_running=4, kv_budget=budget) as engine:
        streams = [engine.submit(p, max_tokens=24, temperature=0) for p in PROMPTS[:3]]
        seen_running = []

        def watch():
            while not all(s.done for s in streams):
                seen_running.append(engine.stats().running)

        watcher = threading.Thread(target=watch)
        watcher.start()
        texts = [s.text() for s in streams]
        watcher.join()
    assert max(seen_running) == 1
    assert texts == [model.complete(p, max_tokens=24, temperature=0) for p in PROMPTS[:3]]


def test_stats_from_another_thread_while_requests_run(model):
    """/metrics reads stats() from the server's thread while the scheduler steps: it must never
    see the cache half-changed (a prefix registered mid-count raised "OrderedDict mutated during
    iteration"), and once every request has ended all blocks are free."""
    errors, reads = [], []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as possible: races show at once
    try:
        with Engine(model, max_running=4) as engine:
            streams = [engine.submit(" ".join([PROMPTS[i % 4]] * 20), max_tokens=16, temperature=0)
                       for i in range(8)]

            def watch():
                try:
                    while not all(s.done for s in streams):
                        reads.append(engine.stats())
                except Exception as exc:  # reported below, in the test's thread
                    errors.append(exc)

            watcher = threading.Thread(target=watch)
            watcher.start()
            for s in streams:
                s.text()
            watcher.join()
            final = engine.stats()
    finally:
        sys.setswitchinterval(switch)
    assert not errors
    assert len(reads) > 100
    assert final.running == final.queued == 0 and final.kv_blocks_used == 0
    assert max(r.kv_blocks_used for r in reads) > 0


def test_async_iteration(model):
    async def collect(engine):
        streams = [engine.submit(p, max_tokens=8, temperature=0) for p in PROMPTS[:3]]

        async def text(s):
            return "".join([step.text async for step in s])
        return await asyncio.gather(*(text(s) for s in streams))

    with Engine(model) as engine:
        texts = asyncio.run(collect(engine))
    assert texts == [model.complete(p, max_tokens=8, temperature=0) for p in PROMPTS[:3]]


def test_close_cancels_running_and_queued(model):
    engine = Engine(model, max_running=1)
    a = engine.submit(PROMPTS[0], max_tokens=300, temperature=0)
    b = engine.submit(PROMPTS[1], max_tokens=300, temperature=0)
    next(iter(a))
    engine.close()
    list(a), list(b)
    assert a.finish_reason == "cancelled" and b.finish_reason == "cancelled"


def test_request_larger_than_the_budget_is_cut_not_crashed(model):
    cfg = model.config
    per_block = 2 * 16 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4
    with Engine(model, max_running=2, kv_budget=per_block * 2) as engine:  # 32 positions in all
        big = engine.submit(PROMPTS[2], max_tokens=100, temperature=0)
        small = engine.submit(PROMPTS[1], max_tokens=4, temperature=0)
        text = big.text()
        assert big.finish_reason == "context"
        n_prompt = len(model.tokenize(PROMPTS[2]))
        assert big.usage.completion_tokens == 32 - n_prompt + 1  # the last one sampled, not run
        assert model.complete(PROMPTS[2], max_tokens=100, temperature=0).startswith(text)
        assert small.text() == model.complete(PROMPTS[1], max_tokens=4, temperature=0)


def test_choices_read_the_prompt_once_and_sample_apart(model):
    prompt = PROMPTS[4]
    with Engine(model, max_running=4) as engine:
        streams = engine.submit_choices(prompt, 3, max_tokens=16, temperature=0.9, seed=5, top_k=0, top_p=0.95)
        texts = [s.text() for s in streams]
        assert engine.stats().prompt_tokens == len(model.tokenize(prompt))  # read once for the three
        assert engine.stats().kv_blocks_used == 0
    assert texts == [model.complete(prompt, max_tokens=16, temperature=0.9, seed=5 + i, top_k=0, top_p=0.95)
                     for i in range(3)]
    assert len(set(texts)) > 1


def test_call_runs_on_the_scheduler_thread_between_steps(model):
    """Engine.call runs work on the engine's own thread (so one thread drives the model's core):
    embeddings made there while requests decode equal Model.embed's, the requests' text is what
    it is alone, errors reach the caller, and a closed engine refuses more work."""
    texts = ["a sentence to embed", "another one, a little longer than the first"]
    expected_vectors = model.embed(texts)
    expected_text = model.complete(PROMPTS[2], max_tokens=24, temperature=0)
    with Engine(model, max_running=2) as engine:
        stream = engine.submit(PROMPTS[2], max_tokens=24, temperature=0)
        where = engine.call(lambda: threading.current_thread().name).result(timeout=60)
        vectors = engine.call(lambda: model.embed(texts)).result(timeout=60)
        failing = engine.call(lambda: model.embed([]))
        with pytest.raises(ValueError):
            failing.result(timeout=60)
        assert stream.text() == expected_text
    assert where == engine._thread.name and where != threading.current_thread().name
    np.testing.assert_array_equal(vectors, expected_vectors)
    with pytest.raises(Exception, match="closed"):
        engine.call(lambda: None)


def test_the_last_token_of_a_length_cut_is_not_run(model):
    """A request that ends at max_tokens runs its prompt and every generated token but the last
    (nothing would read the logits after it), as Model.generate does."""
    with Engine(model, max_running=1) as engine:
        runs = []
        forward = engine.cache.forward
        engine.cache.forward = lambda work, hidden=False: (runs.append(sum(len(t) for _, t, _ in work)),
                                                           forward(work, hidden))[1]
        tokens = model.tokenize(PROMPTS[0])
        stream = engine.submit(tokens, max_tokens=4, temperature=0, logit_bias={t: -1e9 for t in engine._ends})
        stream.text()
    assert stream.finish_reason == "length" and stream.usage.completion_tokens == 4
    assert runs == [len(tokens), 1, 1, 1]
