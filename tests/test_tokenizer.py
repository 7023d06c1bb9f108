"""Tokenizers against the reference libraries' ids (tests/data/tokenizer_cases.json, made by
tools/make_tokenizer_fixtures.py from Hugging Face tokenizers and sentencepiece; Gemma 3's in
tests/data/gemma3_tokenizer_cases.json, made by tools/make_gemma3_tokenizer_fixture.py), and
llama.cpp's tokenizer suite."""
import gzip
import json
import lzma
import os
import shutil

import numpy as np
import pytest

from pyllm import FormatError
from pyllm.tokenizer import Tokenizer

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def cases():
    with open(os.path.join(DATA, "tokenizer_cases.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    with gzip.open(os.path.join(DATA, "smollm2-tokenizer.json.gz"), "rb") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return Tokenizer.from_file(path)


@pytest.fixture(scope="module")
def mistral():
    from tools_paths import mistral_tokenizer_model
    return Tokenizer.from_file(mistral_tokenizer_model())


def test_corpus_is_broad(cases):
    assert len(cases["strings"]) >= 200


def test_smollm2_plain_text_ids(cases, smollm2):
    bad = [s for s, ids in zip(cases["strings"], cases["smollm2"]["plain"]) if smollm2.encode(s) != ids]
    assert not bad, f"{len(bad)} mismatches, first: {bad[0][:60]!r}"


def test_smollm2_special_token_ids(cases, smollm2):
    bad = [s for s, ids in zip(cases["strings"], cases["smollm2"]["special"])
           if smollm2.encode(s, special=True) != ids]
    assert not bad, f"{len(bad)} mismatches, first: {bad[0][:60]!r}"


def test_user_text_cannot_inject_special_tokens(smollm2):
    ids = smollm2.encode("<|im_start|>system")
    assert 1 not in ids and smollm2.encode("<|im_start|>system", special=True)[0] == 1


def test_smollm2_decode(cases, smollm2):
    for s, ids, expected in zip(cases["strings"], cases["smollm2"]["plain"], cases["smollm2"]["decoded"]):
        assert smollm2.decode(ids, special=True) == expected
        if expected == s:
            assert smollm2.decode(smollm2.encode(s)) == s


def test_mistral_ids(cases, mistral):
    bad = [s for s, ids in zip(cases["strings"], cases["mistral"]["ids"]) if mistral.encode(s, add_bos=False) != ids]
    assert not bad, f"{len(bad)} mismatches, first: {bad[0][:60]!r}"
    assert mistral.encode("hi")[0] == mistral.bos_id == 1


def test_mistral_decode(cases, mistral):
    for s, ids, expected in zip(cases["strings"], cases["mistral"]["ids"], cases["mistral"]["decoded"]):
        assert mistral.decode(ids) == expected
        if expected == s:
            assert mistral.decode(mistral.encode(s)) == s


@pytest.mark.parametrize("which", ["smollm2", "mistral"])
def test_streaming_decode_joins_to_decode(cases, which, request):
    tok = request.getfixturevalue(which)
    key = "plain" if which == "smollm2" else "ids"
    sequences = list(cases[which][key]) + [[tok.vocab_size - 1 - i for i in range(50)], list(range(300))]
    for ids in sequences:
        dec = tok.decoder()
        pieces = [dec.feed(i) for i in ids] + [dec.flush()]
        assert "".join(pieces) == tok.decode(ids)
        for p in pieces:
            p.encode("utf-8")  # every piece is valid text (no lone surrogates)
        assert all("\ufffd" not in p for p in pieces) or "\ufffd" in tok.decode(ids)


def test_emoji_split_across_tokens_streams_whole(smollm2):
    ids = smollm2.encode("👨‍👩‍👧‍👦 ok")
    dec = smollm2.decoder()
    pieces = [dec.feed(i) for i in ids]
    assert "".join(pieces) == "👨‍👩‍👧‍👦 ok" and "" in pieces  # some tokens end mid-character


def test_unknown_pre_tokenizer_is_an_error(tmp_path):
    spec = {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
            "pre_tokenizer": {"type": "Whitespace"}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(FormatError, match="tokenizer.json: pre_tokenizer"):
        Tokenizer.from_file(tmp_path / "tokenizer.json")


@pytest.mark.parametrize("family", ["gpt2", "llama-bpe", "qwen2"])
def test_other_pre_tokenizers(cases, smollm2, family):
    """SmolLM2's vocabulary behind each family's pre-tokenizer, against tokenizers' ids."""
    from dataclasses import replace
    tok = Tokenizer(replace(smollm2.data, pre=family))
    expected = cases["pre_tokenizers"][family]
    bad = [s for s, ids in zip(cases["strings"], expected) if tok.encode(s) != ids]
    assert not bad, f"{len(bad)} mismatches, first: {bad[0][:60]!r}"


def test_unknown_pre_tokenizer_name_is_an_error(smollm2):
    from dataclasses import replace
    with pytest.raises(FormatError, match="unknown pre-tokenizer 'bloom'"):
        Tokenizer(replace(smollm2.data, pre="bloom"))


def _bpe_by_passes(bpe, word: str) -> tuple[int, ...]:
    """The textbook byte-level BPE loop (each pass merges every occurrence of the lowest-ranked
    pair, left to right): quadratic, but plainly right; the reference for the heap version."""
    parts = list(word)
    while len(parts) > 1:
        ranked = [(bpe.ranks[p], p) for p in zip(parts, parts[1:]) if p in bpe.ranks]
        if not ranked:
            break
        a, b = min(ranked)[1]
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                merged.append(a + b)
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return tuple(bpe.vocab[p] for p in parts)


def test_heap_bpe_merges_as_the_textbook_loop(smollm2):
    bpe = smollm2._algo
    rng = np.random.default_rng(12)
    alphabets = ["abcdefghijklmnopqrstuvwxyz", "aaab", "eetthhss", "0123456789-_.,!?", "ĠĊaeiouÃ©"]
    words = ["aaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababab", "ĠĠĠĠĠĠĠĠ", "ĊĊĊĊĊ"]
    for _ in range(1500):
        alphabet = alphabets[rng.integers(len(alphabets))]
        words.append("".join(rng.choice(list(alphabet), rng.integers(1, 60))))
    for word in words:
        assert bpe._bpe(word) == _bpe_by_passes(bpe, word), word


def test_long_words_are_not_cached(smollm2):
    bpe = smollm2._algo
    long_word = "x" * 5000
    ids = smollm2.encode(long_word)
    assert smollm2.decode(ids) == long_word
    assert not any(len(w) > 256 for w in bpe.cache)


@pytest.mark.parametrize("ids", [[-49152], [-1], [49152], [10 ** 9], [1.9], [True], ["5"]])
def test_decode_refuses_anything_but_vocabulary_ids(smollm2, ids):
    with pytest.raises(ValueError, match="token id|token ids must be integers"):
        smollm2.decode(ids)
    with pytest.raises(ValueError, match="token id|token ids must be integers"):
        smollm2.decoder().feed(ids[0])


def test_decode_takes_numpy_integers(smollm2):
    ids = smollm2.encode("Hello world")
    assert smollm2.decode(np.array(ids, dtype=np.int64)) == "Hello world"


def _spm_with_bytes(byte_pieces: list[str], unk: bool) -> Tokenizer:
    """A SentencePiece vocabulary with only some byte pieces (and maybe no <unk>)."""
    from pyllm.types import BYTE, NORMAL, UNKNOWN, TokenizerData
    tokens = (["<unk>"] if unk else []) + ["\u2581", "a", "\u2581a"] + byte_pieces
    types = ([UNKNOWN] if unk else []) + [NORMAL] * 3 + [BYTE] * len(byte_pieces)
    return Tokenizer(TokenizerData(model="llama", tokens=tokens, token_types=types, scores=[0.0] * len(tokens),
                                   unk_id=0 if unk else None, add_bos=False, add_space_prefix=True))


@pytest.mark.parametrize("unk", [True, False])
def test_sentencepiece_byte_fallback_with_missing_bytes(unk):
    """A character whose bytes all have pieces falls back to them; one missing a byte piece becomes
    <unk>, or is dropped without one (as Hugging Face tokenizers does); a malformed byte piece is
    an ordinary piece, not a crash."""
    tok = _spm_with_bytes(["<0xC3>", "<0xA9>", "<0x{A>"], unk)
    ids = tok.encode("aé", add_bos=False)
    assert [tok.tokens[i] for i in ids] == ["\u2581a", "<0xC3>", "<0xA9>"]
    tok = _spm_with_bytes(["<0xC3>"], unk)
    ids = tok.encode("aéa", add_bos=False)
    assert [tok.tokens[i] for i in ids] == ["\u2581a"] + (["<unk>"] if unk else []) + ["a"]


@pytest.mark.parametrize("unk", ["<unk>", None])
def test_missing_byte_pieces_as_hugging_face(unk):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<unk>": 0, "\u2581": 1, "a": 2, "\u2581a": 3, "<0xC3>": 4}
    reference = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[("\u2581", "a")],
                                                           byte_fallback=True, unk_token=unk))
    tok = _spm_with_bytes(["<0xC3>"], unk is not None)
    expected = reference.encode("\u2581aéa", add_special_tokens=False).tokens
    assert [tok.tokens[i] for i in tok.encode("aéa", add_bos=False)] == expected


LLAMA_F32 = os.path.join(os.path.dirname(__file__), "data", "hf", "llama-f32")


def _sequence_post_processor(tmp_path) -> str:
    """llama-f32's tokenizer.json with its BOS template wrapped in a Sequence after ByteLevel, as
    Llama 3's tokenizer.json has it."""
    spec = json.load(open(os.path.join(LLAMA_F32, "tokenizer.json"), encoding="utf-8"))
    assert spec["post_processor"]["type"] == "TemplateProcessing"
    spec["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        spec["post_processor"]]}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    return str(tmp_path / "tokenizer.json")


def test_bos_template_inside_a_sequence_post_processor(tmp_path):
    """BOS is added as from the bare template (the Sequence was ignored, and BOS with it)."""
    bare = Tokenizer.from_file(os.path.join(LLAMA_F32, "tokenizer.json"))
    wrapped = Tokenizer.from_file(_sequence_post_processor(tmp_path))
    assert bare.encode("Hello world")[0] == bare.bos_id
    assert wrapped.encode("Hello world") == bare.encode("Hello world")


def test_sequence_post_processor_as_hugging_face(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    path = _sequence_post_processor(tmp_path)
    assert Tokenizer.from_file(path).encode("Hello world") == tokenizers.Tokenizer.from_file(path).encode("Hello world").ids


# llama.cpp's tokenizer suite: every vocabulary with inputs (.inp) and expected ids (.out), which
# llama.cpp made with each model's Hugging Face tokenizer (tests/test-tokenizer-0.py there)
LLAMA_CPP_SUITE = ["bert-bge", "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gemma-4", "gpt-2",
                   "llama-bpe", "llama-spm", "mpt", "phi-3", "qwen2", "qwen35", "refact", "starcoder"]
SUITE_SEPARATOR = "\n__ggml_vocab_test__\n"


@pytest.fixture(scope="module")
def llama_cpp_suite():
    from tools_paths import llama_cpp_vocab_dir
    return llama_cpp_vocab_dir()


def _suite_cases(directory: str, name: str) -> list[tuple[str, list[int]]]:
    """(input, expected ids) pairs of one vocabulary, read as llama.cpp's test-tokenizer-0 reads them."""
    base = os.path.join(directory, f"ggml-vocab-{name}.gguf")
    with open(base + ".inp", encoding="utf-8", newline="") as f:
        inputs = f.read().split(SUITE_SEPARATOR)
    if inputs[-1] == "":
        inputs.pop()  # the file ends with a separator
    with open(base + ".out", encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines[-1] == "":
        lines.pop()
    assert len(inputs) == len(lines), f"{name}: {len(inputs)} inputs, {len(lines)} expected lines"
    return [(s, [int(t) for t in line.split()]) for s, line in zip(inputs, lines)]


def test_llama_cpp_suite_is_complete(llama_cpp_suite):
    names = sorted(f[len("ggml-vocab-"):-len(".gguf.inp")] for f in os.listdir(llama_cpp_suite)
                   if f.startswith("ggml-vocab-") and f.endswith(".gguf.inp"))
    assert names == sorted(LLAMA_CPP_SUITE)


@pytest.mark.parametrize("name", LLAMA_CPP_SUITE)
def test_llama_cpp_suite(llama_cpp_suite, name):
    """Every string of the vocabulary's suite gives exactly the expected ids (without BOS), and
    decoding them gives the string back."""
    tok = Tokenizer.from_file(os.path.join(llama_cpp_suite, f"ggml-vocab-{name}.gguf"))
    cases = _suite_cases(llama_cpp_suite, name)
    assert len(cases) >= 45 and any(ids for _, ids in cases)
    bad = [(s, ids, got) for s, ids in cases if (got := tok.encode(s, add_bos=False)) != ids]
    assert not bad, f"{len(bad)} of {len(cases)} differ; first {bad[0][0][:40]!r}: {bad[0][2][:12]} != {bad[0][1][:12]}"
    if tok.kind != "bert":  # (WordPiece lowercases and drops whitespace: its text does not come back)
        assert [tok.decode(ids) for _, ids in cases] == [s for s, _ in cases]


def test_smollm_digits_as_hugging_face(cases, smollm2):
    """SmolLM2's own pre-tokenizer (tokenizers' Digits, individual_digits) splits every numeric
    character, ½ included, as llama.cpp's `smollm` regex does: both give the ids of the model's
    tokenizer.json. (transformers' tokenizer built from the GGUF drops the Digits step and gives
    885, 216, 36, 3351, 138, 2704 for this string: not the model's tokenizer.)"""
    assert smollm2.data.pre == "smollm"
    i = cases["strings"].index("ied 4 ½ months")
    assert smollm2.encode("ied 4 ½ months") == cases["smollm2"]["plain"][i]


# Gemma 3's 262,144-token SentencePiece vocabulary, from a tokenizer-only extract of the 270M GGUF


@pytest.fixture(scope="module")
def gemma3_cases():
    with open(os.path.join(DATA, "gemma3_tokenizer_cases.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    path = tmp_path_factory.mktemp("gemma3") / "tokenizer.gguf"
    with lzma.open(os.path.join(DATA, "gemma3-tokenizer.gguf.xz")) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return Tokenizer.from_file(path)


def test_gemma3_vocabulary(gemma3, gemma3_cases):
    """What the GGUF says: SentencePiece without a space prefix, BOS added, byte fallback pieces."""
    assert gemma3.vocab_size == gemma3_cases["gguf"]["vocab_size"]
    assert gemma3.kind == "llama" and not gemma3.data.add_space_prefix and gemma3.add_bos
    assert len(gemma3._algo.byte_ids) == 256
    assert gemma3.encode("<start_of_turn>", add_bos=False, special=True) == [gemma3.special["<start_of_turn>"]]


def test_gemma3_plain_ids(gemma3, gemma3_cases):
    """Plain text (control-token text included): sentencepiece's ids on every string, and
    transformers' on every one but the runs of 32 or more spaces, which transformers' GGUF
    conversion splits 16 + 16 where sentencepiece and llama.cpp match Gemma's longest whitespace
    piece first (31 + 1)."""
    strings = gemma3_cases["strings"]
    got = [gemma3.encode(s, add_bos=False) for s in strings]
    bad = [s for s, ids, expected in zip(strings, got, gemma3_cases["sentencepiece_plain"]) if ids != expected]
    assert not bad, f"{len(bad)} of {len(strings)} differ from sentencepiece, first: {bad[0][:60]!r}"
    differs = set(gemma3_cases["transformers_differs"])
    assert all(" " * 32 in strings[i] for i in differs)
    bad = [s for i, (s, ids, expected) in enumerate(zip(strings, got, gemma3_cases["plain"]))
           if ids != expected and i not in differs]
    assert not bad, f"{len(bad)} of {len(strings)} differ from transformers, first: {bad[0][:60]!r}"


def test_gemma3_control_tokens_as_hugging_face(gemma3, gemma3_cases):
    """special=True matches control tokens in the text as Hugging Face does by default."""
    strings, differs = gemma3_cases["strings"], set(gemma3_cases["transformers_differs"])
    expected = gemma3_cases["special"]
    assert sum(a != b for a, b in zip(expected, gemma3_cases["plain"])) >= 5  # strings with control tokens
    bad = [s for i, (s, ids) in enumerate(zip(strings, expected))
           if i not in differs and gemma3.encode(s, add_bos=False, special=True) != ids]
    assert not bad, f"{len(bad)} mismatches, first: {bad[0][:60]!r}"


def test_gemma3_decode(gemma3, gemma3_cases):
    for s, ids, expected in zip(gemma3_cases["strings"], gemma3_cases["plain"], gemma3_cases["decoded"]):
        assert gemma3.decode(ids, special=True) == expected
        if expected == s:
            assert gemma3.decode(gemma3.encode(s, add_bos=False)) == s


def test_gemma3_extract_is_the_model_gguf_tokenizer(gemma3, gemma3_cases):
    """The committed extract holds the 270M GGUF's tokenizer as the model file has it (the GGUF is
    fetched once, as `pyllm fetch gemma3-270m` does)."""
    from dataclasses import asdict

    from pyllm.fetch import GEMMA3_270M, fetch_gguf
    path = fetch_gguf(quiet=True, model=GEMMA3_270M.name)
    assert asdict(Tokenizer.from_file(path).data) == asdict(gemma3.data)


@pytest.fixture(scope="module")
def family_cases():
    with open(os.path.join(DATA, "family_tokenizer_cases.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("name", ["gpt-2", "mpt", "command-r", "qwen2"])
def test_pre_tokenizer_names_as_the_families_hugging_face_tokenizers(llama_cpp_suite, family_cases, name):
    """A GGUF pre-tokenizer name gives the ids of its family's Hugging Face tokenizer on the whole
    corpus, normaliser included: Qwen2, GPT-NeoX (mpt) and Command-R normalise to NFC ("e" +
    U+0301 is "é"), which llama.cpp leaves out."""
    import unicodedata
    family, strings = family_cases["families"][name], family_cases["strings"]
    assert any(unicodedata.normalize("NFC", s) != s for s in strings)
    tok = Tokenizer.from_file(os.path.join(llama_cpp_suite, f"ggml-vocab-{family['vocab']}.gguf"))
    bad = [s for s, ids in zip(strings, family["ids"]) if tok.encode(s, add_bos=False) != ids]
    assert not bad, f"{len(bad)} of {len(strings)} differ from {family['class']}, first: {bad[0][:60]!r}"


def test_sentencepiece_words_merge_as_the_whole_text(gemma3):
    """Merging word by word gives the ids of merging the whole text at once, also where a piece
    spans the cut (Gemma 3's '>▁</' keeps '>' and ' </' in one word)."""
    spm = gemma3._algo
    rng = np.random.default_rng(3)
    alphabets = ["ab >/<", "the cat sat  on\tmat", "<b>x</b> <i>y</i>  ", "é ü 日本 😀 >"]
    texts = ["a> </b", "x>  </y", "<b>bold</b> </i>", "  lead", "trail  "]
    for _ in range(400):
        alphabet = alphabets[rng.integers(len(alphabets))]
        texts.append("".join(rng.choice(list(alphabet), rng.integers(1, 40))))
    for text in texts:
        assert tuple(spm.encode(text)) == spm._bpe(text.replace(" ", "\u2581")), text


def test_gemma3_plain_spans_keep_user_defined_tokens(gemma3, gemma3_cases):
    """Text in a plain span (a chat message) reads as plain text: control-token text stays text,
    while user-defined pieces (whitespace runs, newlines, HTML tags) are matched as in any text."""
    strings, expected = gemma3_cases["strings"], gemma3_cases["sentencepiece_plain"]
    bad = [s for s, ids in zip(strings, expected)
           if gemma3.encode(s, add_bos=False, special=True, plain_spans=[(0, len(s))]) != ids]
    assert not bad, f"{len(bad)} mismatches, first: {bad[0][:60]!r}"
