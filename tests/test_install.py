"""The installed package works without the source checkout: `pip install .` (not editable) into a
fresh virtual environment, then, from a directory outside the checkout, the `pyllm` command's
fetch, convert, run and perplexity, and the `python -m` spellings of the same commands; `pyllm serve`
without the server extra names the extra."""
import os
import shutil
import subprocess
import venv

import pytest

from pyllm.fetch import cache_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("pyllm", "csrc", "setup.py", "pyproject.toml", "README.md")  # what a source distribution holds


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin directory of a fresh venv with pyllm installed from a copy of the sources, environment)."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "_core.c"))
        else:
            shutil.copy2(path, src / name)
    venv.create(base / "venv", with_pip=True)
    bin_dir = base / "venv" / ("Scripts" if os.name == "nt" else "bin")
    r = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        str(src)], capture_output=True, text=True)
    assert r.returncode == 0, f"pip install failed:\n{r.stdout}\n{r.stderr}"
    shutil.rmtree(src)  # nothing may depend on the sources once installed
    env = {**os.environ, "PYLLM_CACHE": str(cache_dir())}  # the suite's cache: the model is fetched once
    env.pop("PYTHONPATH", None)
    return bin_dir, env


def run(cmd, cwd, env, timeout=600):
    """Run a command in `cwd`; its stdout, failing the test with its stderr if it fails."""
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stderr}"
    return r.stdout


def test_installed_commands_work_outside_the_checkout(installed, tmp_path):
    bin_dir, env = installed
    python, pyllm = str(bin_dir / "python"), str(bin_dir / "pyllm")
    where = run([python, "-c", "import pyllm; print(pyllm.__file__)"], tmp_path, env)
    assert not where.startswith(ROOT) and "site-packages" in where

    model = run([pyllm, "fetch", "-q"], tmp_path, env).strip()
    gguf = run([pyllm, "fetch", "--gguf", "-q"], tmp_path, env).strip()
    assert os.path.isfile(model) and gguf.endswith(".gguf")

    run([pyllm, "convert", gguf, "out.bin", "-q"], tmp_path, env)
    run([python, "-m", "pyllm", "convert", gguf, "out2.bin", "-q"], tmp_path, env)
    run([python, "-m", "pyllm.convert", gguf, "out3.bin", "-q"], tmp_path, env)
    data = [(tmp_path / f).read_bytes() for f in ("out.bin", "out2.bin", "out3.bin")]
    assert data[0] == data[1] == data[2] == open(model, "rb").read()  # same converter, same bytes

    text = run([pyllm, "run", "out.bin", "-p", "Hello", "-n", "8", "--temp", "0", "-q"], tmp_path, env)
    again = run([python, "-m", "pyllm.run", "out.bin", "-p", "Hello", "-n", "8", "--temp", "0", "-q"], tmp_path, env)
    assert text.strip() and text == again

    with open(os.path.join(ROOT, "tests", "data", "shakespeare-tail.txt"), encoding="utf-8") as f:
        (tmp_path / "text.txt").write_text(f.read()[:4000], encoding="utf-8")
    out = run([pyllm, "perplexity", "out.bin", "text.txt", "--ctx", "128"], tmp_path, env)
    ppl = float(out.split("PPL = ")[1].split()[0])
    assert 1.0 < ppl < 1000.0

    usage = run([pyllm, "--help"], tmp_path, env)
    assert all(c in usage for c in ("run", "convert", "perplexity", "fetch", "bench", "serve"))

    # without the server extra, `pyllm serve` says what to install (one line, no traceback)
    r = subprocess.run([pyllm, "serve", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "pip install 'pyllm[server]'" in r.stderr, r.stderr
