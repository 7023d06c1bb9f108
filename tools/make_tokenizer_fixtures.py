#!/usr/bin/env python3
"""Make the tokenizer reference fixtures: expected ids from Hugging Face `tokenizers` (SmolLM2's
byte-level BPE) and from the `sentencepiece` library (Mistral 7B v0.1's tokenizer.model).

    pip install tokenizers sentencepiece gguf      # reference libraries, not pyllm dependencies
    python tools/make_tokenizer_fixtures.py SmolLM2-135M-Instruct.Q4_1.gguf tokenizer.model.v1 tests/data

The SmolLM2 tokenizer is rebuilt in `tokenizers` from the GGUF's vocabulary and merges with the
pre-tokenizer of SmolLM2's published tokenizer.json (digits split one by one, then GPT-2's
byte-level regex) and its 17 special tokens; it is saved as tests/data/smollm2-tokenizer.json.gz
so pyllm's tokenizer.json reader is tested on it too. Writes tests/data/tokenizer_cases.json.
"""
import argparse
import gzip
import json
import os

import sentencepiece as spm
from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers


def corpus(text: str) -> list[str]:
    """At least 200 strings that stress pre-tokenizers, merges, byte fallback and special tokens."""
    s = [
        "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t  \n", "a", "A", " a", "a ",
        "Hello world", "Hello  world", "Hello   world", " Hello world ", "hello\tworld", "hello\nworld",
        "line one\r\nline two\r\n", "trailing spaces   ", "   leading spaces", "mixed \t \n whitespace",
        "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "ThE qUiCk BrOwN",
        "don't", "DON'T", "I'm", "i'M", "we've", "We'Ve", "WE'VE", "you're", "YOU'RE", "she'll", "SHE'LL",
        "he'd", "HE'D", "it's", "IT'S", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "''", "'", "o'clock",
        "rock 'n' roll", "'quoted'", "\"double\"", "`backtick`",
        "!!!", "???", "...", "?!?!", "---", "***", "#$%&", "(a) [b] {c}", "a,b;c:d", "<>", "<<>>", "@user",
        "e-mail", "state-of-the-art", "C++", "C#", "a/b\\c", "~tilde~", "^caret^", "|pipe|",
        "café", "naïve", "résumé", "Ångström", "crème brûlée", "e\u0301", "a\u0308\u0301", "\u0301alone",
        "Ñandú", "straße", "ﬁne ligature", "ǅ titlecase", "İstanbul", "ΑΒΓ αβγ", "Ελληνικά",
        "Привет, мир!", "ПРИВЕТ", "Съешь же ещё этих мягких французских булок",
        "日本語", "日本語のテキストです。", "中文字符测试", "한국어 텍스트", "ｆｕｌｌｗｉｄｔｈ",
        "ភាសាខ្មែរ", "សួស្តី", "مرحبا بالعالم", "العربية", "שלום עולם", "हिन्दी भाषा", "ไทย", "ᚠᚢᚦ runes",
        "😀", "😀😀😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸", "🇯🇵🇫🇷", "❤️", "I ❤ Python 🐍", "emoji😀inside",
        "\u200b zero width", "\u00a0nbsp", "\u3000ideographic space", "\u2028line sep", "\x00", "\x01\x02",
        "\x7f", "\ufeffBOM", "\U0001d400 math bold", "\U00010000", "\uffff",
        "def f(x):\n    return x ** 2\n", "    indented\n        more", "\tif (a) {\n\t\tb();\n\t}",
        "for i in range(10): print(i)", "int main(void) { return 0; }", "SELECT * FROM t WHERE a = 1;",
        "<div class=\"x\">text</div>", "# Heading\n\n- item\n- item", "x = [1, 2, 3]  # comment",
        "https://example.com/path?query=1&b=2#frag", "http://localhost:8080/", "user@example.com",
        "C:\\Users\\name\\file.txt", "/usr/local/bin/python3",
        '{"key": "value", "n": [1, 2.5, -3e10, null, true]}', '{"nested": {"a": {"b": []}}}',
        "a" * 100, "ab" * 150, "supercalifragilisticexpialidocious", "Pneumonoultramicroscopicsilicovolcanoconiosis",
        "x" * 1000, "verylongword" * 40, "日" * 200, "😀" * 50,
        "<|im_start|>", "<|im_end|>", "<|im_start|>user\nHi<|im_end|>\n", "<|endoftext|>",
        "text<|im_end|>more", "<|im_start|><|im_start|>", "<|im_start", "im_start|>", "< |im_start| >",
        "<s>", "</s>", "<s>hello</s>", "[INST] hi [/INST]", "<unk>", "<0x41>", "<repo_name>x<file_sep>",
        "3.14159", "1,000,000", "2024-01-01", "12:30:45", "$100.00", "50%", "1e10", "0x1F", "v1.2.3",
        "١٢٣ Arabic digits", "१२३ Devanagari digits", "½ ¾ ⅓", "Ⅳ roman", "²³ superscripts",
        "ied 4 ½ months", "2½ cups, ¼ mile", "٣ ३ ௩ 3",
    ]
    for n in range(1, 26):  # digit runs of every length
        s.append("1234567890123456789012345"[:n])
        s.append(f"n={'9' * n}!")
    s.append(" ".join(str(7 ** k) for k in range(30)))
    # bytes SmolLM2's vocabulary has no token for (0x04 0x06 0x13 0x14 0x16 0x1D, and 0xF1 0xF2, which
    # lead the UTF-8 of U+40000-U+BFFFF): the reference drops them
    s += ["ERR\x13 ok", "\x04\x06\x13\x14\x16\x1d", "a\x1db c\x16", "\U00040000", "x\U00050000y \U00080000",
          "ok \U0009abcd\x06 end"]
    s.append(text[:3000])
    s.append(text)  # a very long input
    return s


