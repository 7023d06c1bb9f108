"""The fuzzer (tests/fuzzing.py) in the default suite: a seeded, bounded campaign over every input
format must find no defect, and the harness itself must tell each kind of failure apart.

`make fuzz` runs the same code for longer. A failure lists each case as format:seed:index;
`python tests/fuzzing.py replay CASE` reruns it in-process with its traceback.
"""
import os
import signal
import time

import pytest

import fuzzing
from fuzzing import Case, Result
from pyllm import FormatError

SEED = 0
CASES = 300  # per format: about 25 ms each on valid-or-refused input, so the suite stays short
TIMEOUT = 10.0  # seconds per case; a case takes milliseconds, so only a hang or a runaway comes near it
MEMORY_MB = 512  # per case beyond what the interpreter has mapped; the inputs are tiny models


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return fuzzing.build_bases(str(tmp_path_factory.mktemp("fuzz-bases")))


def run(cases, bases, tmp_path, **kw):
    return fuzzing.run_cases(cases, bases, str(tmp_path), workers=2, timeout=TIMEOUT, mem_mb=MEMORY_MB, **kw)


def test_valid_inputs_pass_the_whole_pipeline(bases, tmp_path):
    """The unmutated inputs load, convert, reload and generate: the campaign starts from valid files."""
    cases = [Case(f, SEED, -i) for f in fuzzing.FORMATS for i in (1, 2, 3)]
    results = run(cases, bases, tmp_path)
    assert [(str(r.case), r.outcome) for r in results] == [(str(c), "ok") for c in cases], \
        fuzzing.summarize_defects(results)
    assert {r.stage for r in results} == {"generate", "tokenize"}


def _tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cases_are_reproducible(bases, tmp_path):
    """(format, seed, index) alone determines a case's files; other indexes give other files."""
    for fmt in fuzzing.FORMATS:
        trees, descriptions = [], []
        for name, index in (("a", 17), ("b", 17), ("c", 18)):
            (tmp_path / fmt / name).mkdir(parents=True)
            descriptions.append(fuzzing.make_case(Case(fmt, 3, index), bases, str(tmp_path / fmt / name))[1])
            trees.append(_tree(tmp_path / fmt / name))
        assert trees[0] == trees[1] and descriptions[0] == descriptions[1] and trees[0], fmt
        assert trees[0] != trees[2], fmt


@pytest.mark.parametrize("body,outcome,error", [
    (lambda wd: Result(Case("x", 0, 0), "ok"), "ok", ""),
    (lambda wd: os.kill(os.getpid(), signal.SIGSEGV), "signal", "SIGSEGV"),
    (lambda wd: time.sleep(60), "timeout", "timeout"),
    (lambda wd: os._exit(3), "exception", "NoResult"),
    (lambda wd: bytearray(512 << 20), "memory", "MemoryError"),  # fits the machine, not the limit
])
def test_isolated_runs_are_classified(tmp_path, body, outcome, error):
    """A crash, a hang, a silent exit and memory beyond the limit are each told apart."""
    def fn(workdir):
        try:
            return body(workdir)
        except MemoryError:
            return Result(Case("x", 0, 0), "memory", error="MemoryError")
    proc = fuzzing.Isolated(fn, Case("x", 0, 0), str(tmp_path), timeout=2.0, mem_mb=256)
    start = time.monotonic()
    while (result := proc.poll()) is None:
        assert time.monotonic() - start < 30
        time.sleep(0.01)
    assert (result.outcome, result.error) == (outcome, error)


def test_exceptions_are_classified(bases, tmp_path, monkeypatch):
    """PyllmError is expected; any other exception, MemoryError and an unloadable conversion are defects."""
    for exc, outcome in [(FormatError("x.bin: bad"), "error"), (KeyError("tokens"), "exception"),
                         (MemoryError(), "memory"), (fuzzing.Unloadable("no"), "unloadable")]:
        def pipeline(*args, exc=exc):
            if isinstance(exc, fuzzing.Unloadable):
                raise exc from ValueError("refused")
            raise exc
        monkeypatch.setattr(fuzzing, "run_pipeline", pipeline)
        (tmp_path / outcome).mkdir()
        r = fuzzing.execute(Case("gguf", 0, 1), bases, str(tmp_path / outcome))
        assert r.outcome == outcome and r.defect == (outcome in fuzzing.DEFECTS)
        assert r.mutation and "gguf:0:1" in r.describe()


@pytest.mark.parametrize("fmt", fuzzing.FORMATS)
def test_fuzz_finds_no_defects(bases, tmp_path, fmt):
    """Zero signals, timeouts, MemoryErrors and exceptions outside PyllmError, and every conversion
    that succeeds loads."""
    results = run([Case(fmt, SEED, i) for i in range(CASES)], bases, tmp_path)
    assert len(results) == CASES
    defects = [r for r in results if r.defect]
    assert not defects, (f"{len(defects)} of {len(results)} {fmt} cases found defects:\n"
                         + "\n".join(r.describe() for r in defects))
