"""Structured output on SmolLM2: real-world JSON Schemas, regexes, choices, a Lark grammar and
llama.cpp's GBNF files.

Every output checked here is checked by something other than the constraint that made it: the
`jsonschema` package for schemas, Python's `re` and `json` and a small recursive-descent parser for
grammars. An output cut by max_tokens must say so (finish_reason "length") and refuse to be parsed.
The schemas (tests/data/schemas, picked by tools/pick_schemas.py; SOURCES.md says from where) run
through the Engine, many at a time, with short generations.
"""
from __future__ import annotations

import glob
import json
import os
import re
from collections import Counter

import numpy as np
import pytest

import pyllm
from pyllm import ConstraintError, IncompleteOutputError
from pyllm.generation import stop_tokens
from pyllm.structured import Constraint, spec_from_options

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llguidance")

DATA = os.path.join(os.path.dirname(__file__), "data")
SCHEMA_FILES = sorted(glob.glob(os.path.join(DATA, "schemas", "*", "*.json")))
CORPUS_MAX_TOKENS = 40
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.fixture(scope="module")
def model():
    from pyllm.fetch import default_model
    with pyllm.Model(default_model(quiet=True), n_threads=2, n_ctx=1024) as m:
        yield m


def ask(model, text: str) -> list[int]:
    return model.chat_prompt([{"role": "user", "content": text}])


def build(model, **options) -> Constraint:
    """A constraint as generate makes it (raises ConstraintError as generate would)."""
    return Constraint(spec_from_options(**options), model.tokenizer, model.config.vocab_size,
                      sorted(stop_tokens(model)))


# ------------------------------------------------------------------------------------------------
# The schema corpus

def schema_prompt(path: str, schema: dict) -> str:
    about = schema.get("title") or schema.get("description") or os.path.basename(path)[:-5]
    return f"Write a short JSON example for: {str(about)[:100]}"


def submitted(engine: pyllm.Engine) -> int:
    """Requests the engine has taken in: waiting, running or finished. (Its token count would not
    do: the requests already running generate meanwhile.)"""
    stats = engine.stats()
    return stats.queued + stats.running + stats.requests_finished


@pytest.fixture(scope="module")
def corpus(model):
    """Every schema of the corpus, refused (with the error) or run twice through the Engine: at
    temperature 0 and sampling (seeded); (path, schema, error, {mode: (stream, text)})."""
    results = []
    with pyllm.Engine(model, max_running=32, max_queued=1024, n_ctx=256) as engine:
        for path in SCHEMA_FILES:
            with open(path, encoding="utf-8") as f:
                schema = json.load(f)
            before = submitted(engine)
            prompt = ask(model, schema_prompt(path, schema))
            try:
                runs = {"greedy": engine.submit(prompt, json_schema=schema, temperature=0,
                                                max_tokens=CORPUS_MAX_TOKENS),
                        "sampled": engine.submit(prompt, json_schema=schema, temperature=0.8, seed=7,
                                                 max_tokens=CORPUS_MAX_TOKENS)}
            except ConstraintError as exc:
                assert submitted(engine) == before  # a refused schema takes no request in
                results.append((path, schema, exc, {}))
                continue
            results.append((path, schema, None, runs))
        for _, _, _, runs in results:
            for mode, stream in runs.items():
                runs[mode] = (stream, stream.text())
    return results


def test_corpus_has_real_world_schemas():
    collections = Counter(os.path.basename(os.path.dirname(p)) for p in SCHEMA_FILES)
    assert len(SCHEMA_FILES) >= 100
    assert set(collections) == {"Glaiveai2K", "Kubernetes", "JsonSchemaStore", "Snowplow"}
    for path in SCHEMA_FILES:  # each is a valid JSON Schema, so the outputs are checked against something real
        with open(path, encoding="utf-8") as f:
            schema = json.load(f)
        jsonschema.validators.validator_for(schema).check_schema(schema)


def test_refused_schemas_name_the_construct(corpus):
    refused = [(p, e) for p, _, e, _ in corpus if e is not None]
    for path, exc in refused:
        assert str(exc).startswith("json_schema is not supported: "), (path, exc)
        assert re.search(r'Unimplemented keys: \[".+"\]|oneOf|not supported|Unknown|invalid', str(exc)), (path, exc)
    assert len(refused) <= len(corpus) // 5  # llguidance supports most real schemas


