"""Hostile Hugging Face directories and tokenizer files: config.json, tokenizer_config.json,
tokenizer.json and SentencePiece tokenizer.model. Each case is a minimal file made here; each must
be a FormatError naming the file and the field, found before anything proportional to a hostile
count is allocated (peak Python allocations are measured with tracemalloc)."""
import json
import math
import struct
import tracemalloc

import numpy as np
import pytest

from pyllm import Tokenizer
from pyllm.convert import convert
from pyllm.errors import FormatError
from pyllm.formats.sentencepiece_model import read_sentencepiece_model
from pyllm.formats.tokenizer_json import read_tokenizer_json
from safetensors_writer import write_safetensors

MEMORY_BOUND = 64 << 20  # peak bytes a refusal may allocate: far below any table sized by a hostile count

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16,
    "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
    "hidden_act": "silu",
}


def weights(cfg: dict) -> dict[str, np.ndarray]:
    """The tensors of a valid one-layer llama of CONFIG's sizes."""
    d, h, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["hidden_size"] // 2
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], d), "model.norm.weight": (d,)}
    p = "model.layers.0."
    shapes.update({p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                   p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                   p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                   p + "mlp.gate_proj.weight": (h, d), p + "mlp.up_proj.weight": (h, d),
                   p + "mlp.down_proj.weight": (d, h)})
    return {n: np.full(s, 0.5, np.float32) for n, s in shapes.items()}


def hf_dir(root, config: object = None, files: dict[str, object] | None = None):
    """A valid minimal directory, with config.json's fields overridden (None removes one, a non-dict
    replaces the whole file) and extra files (JSON values, or bytes written as they are)."""
    root.mkdir()
    cfg = {k: v for k, v in dict(CONFIG, **config).items() if v is not None} if isinstance(config, dict) \
        else CONFIG if config is None else config
    (root / "config.json").write_text(json.dumps(cfg))
    write_safetensors(root / "model.safetensors", weights(CONFIG))
    for name, value in (files or {}).items():
        (root / name).write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())
    return root


def refused(fn, *names: str) -> str:
    """Run fn under tracemalloc; it must raise FormatError naming each of `names`, within MEMORY_BOUND."""
    tracemalloc.start()
    try:
        with pytest.raises(FormatError) as info:
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    for name in names:
        assert name in message, f"{name!r} not named in: {message}"
    assert peak < MEMORY_BOUND, f"refusing took {peak} bytes: {message}"
    return message


def test_minimal_directory_converts(tmp_path):
    """The baseline every case below mutates is valid."""
    convert(hf_dir(tmp_path / "m"), tmp_path / "out.bin", progress=False)
    assert (tmp_path / "out.bin").stat().st_size > 0


# ------------------------------------------------------------------------------------------------
# config.json

