"""JSON from untrusted files: every way a text can fail to parse is one ValueError, and JsonObject
reads an object's fields with their types and bounds checked."""
from __future__ import annotations

import json
import math
import reprlib
from typing import Any, Callable

from ..errors import FormatError
from .mapped import read_side_file


def parse_json(data: bytes | str) -> Any:
    """The value in a JSON text; ValueError saying why it is not valid JSON (also when nested too deep)."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError("not valid JSON for pyllm: nested too deeply") from None


def read_json_file(path: str) -> Any:
    """The JSON value in a file; FormatError naming the file if it cannot be read or parsed."""
    data = read_side_file(path)
    try:
        return parse_json(data)
    except ValueError as exc:
        raise FormatError(f"{path}: {exc}") from None


MAX_COUNT = 1 << 31  # sizes, counts and ids: the C core holds them in 32-bit ints
_REQUIRED = object()


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def short_repr(value: Any) -> str:
    """A JSON value for an error message, cut short: a hostile field can be megabytes long or
    nested too deeply for repr()."""
    return _REPR.repr(value)


class JsonObject:
    """A JSON object from an untrusted file, read field by field: each getter checks the field's
    type and bounds, so a wrong field is one FormatError naming the file and the field instead of a
    TypeError (or a wrong answer) wherever the value is first used."""

    def __init__(self, value: Any, label: str, fail: Callable[[str], FormatError] = FormatError,
                 prefix: str = ""):
        self.label, self.fail, self.prefix = label, fail, prefix
        if not isinstance(value, dict):
            raise self.error(None, "a JSON object", value)
        self.raw: dict[str, Any] = value

    def error(self, key: str | None, expected: str, value: Any) -> FormatError:
        """FormatError: field `key` of this object (the object itself for None) is not `expected`."""
        return self.fail(f"{self.where(key)} must be {expected}, got {short_repr(value)}")

    def where(self, key: str | None) -> str:
        """'file: field' for messages (the file alone for the object itself)."""
        field = self.prefix + key if key is not None else self.prefix.rstrip(".")
        return ": ".join(p for p in (self.label, field) if p) or "the JSON value"

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value of a field (default when it is missing or null), for fields any value may fill."""
        v = self.raw.get(key)
        return default if v is None else v

    def integer(self, key: str, default: Any = _REQUIRED, lo: int = 1, hi: int = MAX_COUNT) -> Any:
        """An integer field in [lo, hi); default when missing or null (or an error if it is required)."""
        v = self.raw.get(key)
        if v is None:
            if default is _REQUIRED:
                raise self.fail(f"{self.where(key)} is missing")
            return default
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v < hi:
            raise self.error(key, f"an integer in [{lo}, {hi})", v)
        return v

    def number(self, key: str, default: float, positive: bool = False) -> float:
        """A finite number field, non-negative (positive if asked); default when missing or null."""
        v = self.raw.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf \
                or positive and v == 0:
            raise self.error(key, "a finite positive number" if positive else "a finite number >= 0", v)
        return float(v)

    def _typed(self, key: str, default: Any, kind: type, what: str) -> Any:
        """A field of one Python type; default when missing or null."""
        v = self.raw.get(key)
        if v is None:
            return default
        if not isinstance(v, kind):
            raise self.error(key, what, v)
        return v

    def flag(self, key: str, default: bool = False) -> bool:
        """A true/false field; default when missing or null."""
        return self._typed(key, default, bool, "true or false")

    def text(self, key: str, default: str | None = None) -> str | None:
        """A string field; default when missing or null."""
        return self._typed(key, default, str, "a string")

    def obj(self, key: str) -> "JsonObject":
        """An object field, read the same way (an empty one when missing or null)."""
        return JsonObject(self.get(key, {}), self.label, self.fail, f"{self.prefix}{key}.")

    def array(self, key: str) -> list[Any]:
        """A list field (empty when missing or null)."""
        v = self.get(key, [])
        if not isinstance(v, list):
            raise self.error(key, "a list", v)
        return v

    def strings(self, key: str) -> list[str]:
        """A list-of-strings field (empty when missing or null)."""
        v = self.array(key)
        if not all(isinstance(s, str) for s in v):
            raise self.error(key, "a list of strings", v)
        return v

    def objects(self, key: str) -> list["JsonObject"]:
        """A list-of-objects field, each read the same way (empty when missing or null)."""
        return [JsonObject(v, self.label, self.fail, f"{self.prefix}{key}[{n}].")
                for n, v in enumerate(self.array(key))]