def test_completed_outputs_validate_and_cut_ones_are_not_claimed(corpus):
    counts = Counter()
    for path, schema, exc, runs in corpus:
        for mode, (stream, text) in runs.items():
            counts[mode, stream.finish_reason] += 1
            if stream.finish_reason == "eos":
                value = stream.parsed
                assert value == json.loads(text), (path, mode, text)
                jsonschema.validate(value, schema)
            else:
                assert stream.finish_reason == "length", (path, mode, stream.finish_reason)
                with pytest.raises(IncompleteOutputError):
                    stream.parsed
    accepted = sum(1 for _, _, e, _ in corpus if e is None)
    print(f"\nschemas {len(corpus)}, refused {len(corpus) - accepted}, outcomes {dict(counts)}")
    for mode in ("greedy", "sampled"):  # enough finish within the short budget for the check to mean something
        assert counts[mode, "eos"] >= accepted // 8, counts


# ------------------------------------------------------------------------------------------------
# How the constraint samples

def test_sample_then_verify_equals_masking_every_token(model):
    """At temperature 0 the sampler's shortcut (check the greedy token, mask only if refused) picks
    what masking every step and taking the best allowed token picks."""
    prompt = ask(model, "Describe a person as JSON.")
    gen = model.generate(prompt, json_schema=PERSON, temperature=0, max_tokens=40)
    gen.text()
    assert gen.finish_reason == "eos"
    c = build(model, json_schema=PERSON)
    ends, out = stop_tokens(model), []
    logits = model.prefill(prompt)
    while True:
        masked = logits.copy()
        c.mask(masked)
        token = int(np.argmax(masked))
        if token in ends:
            break
        c.accept(token)
        batch = [token] + c.forced(100)
        out += batch
        if c.done:
            break
        logits = model.eval(batch)
    assert out == gen.tokens
    assert gen.constraint.stats.masked < gen.constraint.stats.sampled  # most greedy tokens fitted as they were
    assert gen.constraint.stats.forced > 0


def test_forced_tokens_go_through_the_forward_pass_as_one_batch(model):
    schema = {"type": "object", "properties": {"first_name_of_the_person": {"type": "string"},
                                               "family_name_of_the_person": {"type": "string"}},
              "required": ["first_name_of_the_person", "family_name_of_the_person"], "additionalProperties": False}
    session = model.session()
    batches = []
    forward = session._forward
    session._forward = lambda tokens, pos, all_logits: (batches.append(len(tokens)), forward(tokens, pos, all_logits))[1]
    gen = session.generate(ask(model, "A person as JSON."), json_schema=schema, temperature=0, max_tokens=60)
    value = json.loads(gen.text())
    jsonschema.validate(value, schema)
    assert gen.constraint.stats.forced >= 8  # the keys' tokens are forced
    assert max(batches[1:]) > 1  # after the prompt, some step ran a token with its forced ones at once
    assert len(batches) - 1 < len(gen.tokens) - gen.constraint.stats.forced // 2  # fewer passes than tokens
    assert sum(batches[1:]) < len(gen.tokens)  # the last batch completed the object: it is not run
    session.close()


def test_mask_comes_after_bias_and_before_top_k(model):
    prompt = ask(model, "Is water wet? Answer yes or no.")
    base = model.complete(prompt, choices=["yes", "no"], temperature=0)
    other = "no" if base == "yes" else "yes"
    tok = model.tokenizer  # ban every token that could start the greedy answer
    starts = {i: -np.inf for i in range(tok.vocab_size)
              if tok.token_bytes(i) and base.encode().startswith(tok.token_bytes(i))}
    assert model.complete(prompt, choices=["yes", "no"], temperature=0, logit_bias=starts) == other
    # top_k=1 after the mask keeps the best allowed token; before it, nothing allowed could be left
    for seed in range(3):
        assert model.complete("The colour of the sky:", choices=[" green", " purple"], temperature=1.0,
                              top_k=1, seed=seed) in (" green", " purple")


# ------------------------------------------------------------------------------------------------
# Regex, choices, Lark, GBNF