CONFIG_CASES = {
    # counts beyond what the safetensors files hold: refused before any per-layer table or padding
    "layers 10**6": ({"num_hidden_layers": 10**6}, "num_hidden_layers 1000000 is more than the 11 tensors"),
    "vocab 10**9": ({"vocab_size": 10**9}, "vocab_size 1000000000"),
    "hidden 10**6": ({"hidden_size": 10**6, "head_dim": 4}, "hidden_size 1000000"),
    "intermediate 10**7": ({"intermediate_size": 10**7}, "intermediate_size 10000000"),
    "heads 10**6": ({"num_attention_heads": 10**6, "num_key_value_heads": 10**6, "head_dim": 4},
                    "heads (1000000/1000000"),
    "count past int32": ({"num_hidden_layers": 2**40}, "num_hidden_layers must be an integer"),
    # zero, negative and wrongly typed fields
    "zero heads": ({"num_attention_heads": 0}, "num_attention_heads must be an integer in [1,"),
    "zero kv heads": ({"num_key_value_heads": 0}, "num_key_value_heads must be an integer in [1,"),
    "negative layers": ({"num_hidden_layers": -1}, "num_hidden_layers must be an integer"),
    "string size": ({"hidden_size": "8"}, "hidden_size must be an integer"),
    "float size": ({"intermediate_size": 16.0}, "intermediate_size must be an integer"),
    "bool size": ({"vocab_size": True}, "vocab_size must be an integer"),
    "float context": ({"max_position_embeddings": 32.5}, "max_position_embeddings must be an integer"),
    "odd head size": ({"head_dim": 3}, "head size 3"),
    "heads not dividing": ({"num_attention_heads": 3, "num_key_value_heads": 3},
                           "num_attention_heads 3 does not divide hidden_size 8"),
    "NaN eps": ({"rms_norm_eps": math.nan}, "rms_norm_eps must be a finite number"),
    "string eps": ({"rms_norm_eps": "1e-5"}, "rms_norm_eps must be a finite number"),
    "zero theta": ({"rope_theta": 0}, "rope_theta must be a finite positive number"),
    "infinite theta": ({"rope_parameters": {"rope_theta": math.inf}},
                       "rope_parameters.rope_theta must be a finite positive number"),
    "string tie": ({"tie_word_embeddings": "false"}, "tie_word_embeddings must be true or false"),
    "rope_scaling list": ({"rope_scaling": ["linear", 2.0]}, "rope_scaling must be a JSON object"),
    "rope_parameters string": ({"rope_parameters": "default"}, "rope_parameters must be a JSON object"),
    "layer_types int": ({"layer_types": 3}, "layer_types must be a list"),
    "layer_types of ints": ({"layer_types": [1]}, "layer_types must be a list of strings"),
    "partial rotary string": ({"partial_rotary_factor": "1"}, "partial_rotary_factor must be a finite number"),
    "mlp_bias string": ({"mlp_bias": "no"}, "mlp_bias must be true or false"),
    "attention_bias int": ({"attention_bias": 0}, "attention_bias must be true or false"),
    "architectures string": ({"architectures": "LlamaForCausalLM"},
                             "architectures must be a list, got 'LlamaForCausalLM'"),
    "architectures int": ({"architectures": 7}, "architectures must be a list"),
    "model_type list": ({"architectures": ["FooForCausalLM"], "model_type": ["x"]}, "model_type must be a string"),
    "sliding window string": ({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                               "sliding_window": "4"}, "sliding_window must be an integer"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_hostile_config_json(tmp_path, case):
    config, message = CONFIG_CASES[case]
    root = hf_dir(tmp_path / "m", config)
    refused(lambda: convert(root, tmp_path / "out.bin", progress=False), str(root), "config.json", message)
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("value", [[], "x", 5])
def test_config_json_not_an_object(tmp_path, value):
    root = hf_dir(tmp_path / "m", value)
    refused(lambda: convert(root, tmp_path / "out.bin", progress=False), str(root),
            "config.json must be a JSON object")


def test_config_json_nested_too_deeply(tmp_path):
    root = hf_dir(tmp_path / "m")
    (root / "config.json").write_text('{"rope_scaling": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(lambda: convert(root, tmp_path / "out.bin", progress=False), str(root / "config.json"),
            "nested too deeply")


def test_index_weight_map_of_the_wrong_type(tmp_path):
    root = hf_dir(tmp_path / "m", files={"model.safetensors.index.json": {"weight_map": ["model.safetensors"]}})
    refused(lambda: convert(root, tmp_path / "out.bin", progress=False), str(root),
            "model.safetensors.index.json: weight_map must map")


# ------------------------------------------------------------------------------------------------
# tokenizer.json (through a directory, and alone through Tokenizer.from_file)

def tokenizer_spec(**edits) -> dict:
    """A valid byte-level BPE tokenizer.json of 16 tokens, with top-level or model fields replaced."""
    vocab = {chr(ord("a") + i): i for i in range(14)}
    spec = {"model": {"type": "BPE", "vocab": vocab, "merges": ["a b"]},
            "added_tokens": [{"id": 14, "content": "<s>", "special": True},
                             {"id": 15, "content": "</s>", "special": True}],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
            "post_processor": None}
    for key, value in edits.items():
        if key.startswith("model_"):
            spec["model"][key[len("model_"):]] = value
        else:
            spec[key] = value
    return spec


TOKENIZER_JSON_CASES = {
    "vocab id 10**9": (tokenizer_spec(model_vocab={"a": 10**9, "b": 1}),
                       "model.vocab: the id of 'a' is 1000000000, outside 0..3"),
    "added id 10**9": (tokenizer_spec(added_tokens=[{"id": 10**9, "content": "<s>"}]),
                       "added_tokens[0].id: the id of '<s>' is 1000000000"),
    "negative id": (tokenizer_spec(model_vocab={"a": -1}), "model.vocab: the id of 'a' is -1"),
    "string id": (tokenizer_spec(model_vocab={"a": "0"}), "model.vocab: the id of 'a' must be an integer"),
    "bool id": (tokenizer_spec(model_vocab={"a": True}), "model.vocab: the id of 'a' must be an integer"),
    "model a list": (tokenizer_spec(model=[]), "model must be a JSON object"),
    "model type missing": (tokenizer_spec(model={"vocab": {"a": 0}}), "model.type None is not supported"),
    "vocab a list": (tokenizer_spec(model_vocab=["a", "b"]), "model.vocab must be a JSON object"),
    "vocab empty": (tokenizer_spec(model_vocab={}), "model.vocab is missing or empty"),
    "merges an object": (tokenizer_spec(model_merges={"a": "b"}), "model.merges must be a list"),
    "merge an int": (tokenizer_spec(model_merges=["a b", 5]), "model.merges[1] must be a string or a pair"),
    "merge a triple": (tokenizer_spec(model_merges=[["a", "b", "c"]]), "model.merges[0] must be"),
    "byte_fallback string": (tokenizer_spec(model_byte_fallback="yes"), "model.byte_fallback must be true or false"),
    "ignore_merges int": (tokenizer_spec(model_ignore_merges=1), "model.ignore_merges must be true or false"),
    "unk_token int": (tokenizer_spec(model_byte_fallback=True, model_unk_token=0), "model.unk_token must be a string"),
    "added_tokens an object": (tokenizer_spec(added_tokens={"id": 1}), "added_tokens must be a list"),
    "added token a string": (tokenizer_spec(added_tokens=["<s>"]), "added_tokens[0] must be a JSON object"),
    "added token without content": (tokenizer_spec(added_tokens=[{"id": 14}]),
                                    "added_tokens[0].content must be a string"),
    "added token without id": (tokenizer_spec(added_tokens=[{"content": "<s>"}]),
                               "added_tokens[0].id: the id of '<s>' must be an integer"),
    "added token special string": (tokenizer_spec(added_tokens=[{"id": 14, "content": "<s>", "special": "1"}]),
                                   "added_tokens[0].special must be true or false"),
    "pre_tokenizer a string": (tokenizer_spec(pre_tokenizer="ByteLevel"), "pre_tokenizer 'ByteLevel' is not one"),
    "pre_tokenizer sequence of ints": (tokenizer_spec(pre_tokenizer={"type": "Sequence", "pretokenizers": 5}),
                                       "pre_tokenizer {"),
    "pre_tokenizer steps not objects": (tokenizer_spec(pre_tokenizer={"type": "Sequence",
                                                                      "pretokenizers": [[], "x"]}),
                                        "pre_tokenizer {"),
    "split pattern a list": (tokenizer_spec(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": ["x"]}, "behavior": "Isolated"},
        {"type": "ByteLevel", "use_regex": False}]}), "pre_tokenizer {"),
    "use_regex string": (tokenizer_spec(pre_tokenizer={"type": "ByteLevel", "use_regex": "true"}),
                         "pre_tokenizer {"),
    "post_processor a list": (tokenizer_spec(post_processor=[1]), "post_processor must be a JSON object"),
    "template special id int": (tokenizer_spec(post_processor={"type": "TemplateProcessing",
                                                               "single": [{"SpecialToken": {"id": 14}}]}),
                                "post_processor.single[0].SpecialToken.id must be a string"),
    "template single a string": (tokenizer_spec(post_processor={"type": "TemplateProcessing", "single": "<s> $A"}),
                                 "post_processor.single must be a list"),
    "whole file a list": ([tokenizer_spec()], "must be a JSON object"),
}


