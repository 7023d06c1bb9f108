"""Careless callers and odd paths: each case gets a PyllmError or ValueError naming the argument or
the file, never a hang, a raw TypeError or a silently odd result."""
import errno
import os
import subprocess
import sys
import tempfile
import textwrap
import warnings

import pytest

from pyllm import Model
from pyllm import cli, core
from pyllm.convert import convert
from reference import random_model
from test_gguf import tiny_gguf
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


# ---- the command line: an output or cache that cannot be written is one line, never a traceback --

def run_pyllm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyllm", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=os.path.dirname(os.path.dirname(__file__)))


def assert_one_line(stderr: str, *parts: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert all(p in lines[0] for p in parts), lines[0]


AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_WRITES_ANYWHERE = "root creates files in a directory whatever its mode"


@pytest.mark.parametrize("case", ["missing directory", "a directory", "a device", "read-only directory"])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path, case):
    tiny_gguf(tmp_path / "m.gguf")
    out, reason = {
        "missing directory": (tmp_path / "nope" / "m.bin", "No such file or directory"),
        "a directory": (tmp_path / "d", "is a directory"),
        "a device": ("/dev/full", "not a regular file"),
        "read-only directory": (tmp_path / "ro" / "m.bin", "Permission denied"),
    }[case]
    if case == "a directory":
        (tmp_path / "d").mkdir()
    if case == "read-only directory":
        if AS_ROOT:
            pytest.skip(ROOT_WRITES_ANYWHERE)
        (tmp_path / "ro").mkdir(mode=0o555)
    r = run_pyllm("convert", str(tmp_path / "m.gguf"), str(out), "-q")
    assert r.returncode == 1
    assert_one_line(r.stderr, f"pyllm convert: {out}: ", reason)
    assert not list(tmp_path.rglob(".pyllm-*")) and os.path.exists("/dev/full")


def test_a_full_disk_is_one_line_naming_the_output(tmp_path, monkeypatch, capsys):
    tiny_gguf(tmp_path / "m.gguf")
    real_fdopen = os.fdopen

    class FullDisk:  # the temporary file, on a disk that fills up at the first write
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    assert cli.main(["convert", str(tmp_path / "m.gguf"), str(tmp_path / "m.bin"), "-q"]) == 1
    assert_one_line(capsys.readouterr().err, f"pyllm convert: {tmp_path / 'm.bin'}: No space left on device")
    assert os.listdir(tmp_path) == ["m.gguf"]


def test_a_directory_refusing_new_files_is_one_line(tmp_path, monkeypatch, capsys):
    """What an unwritable directory does, also where the tests run as root (who may write anywhere)."""
    tiny_gguf(tmp_path / "m.gguf")

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir, ".pyllm-x1y2.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert cli.main(["convert", str(tmp_path / "m.gguf"), str(tmp_path / "m.bin"), "-q"]) == 1
    assert_one_line(capsys.readouterr().err, f"pyllm convert: {tmp_path / 'm.bin'}: Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    monkeypatch.setenv("PYLLM_CACHE", str(tmp_path / "cache"))
    assert cli.main(["fetch", "-q"]) == 1
    assert_one_line(capsys.readouterr().err, f"pyllm fetch: cache directory {tmp_path / 'cache'}: Permission denied")


@pytest.mark.parametrize("case", ["a file", "under a file", "read-only directory"])
def test_a_cache_that_cannot_hold_files_is_one_line(tmp_path, case):
    (tmp_path / "file").write_text("x")
    cache, reason = {"a file": (tmp_path / "file", "not a directory"),
                     "under a file": (tmp_path / "file" / "sub", "Not a directory"),
                     "read-only directory": (tmp_path / "ro", "Permission denied")}[case]
    if case == "read-only directory":
        if AS_ROOT:
            pytest.skip(ROOT_WRITES_ANYWHERE)
        cache.mkdir(mode=0o555)
    r = run_pyllm("fetch", "-q", env={"PYLLM_CACHE": str(cache)})
    assert r.returncode == 1
    assert_one_line(r.stderr, f"pyllm fetch: cache directory {cache}: {reason}")


def test_the_entry_point_reports_what_a_command_left_unreported(monkeypatch, capsys):
    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out.bin")

    monkeypatch.setattr(cli.COMMANDS["fetch"], "run", full)
    assert cli.main(["fetch"]) == 1
    assert capsys.readouterr().err == "pyllm: error: /data/out.bin: No space left on device\n"