def test_regex(model):
    gen = model.generate("The meeting is on", regex=r" \d{4}-\d{2}-\d{2}", temperature=0.8, seed=1, max_tokens=20)
    text = gen.text()
    assert gen.finish_reason == "eos" and re.fullmatch(r" \d{4}-\d{2}-\d{2}", text), text
    assert gen.parsed == text


def test_choices(model):
    options = ["positive", "negative", "neutral"]
    for seed in range(3):
        gen = model.chat([{"role": "user", "content": "Sentiment of 'I love this film!'"}], stream=True,
                         choices=options, temperature=0.7, seed=seed)
        assert gen.text() in options and gen.parsed in options and gen.finish_reason == "eos"


def test_lark_grammar(model):
    grammar = 'start: "[" NUM ("," " " NUM)* "]"\nNUM: /[1-9][0-9]{0,2}/\n'
    gen = model.generate("The first prime numbers are", grammar=grammar, temperature=0, max_tokens=40)
    text = gen.text()
    if gen.finish_reason == "eos":
        assert re.fullmatch(r"\[[1-9][0-9]{0,2}(, [1-9][0-9]{0,2})*\]", text), text
    else:
        assert gen.finish_reason == "length" and re.fullmatch(r"\[[0-9, ]*", text), text


def arithmetic_lines(text: str) -> bool:
    """Whether text fits llama.cpp's arithmetic.gbnf: (expr "=" ws term "\\n")+, by recursive descent."""
    ws, pos = r"[ \t\n]*", 0

    def term(i: int) -> int | None:
        m = re.compile(r"[a-z][a-z0-9_]*" + ws + "|[0-9]+" + ws).match(text, i)
        if m:
            return m.end()
        if text.startswith("(", i):
            j = expr(re.compile(ws).match(text, i + 1).end())
            if j is not None and text.startswith(")", j):
                return re.compile(ws).match(text, j + 1).end()
        return None

    def expr(i: int) -> int | None:
        j = term(i)
        while j is not None and j < len(text) and text[j] in "-+*/":
            k = term(j + 1)
            if k is None:
                return j
            j = k
        return j

    lines = 0
    while pos < len(text):
        j = expr(pos)
        if j is None or not text.startswith("=", j):
            return False
        k = term(re.compile(ws).match(text, j + 1).end())
        if k is None or not text.startswith("\n", k):
            # the trailing ws of a term may have eaten the newline: the grammar is ambiguous there
            if k is None or not text[:k].endswith("\n"):
                return False
            pos = k
        else:
            pos = k + 1
        lines += 1
    return lines > 0


@pytest.mark.parametrize("name", ["json", "arithmetic", "list"])
def test_llama_cpp_gbnf_files(model, name):
    with open(os.path.join(DATA, "grammars", f"{name}.gbnf"), encoding="utf-8") as f:
        grammar = f.read()
    prompt = {"json": "A person as JSON:", "arithmetic": "Some sums:\n1+2=3\n", "list": "Shopping list:\n"}[name]
    gen = model.generate(prompt, grammar=grammar, temperature=0.7, seed=3, max_tokens=64)
    text = gen.text()
    assert gen.finish_reason in ("eos", "length")
    if gen.finish_reason == "length":
        with pytest.raises(IncompleteOutputError):
            gen.parsed
        text = text[:text.rfind("\n") + 1] if name != "json" else None  # the whole lines made so far
    if text:
        if name == "json":
            json.loads(text)
        elif name == "arithmetic":
            assert arithmetic_lines(text), text
        else:
            assert re.fullmatch(r"(- [^\r\n\x0b\x0c\x85\u2028\u2029]+\n)+", text), text


def test_more_gbnf_files_are_accepted(model):
    for name in ("json_arr", "chess"):
        with open(os.path.join(DATA, "grammars", f"{name}.gbnf"), encoding="utf-8") as f:
            build(model, grammar=f.read())
        with open(os.path.join(DATA, "grammars", f"{name}.gbnf"), encoding="utf-8") as f:
            build(model, grammar=f.read(), grammar_format="gbnf")


# ------------------------------------------------------------------------------------------------
# Refusals and incomplete outputs