@pytest.mark.parametrize("case", list(TOKENIZER_JSON_CASES))
def test_hostile_tokenizer_json_in_a_directory(tmp_path, case):
    spec, message = TOKENIZER_JSON_CASES[case]
    root = hf_dir(tmp_path / "m", files={"tokenizer.json": spec})
    refused(lambda: convert(root, tmp_path / "out.bin", progress=False), str(root / "tokenizer.json"), message)


@pytest.mark.parametrize("case", [c for c in TOKENIZER_JSON_CASES if c != "whole file a list"])
def test_hostile_tokenizer_json_alone(tmp_path, case):
    """Tokenizer.from_file names the file once (a file starting with '[' is not taken for JSON)."""
    spec, message = TOKENIZER_JSON_CASES[case]
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(spec))
    text = refused(lambda: Tokenizer.from_file(path), str(path), message)
    assert text.count(str(path)) == 1, text


def test_tokenizer_json_baseline_converts(tmp_path):
    """The valid spec the cases mutate converts, so each case fails for its own field."""
    root = hf_dir(tmp_path / "m", files={"tokenizer.json": tokenizer_spec()})
    convert(root, tmp_path / "out.bin", progress=False)
    tok = Tokenizer.from_file(tmp_path / "out.bin")
    assert tok.vocab_size == 16 and tok.tokens[14:] == ["<s>", "</s>"]


