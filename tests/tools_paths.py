"""Locations of reference files the tests fetch from PyPI wheels into the pyllm cache."""
import os
import subprocess
import sys
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