@pytest.mark.parametrize("options, message", [
    (dict(json_schema='{"type": "object",'), "json_schema is not valid JSON"),
    (dict(json_schema=[1, 2]), "json_schema must be a JSON object"),
    (dict(json_schema={"not": {"type": "string"}}), 'Unimplemented keys: ["not"]'),
    (dict(json_schema={"type": "array", "uniqueItems": True}), 'Unimplemented keys: ["uniqueItems"]'),
    (dict(json_schema={"type": "strng"}), "strng"),
    (dict(json_schema={"$ref": "https://example.com/schema.json"}), "https://example.com/schema.json"),
    (dict(regex="a(b"), "unclosed group"),
    (dict(grammar="start: item\n"), 'unknown name: "item"'),
    (dict(grammar='root ::= "a" | (', grammar_format="gbnf"), "grammar (GBNF) cannot be read"),
    (dict(grammar="start: /x/", grammar_format="ebnf"), "grammar_format must be one of"),
    (dict(choices=[]), "choices must be a non-empty list"),
    (dict(choices="yes"), "choices must be a non-empty list"),
    (dict(regex="x", choices=["a"]), "one constraint at a time"),
    (dict(grammar_format="lark"), "grammar_format is given without a grammar"),
])
def test_bad_constraints_are_refused_before_generation(model, options, message):
    before = model.n_evaluated
    with pytest.raises(ConstraintError) as info:
        model.generate("Hello", **options)
    assert message in str(info.value)
    assert model.n_evaluated == before
    with pytest.raises(ValueError):  # ConstraintError is a ValueError
        model.complete("Hello", **options)


def test_length_cut_is_never_claimed_valid(model):
    gen = model.generate(ask(model, "A person as JSON."), json_schema=PERSON, temperature=0, max_tokens=4)
    text = gen.text()
    assert gen.finish_reason == "length" and len(gen.tokens) == 4
    with pytest.raises(IncompleteOutputError, match="'length'"):
        gen.parsed
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(IncompleteOutputError):
        model.parse([{"role": "user", "content": "A person as JSON."}], PERSON, temperature=0, max_tokens=3)


def test_stop_string_cut_is_never_claimed_valid(model):
    gen = model.generate(ask(model, "A person as JSON."), json_schema=PERSON, temperature=0, max_tokens=40,
                         stop=['"age"'])
    gen.text()
    assert gen.finish_reason == "stop"
    with pytest.raises(IncompleteOutputError, match="'stop'"):
        gen.parsed


# ------------------------------------------------------------------------------------------------
# Prompts that end inside the structure

def test_cut_generation_continued_mid_structure_equals_the_uncut_one(model):
    """A generation cut by max_tokens in the middle of its JSON, continued with the prompt plus the
    tokens it made and that text as constraint_prefix (the session reuses the prompt's cache),
    gives the uncut generation's tokens exactly, and `parsed` reads prefix and continuation as one
    value."""
    prompt = ask(model, "Describe a person as JSON.")
    whole = model.generate(prompt, json_schema=PERSON, temperature=0, max_tokens=40)
    whole.text()
    assert whole.finish_reason == "eos"
    for cut in (3, 7):
        first = model.generate(prompt, json_schema=PERSON, temperature=0, max_tokens=cut)
        written = first.text()
        assert first.finish_reason == "length" and first.tokens == whole.tokens[:cut]
        rest = model.generate(prompt + first.tokens, json_schema=PERSON, constraint_prefix=written,
                              temperature=0, max_tokens=40)
        rest.text()
        # the prompt from the cache: only the first generation's tokens that it never ran (its
        # last batch: a sampled token and the ones the grammar forced after it) are evaluated
        assert 1 <= rest.n_evaluated_prompt <= cut
        assert first.tokens + rest.tokens == whole.tokens
        assert rest.parsed == whole.parsed
        jsonschema.validate(rest.parsed, PERSON)