def test_tokenizer_json_nested_too_deeply(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(lambda: read_tokenizer_json(str(path)), str(path), "nested too deeply")


def test_tokenizer_json_ids_bounded_by_the_model_vocabulary(tmp_path):
    """Ids below the entry count but beyond config.json's vocab_size are the directory's error."""
    spec = tokenizer_spec(added_tokens=[{"id": 14, "content": "<s>"}, {"id": 20, "content": "</s>"}])
    spec["model"]["vocab"].update({f"x{i}": 14 + i for i in range(1, 7)})
    root = hf_dir(tmp_path / "m", files={"tokenizer.json": spec})
    refused(lambda: convert(root, tmp_path / "out.bin", progress=False), str(root),
            "the tokenizer has 21 tokens but config.json's vocab_size is only 16")


# ------------------------------------------------------------------------------------------------
# tokenizer_config.json

TOKENIZER_CONFIG_CASES = {
    "a list": ([], "tokenizer_config.json must be a JSON object"),
    "a string": ("x", "tokenizer_config.json must be a JSON object"),
    "bos_token int": ({"bos_token": 5}, "tokenizer_config.json: bos_token must be a string"),
    "eos_token list": ({"eos_token": ["</s>"]}, "tokenizer_config.json: eos_token must be a string"),
    "eos_token content int": ({"eos_token": {"content": 5}}, "tokenizer_config.json: eos_token.content must be"),
    "add_bos_token string": ({"add_bos_token": "true"}, "tokenizer_config.json: add_bos_token must be true or false"),
    "chat_template int": ({"chat_template": 5}, "tokenizer_config.json: chat_template must be a string"),
    "named template name list": ({"chat_template": [{"name": ["default"], "template": "x"}]},
                                 "tokenizer_config.json: chat_template[0].name must be a string"),
    "named template not an object": ({"chat_template": ["x"]},
                                     "tokenizer_config.json: chat_template[0] must be a JSON object"),
}


@pytest.mark.parametrize("case", list(TOKENIZER_CONFIG_CASES))
def test_hostile_tokenizer_config_json(tmp_path, case):
    value, message = TOKENIZER_CONFIG_CASES[case]
    root = hf_dir(tmp_path / "m", files={"tokenizer.json": tokenizer_spec(), "tokenizer_config.json": value})
    refused(lambda: convert(root, tmp_path / "out.bin", progress=False), str(root), message)


def test_chat_template_jinja_not_utf8(tmp_path):
    root = hf_dir(tmp_path / "m", files={"chat_template.jinja": b"{{ '\xff' }}"})
    refused(lambda: convert(root, tmp_path / "out.bin", progress=False), str(root),
            "chat_template.jinja: not valid UTF-8")


# ------------------------------------------------------------------------------------------------
# SentencePiece tokenizer.model

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    """One protobuf field: key, then the payload (length-prefixed for wire type 2)."""
    return varint(number << 3 | wire) + (varint(len(payload)) + payload if wire == 2 else payload)


def piece(text: bytes, score: bytes | None = None, kind: int = 1) -> bytes:
    """A SentencePiece message: piece (1, bytes), score (2, fixed32 float), type (3, varint)."""
    score = field(2, 5, struct.pack("<f", -1.0)) if score is None else score
    return field(1, 2, field(1, 2, text) + score + field(3, 0, varint(kind)))


def spm_model(*pieces: bytes, tail: bytes = b"") -> bytes:
    """A ModelProto: the pieces, a BPE trainer_spec (model_type 2) and an identity normalizer that
    keeps extra whitespace (remove_extra_whitespaces 0)."""
    body = b"".join(pieces) or piece(b"<unk>", kind=2) + piece(b"<s>", kind=3) + piece("▁a".encode())
    normalizer = field(1, 2, b"identity") + field(4, 0, varint(0))
    return body + field(2, 2, field(3, 0, varint(2))) + field(3, 2, normalizer) + tail


def test_minimal_sentencepiece_model_reads(tmp_path):
    """The builder makes a valid file, so each case below fails for its own field."""
    path = tmp_path / "tokenizer.model"
    path.write_bytes(spm_model())
    data, remove_ws = read_sentencepiece_model(str(path))
    assert data.tokens == ["<unk>", "<s>", "▁a"] and data.scores == [-1.0] * 3 and not remove_ws


SPM_CASES = {
    # the 4 KB file whose piece says 2**31: as a varint (bytes(2**31) allocated 2 GB) and as a length
    "piece as a varint of 2**31": (field(1, 2, field(1, 0, varint(2**31))) + b"\0" * 4000,
                                   "pieces[0].piece (field 1) at byte 2 has wire type 0 (varint), not 2"),
    "piece length 2**31": (field(1, 2, varint(1 << 3 | 2) + varint(2**31) + b"x" * 4000),
                           "length 2147483648 runs past the end of its message"),
    "score as a varint": (spm_model(piece(b"a", score=field(2, 0, varint(2**40)))),
                          "pieces[0].score (field 2) at byte 5 has wire type 0 (varint), not 5 (32-bit)"),
    "score length-delimited": (spm_model(piece(b"a", score=field(2, 2, b"abcd"))),
                               "pieces[0].score (field 2)"),
    "score as 64 bits": (spm_model(piece(b"a", score=field(2, 1, b"\0" * 8))), "pieces[0].score (field 2)"),
    "type length-delimited": (spm_model(field(1, 2, field(1, 2, b"a") + field(3, 2, b"xy"))),
                              "pieces[0].type (field 3)"),
    "NaN score": (spm_model(piece(b"a", score=field(2, 5, struct.pack("<f", math.nan)))),
                  "pieces[0] at byte 0: score is NaN"),
    "unknown piece type": (spm_model(piece(b"a", kind=9)), "pieces[0] at byte 0: type 9 is not a piece type"),
    "model_type length-delimited": (spm_model(tail=field(2, 2, field(3, 2, b"\x02"))),
                                    "trainer_spec.model_type (field 3)"),
    "normalizer name as a varint": (spm_model(tail=field(3, 2, field(1, 0, varint(2**31)))),
                                    "normalizer_spec.name (field 1)"),
    "pieces as a varint": (field(1, 0, varint(5)), "ModelProto.pieces (field 1)"),
    "truncated varint": (spm_model() + b"\x08\x80\x80", "truncated varint at byte"),
    "varint over 64 bits": (b"\x08" + b"\xff" * 11, "longer than 64 bits"),
    "truncated 32-bit value": (spm_model() + field(9, 5, b"\0\0"), "truncated 32-bit value"),
    "wire type 3": (spm_model() + varint(9 << 3 | 3), "unsupported protobuf wire type 3"),
    "wire type 7": (spm_model() + varint(9 << 3 | 7), "unsupported protobuf wire type 7"),
    "piece not UTF-8": (spm_model(piece(b"\xff")), "pieces[0] at byte 0: piece text is not valid UTF-8"),
}


@pytest.mark.parametrize("case", list(SPM_CASES))
def test_hostile_sentencepiece_model(tmp_path, case):
    data, message = SPM_CASES[case]
    path = tmp_path / "tokenizer.model"
    path.write_bytes(data)
    refused(lambda: read_sentencepiece_model(str(path)), str(path), message)
    text = refused(lambda: Tokenizer.from_file(path), str(path), message)
    assert text.count(str(path)) == 1, text


def test_hostile_sentencepiece_model_in_a_directory(tmp_path):
    root = hf_dir(tmp_path / "m", files={"tokenizer.model": SPM_CASES["score as a varint"][0]})
    refused(lambda: convert(root, tmp_path / "out.bin", progress=False), str(root / "tokenizer.model"),
            "pieces[0].score (field 2)")


ADDED_TOKENS_CASES = {
    "key not an id": ({"abc": {"content": "x"}}, "added_tokens_decoder must be an object whose keys are token ids"),
    "key of 5000 digits": ({"9" * 5000: {"content": "x"}}, "added_tokens_decoder must be an object whose keys"),
    "entry a list": ({"3": ["x"]}, "added_tokens_decoder.3 must be a JSON object"),
    "content missing": ({"3": {"special": True}}, "added_tokens_decoder.3.content must be a string"),
    "special string": ({"3": {"content": "<x>", "special": "yes"}}, "added_tokens_decoder.3.special must be true"),
    "id past the vocabulary": ({"10": {"content": "<x>"}}, "added token '<x>' has id 10, but the vocabulary has 3"),
}


@pytest.mark.parametrize("case", list(ADDED_TOKENS_CASES))
def test_hostile_added_tokens_decoder(tmp_path, case):
    decoder, message = ADDED_TOKENS_CASES[case]
    root = hf_dir(tmp_path / "m", files={"tokenizer.model": spm_model(),
                                         "tokenizer_config.json": {"added_tokens_decoder": decoder}})
    refused(lambda: convert(root, tmp_path / "out.bin", progress=False), str(root), "tokenizer_config.json",
            message)
