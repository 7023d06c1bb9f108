"""Sessions: many conversations on one model, one thread each; busy sessions, cancelled
generations, and close() from another thread while a forward pass runs."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from pyllm import (ClosedError, ContextFullError, GenerationCancelledError, Model, PyllmError, Session,
                   SessionBusyError)
from pyllm.fetch import default_model
from pyllm.generation import stop_tokens

PROMPTS = ["The three primary colors are", "def add(a, b):", "Paris is the capital of",
           "Once upon a time, in a small village,"]


@pytest.fixture(scope="module")
def model():
    with Model(default_model(quiet=True), n_threads=1, n_ctx=256) as m:
        yield m


def greedy(model: Model, **extra) -> dict:
    """Options for greedy generation that never stops at an end token (so lengths are fixed)."""
    return dict(temperature=0, logit_bias={t: -1e9 for t in stop_tokens(model)}, **extra)


def tokens_of(gen) -> list[int]:
    gen.text()
    return gen.tokens


def test_threads_with_their_own_sessions_give_their_single_threaded_tokens(model):
    expected = []
    for p in PROMPTS:
        with model.session(n_threads=1) as s:
            expected.append(tokens_of(s.generate(p, max_tokens=64, **greedy(model))))
    assert all(len(e) == 64 for e in expected)

    barrier, results, errors = threading.Barrier(len(PROMPTS)), [None] * len(PROMPTS), []

    def run(i: int) -> None:
        try:
            with model.session(n_threads=1) as s:
                gen = s.generate(PROMPTS[i], max_tokens=64, **greedy(model))
                barrier.wait()
                results[i] = tokens_of(gen)
        except BaseException as exc:  # reported below; a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == expected


def in_thread(fn):
    """fn() run in another thread: its result, or the exception it raised."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["value"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out["value"]


def test_a_session_used_by_a_second_thread_raises(model):
    with model.session() as s:
        reference = tokens_of(s.generate(PROMPTS[0], max_tokens=12, **greedy(model)))
        s.reset()
        gen = s.generate(PROMPTS[0], max_tokens=12, **greedy(model))
        first = next(gen)  # the generation now holds the session, suspended between pieces
        for call in (lambda: s.eval([1]), lambda: s.logits([1, 2]), lambda: s.prefill([1]), s.reset,
                     lambda: s.generate("Hi"), lambda: s.complete("Hi")):
            err = in_thread(call)
            assert isinstance(err, SessionBusyError) and isinstance(err, PyllmError)
            assert "in use by another thread" in str(err) and "model.session()" in str(err)
        assert first + "".join(gen) == model.detokenize(reference)  # undisturbed
        assert gen.tokens == reference
        assert in_thread(lambda: s.eval([1])).shape == (model.config.vocab_size,)  # released when done


def test_the_model_default_session_is_one_session_too(model):
    gen = model.generate(PROMPTS[1], max_tokens=8, **greedy(model))
    next(gen)
    assert isinstance(in_thread(lambda: model.eval([1])), SessionBusyError)
    with model.session() as own:  # another thread is fine with a session of its own
        assert in_thread(lambda: own.eval([1])).shape == (model.config.vocab_size,)
    gen.close()
    assert gen.finish_reason is None
    assert in_thread(lambda: model.eval([1])).shape == (model.config.vocab_size,)  # close() released it


def test_a_later_call_of_the_same_thread_cancels_a_suspended_generation(model):
    with model.session() as fresh:
        expected = fresh.complete(PROMPTS[2], max_tokens=16, **greedy(model))
    with model.session() as s:
        first = s.generate(PROMPTS[0], max_tokens=30, **greedy(model))
        for i, _ in enumerate(first):
            if i == 2:
                break
        second = s.generate(PROMPTS[2], max_tokens=16, **greedy(model))
        assert next(second)  # takes the session over: the first generation is cancelled
        with pytest.raises(GenerationCancelledError, match="later call"):
            next(first)
        # the cancelled generation gave nothing back: the second still holds the session
        assert isinstance(in_thread(lambda: s.eval([1])), SessionBusyError)
        second.close()
        assert s.complete(PROMPTS[2], max_tokens=16, **greedy(model)) == expected

        third = s.generate(PROMPTS[0], max_tokens=10, **greedy(model))
        next(third)
        s.eval([5])  # a plain call cancels it too
        with pytest.raises(PyllmError):
            third.text()


