"""Locations of reference files the tests fetch from PyPI wheels and sdists into the pyllm cache."""
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import pytest

from pyllm.fetch import cache_dir

MISTRAL_COMMON = "mistral-common==1.13.1"
MISTRAL_MEMBER = "mistral_common/data/tokenizer.model.v1"


def mistral_tokenizer_model() -> str:
    """Mistral 7B v0.1's SentencePiece model, taken out of the mistral-common wheel once."""
    dest = cache_dir() / "mistral-tokenizer.model.v1"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([sys.executable, "-m", "pip", "download", MISTRAL_COMMON, "--no-deps",
                                "--only-binary=:all:", "-q", "-d", tmp], capture_output=True, text=True)
            wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
            if r.returncode or not wheels:
                pytest.fail(f"could not download {MISTRAL_COMMON}: {r.stderr.strip()}")
            with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
                data = z.read(MISTRAL_MEMBER)
        tmp_dest = dest.with_suffix(".part")
        tmp_dest.write_bytes(data)
        os.replace(tmp_dest, dest)
    return str(dest)


LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
LLAMA_CPP_SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
LLAMA_CPP_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_MODELS = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
LLAMA_CPP_MODELS_ENV = "PYLLM_LLAMA_CPP_MODELS"  # a llama.cpp models/ directory to use instead


def llama_cpp_vocab_dir() -> str:
    """llama.cpp's tokenizer suite (models/ggml-vocab-*.gguf with .inp and .out): from the directory
    $PYLLM_LLAMA_CPP_MODELS names, else taken once out of the llama-cpp-python sdist on PyPI (76 MB,
    SHA-256 checked) into the pyllm cache. A failed download fails the test, it never skips."""
    local = os.environ.get(LLAMA_CPP_MODELS_ENV)
    if local:
        if not os.path.isdir(local):
            pytest.fail(f"{LLAMA_CPP_MODELS_ENV}={local} is not a directory")
        return local
    dest = cache_dir() / "llama.cpp-0.3.36-vocab"
    if dest.is_dir():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", LLAMA_CPP_SDIST, "--no-deps",
                            "--no-binary", ":all:", "--disable-pip-version-check", "-q", "-d", tmp],
                           capture_output=True, text=True, timeout=1200)
        sdist = os.path.join(tmp, LLAMA_CPP_SDIST_FILE)
        if r.returncode or not os.path.exists(sdist):
            pytest.fail(f"could not download the {LLAMA_CPP_SDIST} sdist (set {LLAMA_CPP_MODELS_ENV} to a "
                        f"llama.cpp models directory to use one on disk): {r.stderr.strip()[-2000:]}")
        h = hashlib.sha256()
        with open(sdist, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != LLAMA_CPP_SDIST_SHA256:
            pytest.fail(f"{LLAMA_CPP_SDIST_FILE}: SHA-256 {h.hexdigest()}, expected {LLAMA_CPP_SDIST_SHA256}")
        part = os.path.join(tmp, "vocab")
        os.mkdir(part)
        with tarfile.open(sdist, "r:gz") as tar:
            for m in tar:
                name = m.name[len(LLAMA_CPP_MODELS):]
                if m.name.startswith(LLAMA_CPP_MODELS) and m.isfile() and name.startswith("ggml-vocab-") \
                        and "/" not in name:
                    with tar.extractfile(m) as src, open(os.path.join(part, name), "wb") as out:
                        shutil.copyfileobj(src, out)
        if not any(n.endswith(".inp") for n in os.listdir(part)):
            pytest.fail(f"{LLAMA_CPP_SDIST_FILE} holds no {LLAMA_CPP_MODELS}ggml-vocab-*.inp files")
        os.replace(part, dest)
    return str(dest)