def smollm2_tokenizer(gguf_path: str) -> Tokenizer:
    r = GGUFReader(gguf_path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if k == 3])
    return tok


# the other byte-level families, as their tokenizer.json files spell the split regex
FAMILY_SPLITS = {
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def family_tokenizer(base: Tokenizer, family: str) -> Tokenizer:
    """SmolLM2's vocabulary and merges behind another family's pre-tokenizer (Llama 3 also skips
    merges for words already in the vocabulary), to check each pre-tokenizer pyllm implements."""
    spec = json.loads(base.to_str())
    if family == "gpt2":
        spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                 "use_regex": True}
    else:
        spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": FAMILY_SPLITS[family]}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    spec["model"]["ignore_merges"] = family == "llama-bpe"
    return Tokenizer.from_str(json.dumps(spec))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("spm_model")
    ap.add_argument("out_dir")
    args = ap.parse_args()
    text = open(os.path.join(args.out_dir, "shakespeare-tail.txt"), encoding="utf-8").read()
    strings = corpus(text)

    hf = smollm2_tokenizer(args.gguf)
    with gzip.open(os.path.join(args.out_dir, "smollm2-tokenizer.json.gz"), "wt", encoding="utf-8") as f:
        f.write(hf.to_str())
    families = {}
    for family in ("gpt2", "llama-bpe", "qwen2"):
        fam = family_tokenizer(hf, family)
        fam.encode_special_tokens = True
        families[family] = [fam.encode(s, add_special_tokens=False).ids for s in strings]
    hf.encode_special_tokens = True  # special-token text is plain text
    plain = [hf.encode(s, add_special_tokens=False).ids for s in strings]
    hf.encode_special_tokens = False
    special = [hf.encode(s, add_special_tokens=False).ids for s in strings]
    hf_decoded = [hf.decode(ids, skip_special_tokens=False) for ids in plain]

    sp = spm.SentencePieceProcessor(model_file=args.spm_model)
    sp_ids = [sp.encode(s) for s in strings]
    sp_decoded = [sp.decode(ids) for ids in sp_ids]

    out = {
        "about": "expected ids from tokenizers %s and sentencepiece %s; made by tools/make_tokenizer_fixtures.py"
                 % (__import__("tokenizers").__version__, spm.__version__),
        "strings": strings,
        "smollm2": {"plain": plain, "special": special, "decoded": hf_decoded},
        "mistral": {"ids": sp_ids, "decoded": sp_decoded},
        "pre_tokenizers": families,
    }
    with open(os.path.join(args.out_dir, "tokenizer_cases.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
    print(f"{len(strings)} strings; smollm2 tokens of the long text: {len(plain[-1])}")


if __name__ == "__main__":
    main()
