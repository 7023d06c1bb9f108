"""Careless callers and odd paths: each case gets a PyllmError or ValueError naming the argument or
the file, never a hang, a raw TypeError or a silently odd result."""
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from pyllm import Model
from pyllm import core
from pyllm.convert import convert
from reference import random_model
from test_model import TOKENS, config


@pytest.fixture
def tiny(tmp_path):
    random_model(tmp_path / "m.bin", config("gqa", ctx=128))
    return tmp_path / "m.bin"


def test_fifos_and_directories_are_refused_without_blocking(tmp_path, tiny):
    os.mkfifo(tmp_path / "pipe")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.join(os.path.dirname(__file__))!r})
        from pyllm import FormatError, Model, Tokenizer
        from pyllm.convert import convert
        for call in (lambda p: Model(p), Tokenizer.from_file, lambda p: convert(p, {str(tmp_path / 'out.bin')!r})):
            for path in ({str(tmp_path / 'pipe')!r}, {str(tmp_path)!r}):
                try:
                    call(path)
                except FormatError as exc:
                    print(exc)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 6, r.stdout
    assert sum("a FIFO; a model file must be a regular file" in line for line in lines) == 3
    assert sum("a directory" in line or "not a Hugging Face model directory" in line for line in lines) == 3


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, tiny, umask, mode):
    old = os.umask(umask)
    try:
        random_model(tmp_path / "w.bin", config("gqa"))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "w.bin").st_mode & 0o777 == mode


def test_thread_counts_are_bounded(tiny):
    with pytest.raises(ValueError, match=r"n_threads must be a positive integer of at most 512, got 513"):
        Model(tiny, n_threads=513)
    with Model(tiny, n_threads=1) as m:
        with pytest.raises(ValueError, match="n_threads must be a positive integer of at most 512"):
            m.session(n_threads=10 ** 6)


def test_a_context_beyond_the_bound_is_clamped_and_said(tiny, monkeypatch):
    monkeypatch.setattr(core, "MAX_CTX", 64)  # the model was made with a 128-token context
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Model(tiny, n_threads=1) as m:
            assert m.n_ctx == 64
            m.eval(TOKENS)
    assert any("n_ctx defaults to 64" in str(w.message) for w in caught)


@pytest.mark.parametrize("option, message", [
    ({"temperature": "hot"}, "temperature must be a number, got 'hot'"),
    ({"top_k": 1.5}, "top_k must be an integer, got 1.5"),
    ({"top_p": None}, "top_p must be a number, got None"),
    ({"seed": "x"}, "seed must be an integer, got 'x'"),
    ({"repeat_last_n": True}, "repeat_last_n must be an integer, got True"),
    ({"logit_bias": {"5": 1.0}}, "logit_bias must map integer token ids to numbers"),
    ({"logit_bias": [5]}, "logit_bias must map token ids to biases"),
])
def test_sampling_arguments_of_the_wrong_kind_are_named(tiny, option, message):
    with Model(tiny, n_threads=1) as m:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            m.generate(TOKENS, max_tokens=2, **option)


def test_numpy_numbers_are_fine_as_sampling_arguments():
    import numpy as np
    from pyllm.sampling import Sampler, SamplingParams
    params = SamplingParams(temperature=np.float32(0.5), top_k=np.int64(5), seed=np.int64(3),
                            logit_bias={np.int64(3): np.float32(-1.0)})
    params.check(97)
    assert 0 <= Sampler(params)(np.arange(97, dtype=np.float32), []) < 97


def test_converting_onto_a_fifo_source_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "src")
    with pytest.raises(Exception, match="FIFO"):
        convert(tmp_path / "src", tmp_path / "out.bin", progress=False)