def test_assistant_turn_begun_by_the_caller(model):
    """The caller writes the opening of the JSON into the assistant's turn; the constraint starts
    after it (the model cannot repeat or undo it), through Model.generate and through the Engine."""
    begun = '{"name": "Ada'
    prompt = ask(model, "Describe a person as JSON.") + model.tokenize(begun)
    gen = model.generate(prompt, json_schema=PERSON, constraint_prefix=begun, temperature=0, max_tokens=40)
    text = gen.text()
    value = gen.parsed
    jsonschema.validate(value, PERSON)
    assert value["name"].startswith("Ada") and json.loads(begun + text) == value
    with pyllm.Engine(model, max_running=2) as engine:
        stream = engine.submit(prompt, json_schema=PERSON, constraint_prefix=begun, temperature=0, max_tokens=40)
        assert stream.text() == text
        assert stream.parsed == value


@pytest.mark.parametrize("prefix, message", [
    ('{"nickname": ', "is not the start of any output of the json_schema"),
    ("[", "is not the start of any output"),
    (7, "constraint_prefix must be a string"),
])
def test_prefix_that_cannot_start_the_structure_is_refused(model, prefix, message):
    before = model.n_evaluated
    with pytest.raises(ConstraintError, match=re.escape(message)):
        model.generate("Hello", json_schema=PERSON, constraint_prefix=prefix)
    with pytest.raises(ConstraintError, match="without a constraint"):
        model.generate("Hello", constraint_prefix="{")
    assert model.n_evaluated == before


# ------------------------------------------------------------------------------------------------
# Pydantic, the engine, the command line, the tokenizer's bytes

def test_pydantic_model(model):
    pydantic = pytest.importorskip("pydantic")

    class City(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=30)
        country: str = pydantic.Field(max_length=30)
        population: int = pydantic.Field(ge=0, le=100_000_000)

    city = model.parse([{"role": "user", "content": "Tell me about Paris as JSON."}], City, temperature=0,
                       max_tokens=64)
    assert isinstance(city, City)
    jsonschema.validate(city.model_dump(), City.model_json_schema())
    gen = model.chat([{"role": "user", "content": "Tell me about Paris as JSON."}], stream=True,
                     json_schema=City, temperature=0, max_tokens=64)
    assert City.model_validate_json(gen.text()) == gen.parsed == city


def test_engine_requests_each_hold_their_own_constraint(model):
    with pyllm.Engine(model, max_running=4, n_ctx=512) as engine:
        streams = [engine.submit(ask(model, "A person as JSON."), json_schema=PERSON, temperature=0.9, seed=s,
                                 max_tokens=48) for s in range(3)]
        streams.append(engine.submit(ask(model, "Yes or no?"), choices=["yes", "no"], temperature=0))
        free = engine.submit(ask(model, "Hi"), max_tokens=8, temperature=0)
        for s in streams[:3]:
            s.text()
            assert s.finish_reason == "eos"
            jsonschema.validate(s.parsed, PERSON)
        assert streams[3].text() in ("yes", "no")
        free.text()
        assert free.constraint is None
        with pytest.raises(ConstraintError):
            engine.submit("x", json_schema={"not": {}})
        assert engine.stats().queued == 0


def test_command_line_json_schema_and_grammar(model, tmp_path, capsys):
    from pyllm.run import main
    schema_file = tmp_path / "person.json"
    schema_file.write_text(json.dumps(PERSON))
    path = str(pyllm.fetch.default_model(quiet=True))
    assert main([path, "-q", "-p", "A person as JSON:", "--temp", "0", "-n", "48", "--json-schema",
                 str(schema_file)]) == 0
    jsonschema.validate(json.loads(capsys.readouterr().out), PERSON)
    assert main([path, "-q", "-p", "Shopping list:\n", "--temp", "0", "-n", "24", "--seed", "1", "--grammar",
                 os.path.join(DATA, "grammars", "list.gbnf")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("- ")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main([path, "-q", "-p", "x", "--json-schema", str(bad)]) == 1
    assert "bad.json: not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("data", [b'{"name": "Zo\xc3\xab"}', "héllo wörld <|im_start|> 日本".encode(),
                                  b"\xc3", b"abc\xe6\x97 def", b" \n\t  {", b""])
def test_encode_bytes_joins_to_the_bytes(model, data):
    tok = model.tokenizer
    ids = tok.encode_bytes(data)
    assert b"".join(tok.token_bytes(i) for i in ids) == data
    assert tok.special["<|im_start|>"] not in ids
