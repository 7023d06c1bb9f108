"""JSON from untrusted files: every way a text can fail to parse is one ValueError."""
from __future__ import annotations

import json
from typing import Any


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
