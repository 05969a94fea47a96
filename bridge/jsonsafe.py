"""Values cross between msgpack (the bus) and JSON (the IDE).  msgpack carries what JSON
cannot; it is carried as small tagged objects instead of failing or lying:

- bytes: ``{"$bytes": "<base64>"}`` (both ways: a payload may hold them too);
- NaN and the infinities: ``{"$float": "nan" | "inf" | "-inf"}``;
- map keys that are not strings (ints, bytes): their ``str()``.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from .errors import invalid_params

MAX_DEPTH = 64  # as the bus's own limit (bus/protocol.py)


def to_json(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        return None  # cannot come from the broker (it checks nesting); belt and braces
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): to_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, depth + 1) for v in value]
    return str(value)


def from_json(value: Any, depth: int = 0) -> Any:
    """A JSON value as the bus should see it: tagged bytes and floats untagged."""
    if depth > MAX_DEPTH:
        raise invalid_params(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value:
            try:
                return base64.b64decode(str(value["$bytes"]), validate=True)
            except (binascii.Error, ValueError):
                raise invalid_params("$bytes is not valid base64") from None
        if len(value) == 1 and "$float" in value and value["$float"] in ("nan", "inf", "-inf"):
            return float(value["$float"])
        return {k: from_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v, depth + 1) for v in value]
    return value
