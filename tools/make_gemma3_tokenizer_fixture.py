#!/usr/bin/env python3
"""Make tests/data/gemma3_tokenizer_cases.json: the ids Hugging Face gives for Gemma 3's 262,144-token
SentencePiece vocabulary, read from the Gemma 3 270M GGUF, on a varied set of strings; and
tests/data/gemma3-tokenizer.gguf.xz, the GGUF's tokenizer alone (every tokenizer.* key but the chat
template, no tensors: 1.2 MB), so the test runs without the 253 MB model.

Two references:
- transformers, which builds Gemma's tokenizer from the GGUF (AutoTokenizer with gguf_file=...);
- the `sentencepiece` library, running a model rebuilt from the GGUF's pieces, scores and types
  (BPE, byte fallback, no dummy prefix, whitespace kept as is: what the GGUF's metadata says).
They must agree on every string except runs of 32 or more spaces: Gemma's user-defined pieces are
whitespace runs of up to 31, which sentencepiece (and llama.cpp) match longest first (32 spaces:
31 + 1), while transformers' GGUF conversion leaves them to its rebuilt merges (16 + 16). Both are
written; sentencepiece, the tokenizer Gemma was trained with, is the reference for those strings.

Each string is encoded twice: with control-token text matched as control tokens (as Hugging Face
does by default; pyllm's special=True) and as plain text (pyllm's default). Strings: llama.cpp's
tokenizer-suite inputs, the strings of tests/data/tokenizer_cases.json (multilingual text, digits,
emoji, code, a long text) and Gemma-specific ones (whitespace runs, tabs, HTML tags, chat turns).

    pip install transformers tokenizers sentencepiece gguf   # reference libraries, not pyllm dependencies
    python tools/make_gemma3_tokenizer_fixture.py gemma-3-270m-q4_k_m.gguf SUITE_DIR tests/data
"""
import argparse
import hashlib
import json
import os
import tempfile

import lzma

import sentencepiece as spm
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from sentencepiece import sentencepiece_model_pb2 as pb

SEPARATOR = "\n__ggml_vocab_test__\n"


def suite_strings(suite_dir: str) -> list[str]:
    """The distinct inputs of llama.cpp's tokenizer suite (every .inp file), in file order."""
    out: list[str] = []
    for name in sorted(os.listdir(suite_dir)):
        if name.endswith(".inp"):
            with open(os.path.join(suite_dir, name), encoding="utf-8", newline="") as f:
                parts = f.read().split(SEPARATOR)
            out += [p for p in parts[:-1] if p not in out]  # the file ends with a separator
    return out


def gemma_strings() -> list[str]:
    """Strings that exercise Gemma's user-defined pieces (whitespace runs, tabs, newlines, HTML
    tags), its control tokens and its byte fallback."""
    s = ["a  b", "a   b    c", " " * 31, " " * 32, " " * 70, "\t", "\t\t\tx", "\t" * 40, "x\n\ny", "\n" * 40,
         " \n \n\t \t", "  leading", "trailing  ", "<table><tr><td>1</td></tr></table>", "<b>bold</b> <i>it</i>",
         "<div>\n  <span>x</span>\n</div>", "[multimodal]", "<start_of_image>", "<end_of_image>",
         "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n", "<bos>", "<eos>", "<pad>",
         "<unk>", "<mask>", "<unused0>", "<unused99>", "text<end_of_turn>more", "<start_of_turn", "<0x41>",
         "0123456789", "3.14159 2.71828", "1,234,567.89", "٣٤٥ ४५६", "🦙🦙🦙", "🧑‍💻 developer",
         "\U0010fffd private use", "\x00\x01\x1f", "ஜ ᐈ ꯃ 𐌰", "Ünïcödé ñ ß", "다람쥐 헌 쳇바퀴에 타고파",
         "Съешь же ещё", "いろはにほへと", "def f():\n\treturn {'a': [1, 2]}\n"]
    return s