def test_sessions_are_independent(model):
    ids = [model.tokenize(p) for p in PROMPTS[:2]]
    singles = []
    for tokens in ids:
        with model.session() as s:
            singles.append([s.eval(tokens)] + [s.eval([t]) for t in tokens[:4]])
    with model.session() as a, model.session() as b:
        steps = [(a.eval(ids[0]), b.eval(ids[1]))]
        for ta, tb in zip(ids[0][:4], ids[1][:4]):
            steps.append((a.eval([ta]), b.eval([tb])))
        for i, (la, lb) in enumerate(steps):
            np.testing.assert_array_equal(la, singles[0][i])
            np.testing.assert_array_equal(lb, singles[1][i])
        assert a.n_past == len(ids[0]) + 4 and b.n_past == len(ids[1]) + 4

        # generations on two sessions interleaved in one thread: neither disturbs the other
        ga = a.generate(PROMPTS[2], max_tokens=12, **greedy(model))
        gb = b.generate(PROMPTS[3], max_tokens=12, **greedy(model))
        for _ in zip(ga, gb):
            pass
        ga.text(), gb.text()
    with model.session() as s:
        assert ga.tokens == tokens_of(s.generate(PROMPTS[2], max_tokens=12, **greedy(model)))
        assert gb.tokens == tokens_of(s.generate(PROMPTS[3], max_tokens=12, **greedy(model)))


def test_truncate_rewinds_the_cache(model):
    ids = model.tokenize("The quick brown fox jumps over the lazy dog")
    with model.session() as s:
        whole = s.logits(ids)
        s.truncate(3)
        assert s.n_past == 3
        np.testing.assert_array_equal(s.eval(ids[3:]), whole[-1])  # the rest again, on the kept prefix
        s.truncate(100)  # keeping more than the cache holds keeps it all
        assert s.n_past == len(ids)
        for bad in (-1, 1.5, True):
            with pytest.raises(ValueError, match="n_keep"):
                s.truncate(bad)
    with pytest.raises(ClosedError):
        s.truncate(0)


def test_unknown_sampling_options_are_named(model):
    with pytest.raises(ValueError, match="unknown option temprature; the sampling options are temperature"):
        model.generate("Hi", temprature=0)


def test_each_session_has_its_own_context(model):
    with model.session(n_ctx=8) as small, model.session(n_ctx=40) as big:
        assert isinstance(small, Session) and (small.n_ctx, big.n_ctx, model.n_ctx) == (8, 40, 256)
        tokens = list(range(10, 30))
        with pytest.raises(ContextFullError, match="0 of 8"):
            small.eval(tokens)
        assert big.eval(tokens).shape == (model.config.vocab_size,) and big.n_past == 20
        small.eval(tokens[:8])
        assert small.n_past == 8
    with pytest.raises(ValueError, match="n_ctx"):
        model.session(n_ctx=0)
    with pytest.raises(ValueError, match="n_threads"):
        model.session(n_threads=0)


def test_closed_session_and_closed_model_refuse_work():
    m = Model(default_model(quiet=True), n_threads=1, n_ctx=64)
    text = m.complete(PROMPTS[0], max_tokens=6, temperature=0)  # the model-level API: default session
    assert m.n_past > 0 and m.n_evaluated >= m.n_past
    s = m.session()
    s.eval([1, 2, 3])
    s.close()
    s.close()
    with pytest.raises(ClosedError, match="session is closed"):
        s.eval([1])
    assert m.complete(PROMPTS[0], max_tokens=6, temperature=0) == text  # the model is still fine

    other, unstarted = m.session(), m.generate(PROMPTS[0], max_tokens=4)
    m.close()
    m.close()
    calls = [lambda: m.eval([1]), lambda: m.logits([1]), lambda: m.prefill([1]), m.reset,
             lambda: m.generate("Hi"), lambda: m.complete("Hi"), lambda: m.chat([{"role": "user", "content": "Hi"}]),
             m.session, lambda: other.eval([1]), lambda: other.generate("Hi"), lambda: next(unstarted)]
    for call in calls:
        with pytest.raises(PyllmError, match="model was closed"):
            call()
    assert m.config.n_layers == 30 and m.tokenize("Hi")  # what lives in Python stays usable


