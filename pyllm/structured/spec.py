"""What a caller asks the output to fit (a JSON Schema, a regex, a grammar, a list of choices),
turned into one grammar for the constraint, and read back from the finished text.

Everything that can be refused here is refused here, before a matcher exists; what only the
grammar compiler can judge (an unsupported JSON Schema keyword, a bad regex) is refused when the
Constraint is made, which is still before the first token.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import ConstraintError

CONSTRAINT_OPTIONS = ("json_schema", "regex", "grammar", "grammar_format", "choices", "constraint_prefix")
# JSON is written on one line with Python's separators (", " and ": "): fewer tokens than pretty
# printing, and the separators after each value are forced rather than sampled
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
GRAMMAR_FORMATS = ("lark", "gbnf")


def llguidance_module() -> Any:
    """The llguidance package, or ImportError saying how to install it (it is an optional extra)."""
    try:
        import llguidance
        import llguidance.gbnf_to_lark
        import llguidance.numpy
    except ImportError:
        raise ImportError("structured output (json_schema=, regex=, grammar=, choices=) needs llguidance: "
                          "pip install 'pyllm[structured]'") from None
    return llguidance


SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")  # name -> schema
SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems", "items")
SCHEMA_VALUES = ("items", "additionalProperties", "additionalItems", "not", "if", "then", "else", "contains",
                 "propertyNames", "unevaluatedProperties")


def closed_objects(schema: Any) -> Any:
    """A copy of a schema in which every object schema that does not say otherwise allows no
    properties beyond those it lists. For a Pydantic class: pydantic drops unknown fields anyway
    (unless the class says extra="allow", which its schema then states), so nothing is lost, and
    the output ends when the model's fields are written instead of running on."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: closed_objects(sub) for name, sub in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [closed_objects(sub) for sub in value]
        elif key in SCHEMA_VALUES:
            out[key] = closed_objects(value)
        else:  # keywords whose values are data (enum, const, default, required, ...)
            out[key] = value
    if (out.get("type") == "object" or "properties" in out) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def is_pydantic_model(obj: object) -> bool:
    """Whether obj is a Pydantic model class (checked by its methods: pydantic is never imported here)."""
    return isinstance(obj, type) and callable(getattr(obj, "model_json_schema", None)) and \
        callable(getattr(obj, "model_validate_json", None))


@dataclass(frozen=True)
class ConstraintSpec:
    """One constraint: its kind, the llguidance grammar (JSON text), and what parsing the output needs."""

    kind: str                         # "json_schema", "regex", "grammar" or "choices"
    grammar: str                      # llguidance's grammar text, compiled into a matcher per generation
    schema: Mapping[str, Any] | None = None  # json_schema: the schema as a dict
    model_class: type | None = None   # json_schema given as a Pydantic model class
    choices: tuple[str, ...] | None = None
    prefix: str = ""                  # the output's start, already written at the end of the prompt

    def parse(self, text: str) -> Any:
        """The finished output (the generated text after the prefix) as a value: a Pydantic
        instance, the JSON value, or the text itself."""
        text = self.prefix + text
        if self.kind != "json_schema":
            return text
        if self.model_class is not None:
            return self.model_class.model_validate_json(text)  # type: ignore[attr-defined]
        return json.loads(text)


def spec_from_options(json_schema: Any = None, regex: str | None = None, grammar: str | None = None,
                      grammar_format: str | None = None, choices: Sequence[str] | None = None,
                      constraint_prefix: str | None = None) -> ConstraintSpec | None:
    """The constraint the options ask for (None for none); ConstraintError naming the option if
    more than one is given or one is malformed. constraint_prefix: text the prompt ends with that
    is already the start of the constrained output (an assistant turn begun by the caller, or a
    generation cut short and continued): the constraint starts after it."""
    spec = _spec(json_schema, regex, grammar, grammar_format, choices)
    if constraint_prefix is None:
        return spec
    if not isinstance(constraint_prefix, str):
        raise ConstraintError(f"constraint_prefix must be a string, got {type(constraint_prefix).__name__}")
    if spec is None:
        raise ConstraintError("constraint_prefix is given without a constraint (json_schema=, regex=, grammar=, choices=)")
    return dataclasses.replace(spec, prefix=constraint_prefix)


def _spec(json_schema: Any, regex: str | None, grammar: str | None, grammar_format: str | None,
          choices: Sequence[str] | None) -> ConstraintSpec | None:
    given = [name for name, v in (("json_schema", json_schema), ("regex", regex), ("grammar", grammar),
                                  ("choices", choices)) if v is not None]
    if len(given) > 1:
        raise ConstraintError(f"one constraint at a time: {' and '.join(given)} were both given")
    if grammar_format is not None and grammar is None:
        raise ConstraintError("grammar_format is given without a grammar")
    if not given:
        return None
    llg = llguidance_module()
    matcher = llg.LLMatcher
    if json_schema is not None:
        model_class = None
        if is_pydantic_model(json_schema):
            model_class, schema = json_schema, closed_objects(json_schema.model_json_schema())
        elif isinstance(json_schema, (str, bytes)):
            try:
                schema = json.loads(json_schema)
            except ValueError as exc:
                raise ConstraintError(f"json_schema is not valid JSON: {exc}") from None
        else:
            schema = json_schema
        if not isinstance(schema, Mapping):
            raise ConstraintError("json_schema must be a JSON object (a dict, its JSON text, or a Pydantic "
                                  f"model class), got {type(schema).__name__}")
        try:
            text = json.dumps(schema)
        except (TypeError, ValueError) as exc:
            raise ConstraintError(f"json_schema cannot be written as JSON: {exc}") from None
        return ConstraintSpec("json_schema", matcher.grammar_from_json_schema(text, JSON_OPTIONS), schema=dict(schema),
                              model_class=model_class)
    if regex is not None:
        if not isinstance(regex, str) or not regex:
            raise ConstraintError(f"regex must be a non-empty string, got {regex!r}")
        return ConstraintSpec("regex", matcher.grammar_from_regex(regex))
    if grammar is not None:
        if not isinstance(grammar, str) or not grammar.strip():
            raise ConstraintError(f"grammar must be a non-empty string, got {grammar!r}")
        if grammar_format is None:  # Lark declares `start:` (or %llguidance); GBNF has `root ::=`
            grammar_format = "lark" if llg.gbnf_to_lark.is_lark_syntax(grammar) else "gbnf"
        if grammar_format not in GRAMMAR_FORMATS:
            raise ConstraintError(f"grammar_format must be one of {', '.join(GRAMMAR_FORMATS)}, got {grammar_format!r}")
        if grammar_format == "gbnf":
            try:
                grammar = llg.gbnf_to_lark.gbnf_to_lark(grammar)
            except Exception as exc:  # the converter raises its own error class, and others on odd input
                raise ConstraintError(f"grammar (GBNF) cannot be read: {exc}") from None
        return ConstraintSpec("grammar", matcher.grammar_from_lark(grammar))
    if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence) or not choices or \
            not all(isinstance(c, str) and c for c in choices):
        raise ConstraintError(f"choices must be a non-empty list of non-empty strings, got {choices!r}")
    lark = "start: " + " | ".join(json.dumps(c) for c in choices)  # JSON string escapes are Lark's too
    return ConstraintSpec("choices", matcher.grammar_from_lark(lark), choices=tuple(choices))