def sentencepiece_from_gguf(path: str, tmp: str) -> spm.SentencePieceProcessor:
    """A sentencepiece BPE model with the GGUF's vocabulary; whitespace pieces that the GGUF stores
    as spaces are written with ▁, as sentencepiece spells them."""
    r = GGUFReader(path)

    def field(key):
        f = r.fields[key]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(p).decode("utf-8") for p in field("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in field("tokenizer.ggml.scores")]
    types = [int(p[0]) for p in field("tokenizer.ggml.token_type")]
    m = pb.ModelProto()
    for t, sc, ty in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece, p.score, p.type = t.replace(" ", "\u2581"), sc, ty
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id = 3, 2, 1, 0
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = False
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    model = os.path.join(tmp, "gemma3.model")
    with open(model, "wb") as f:
        f.write(m.SerializeToString())
    return spm.SentencePieceProcessor(model_file=model), tokens, types


def write_tokenizer_extract(path: str, dest: str) -> None:
    """A GGUF holding only the tokenizer.* metadata of path (the chat template left out), xz-compressed."""
    r = GGUFReader(path)
    with tempfile.TemporaryDirectory() as tmp:
        part = os.path.join(tmp, "tokenizer.gguf")
        w = GGUFWriter(part, r.fields["general.architecture"].contents())
        for name, f in r.fields.items():
            if name.startswith("tokenizer.") and name != "tokenizer.chat_template":
                if f.types[0] == GGUFValueType.ARRAY:
                    w.add_key_value(name, f.contents(), GGUFValueType.ARRAY, sub_type=f.types[-1])
                else:
                    w.add_key_value(name, f.contents(), f.types[0])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.close()
        with open(part, "rb") as src, lzma.open(dest, "wb", preset=9) as out:
            out.write(src.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("suite_dir", help="llama.cpp's models/ directory (the ggml-vocab-*.inp files)")
    ap.add_argument("out_dir")
    args = ap.parse_args()
    with open(os.path.join(args.out_dir, "tokenizer_cases.json"), encoding="utf-8") as f:
        corpus = json.load(f)["strings"]
    strings = []
    for s in suite_strings(args.suite_dir) + gemma_strings() + corpus:
        if s not in strings:
            strings.append(s)

    from transformers import AutoTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(os.path.abspath(args.gguf), os.path.join(tmp, "model.gguf"))
        hf = AutoTokenizer.from_pretrained(tmp, gguf_file="model.gguf").backend_tokenizer
        sp, tokens, types = sentencepiece_from_gguf(args.gguf, tmp)
    special = [hf.encode(s, add_special_tokens=False).ids for s in strings]
    hf.encode_special_tokens = True  # control-token text is plain text
    plain = [hf.encode(s, add_special_tokens=False).ids for s in strings]

    # sentencepiece matches no control tokens in text: it checks the plain ids
    sp_plain = [sp.encode(s) for s in strings]
    bad = [(s, a, b) for s, a, b in zip(strings, plain, sp_plain) if a != b and " " * 32 not in s]
    if bad:
        s, a, b = bad[0]
        raise SystemExit(f"transformers and sentencepiece disagree on {len(bad)} strings; first {s[:60]!r}:\n"
                         f"  transformers  {a[:30]}\n  sentencepiece {b[:30]}")
    differ = [i for i, (a, b) in enumerate(zip(plain, sp_plain)) if a != b]
    with open(args.gguf, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    import tokenizers
    import transformers
    out = {
        "about": f"ids of Gemma 3's vocabulary from transformers {transformers.__version__} (tokenizers "
                 f"{tokenizers.__version__}), plain ids equal to sentencepiece {spm.__version__}'s; "
                 "made by tools/make_gemma3_tokenizer_fixture.py",
        "gguf": {"name": os.path.basename(args.gguf), "sha256": digest, "vocab_size": len(tokens)},
        "strings": strings,
        "special": special,
        "plain": plain,
        "sentencepiece_plain": sp_plain,
        "transformers_differs": differ,  # indices where transformers' plain ids are not sentencepiece's
        "decoded": [hf.decode(ids, skip_special_tokens=False) for ids in plain],
    }
    dest = os.path.join(args.out_dir, "gemma3_tokenizer_cases.json")
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
    write_tokenizer_extract(args.gguf, os.path.join(args.out_dir, "gemma3-tokenizer.gguf.xz"))
    n_special = sum(a != b for a, b in zip(special, plain))
    print(f"{len(strings)} strings ({n_special} with control tokens matched, {len(differ)} where transformers "
          f"differs from sentencepiece: {[strings[i][:8] for i in differ]}); wrote {dest}")


if __name__ == "__main__":
    main()