CLOSE_SCRIPT = textwrap.dedent("""
    import threading, time
    import pyllm
    from pyllm.fetch import default_model
    from pyllm.generation import stop_tokens

    path = default_model(quiet=True)
    deferred = 0
    for round in range(4):
        model = pyllm.Model(path, n_threads=1, n_ctx=512)
        session = model.session() if round % 2 else model  # a session of its own, or the default one
        pieces, outcome, ready = [], [], threading.Event()

        def generate():
            try:
                bias = {t: -1e9 for t in stop_tokens(model)}
                for piece in session.generate("Once upon a time", max_tokens=400, temperature=0, logit_bias=bias):
                    pieces.append(piece)
                    if len(pieces) == 3:
                        ready.set()
                outcome.append("finished")
            except pyllm.PyllmError as exc:
                outcome.append(f"{type(exc).__name__}: {exc}")
            finally:
                ready.set()

        thread = threading.Thread(target=generate)
        thread.start()
        ready.wait()
        time.sleep(0.002 * round)
        model.close()
        deferred += model._users > 0  # a forward pass was running: freeing waits for it
        thread.join()
        try:
            model.eval([1])
            outcome.append("eval after close ran")
        except pyllm.PyllmError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")
        print(round, len(pieces), " | ".join(outcome), flush=True)

    # a session closed from another thread while its prompt runs
    model = pyllm.Model(path, n_threads=1, n_ctx=512)
    session, started, result = model.session(), threading.Event(), []

    def prompt():
        started.set()
        try:
            result.append(session.eval(list(range(100, 500))).shape)
        except pyllm.PyllmError as exc:
            result.append(exc)

    thread = threading.Thread(target=prompt)
    thread.start()
    started.wait()
    time.sleep(0.01)
    session.close()
    thread.join()
    try:
        session.eval([1])
    except pyllm.ClosedError as exc:
        print("session:", exc)
    print("model still runs:", model.eval([1, 2]).shape == (model.config.vocab_size,))
    model.close()
    print("deferred", deferred)
""")


def test_close_from_another_thread_mid_generation_never_crashes():
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", CLOSE_SCRIPT], capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, (r.returncode, r.stderr)  # a segfault would be -11
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    rounds = [line.split(" ", 2) for line in lines[:4]]
    for _, n_pieces, outcome in rounds:
        assert 3 <= int(n_pieces) < 400
        assert outcome == "ClosedError: the model was closed | ClosedError: the model was closed", outcome
    assert lines[4] == "session: the session is closed"
    assert lines[5] == "model still runs: True"
    assert int(lines[6].split()[1]) >= 1  # at least one close() came while a forward pass ran


def test_threads_taking_turns_and_a_forked_child_get_the_same_logits():
    """The C core's worker threads belong to each session (csrc/team.c), not to the thread that
    calls: a model used in turn by several threads gives the same logits as from one, and so does a
    child made by fork() after the model has run (fork copies only the calling thread, so the child
    starts the session's workers anew instead of waiting on the parent's)."""
    with Model(default_model(quiet=True), n_threads=2, n_ctx=256) as m:
        tokens = m.tokenize(PROMPTS[3])
        expected = m.logits(tokens)
        results = []
        for _ in range(3):
            t = threading.Thread(target=lambda: results.append(m.logits(tokens)))
            t.start()
            t.join()
        for got in results:
            np.testing.assert_array_equal(got, expected)
        pid = os.fork()
        if pid == 0:  # the child: any failure is its exit status
            try:
                os._exit(0 if np.array_equal(m.logits(tokens), expected) else 1)
            except BaseException:
                os._exit(2)
        deadline = time.monotonic() + 120
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the forked child did not finish its forward pass in 120 s")
            time.sleep(0.05)
        assert os.waitstatus_to_exitcode(status) == 0
