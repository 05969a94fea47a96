"""Named parameters of one request, read with their types checked: a wrong or missing
one is an INVALID_PARAMS error naming it, and so is one the method does not know (a
typo must not be silently ignored)."""

from __future__ import annotations

import math
from typing import Any

from .errors import invalid_params

_MISSING = object()


class Params:
    def __init__(self, params: Any) -> None:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise invalid_params("params must be an object of named parameters")
        self._params = params
        self._read: set[str] = set()

    def _get(self, name: str, default: Any) -> Any:
        self._read.add(name)
        value = self._params.get(name, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise invalid_params(f"{name!r} is required")
            return default
        return value

    def text(self, name: str, default: Any = _MISSING, nonempty: bool = True) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or (nonempty and not value):
            raise invalid_params(f"{name!r} must be a{' non-empty' if nonempty else ''} string")
        return value

    def integer(self, name: str, default: Any = _MISSING, low: int | None = None, high: int | None = None) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid_params(f"{name!r} must be an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise invalid_params(f"{name!r} must be in {low}..{high}")
        return value

    def number(self, name: str, default: Any = _MISSING, low: float = 0.0, high: float = 1e9) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            raise invalid_params(f"{name!r} must be a number in {low:g}..{high:g}")
        return float(value)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise invalid_params(f"{name!r} must be true or false")
        return value

    def strings(self, name: str, default: Any = _MISSING, max_items: int = 10_000) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) \
                or len(value) > max_items:
            raise invalid_params(f"{name!r} must be a list of at most {max_items} non-empty strings")
        return value

    def items(self, name: str, max_items: int = 10_000) -> list[Any]:
        value = self._get(name, _MISSING)
        if not isinstance(value, list) or not 0 < len(value) <= max_items:
            raise invalid_params(f"{name!r} must be a list of 1..{max_items} items")
        return value

    def any(self, name: str, default: Any = None) -> Any:
        self._read.add(name)
        return self._params.get(name, default)

    def has(self, name: str) -> bool:
        return name in self._params

    def done(self) -> None:
        unknown = sorted(set(self._params) - self._read)
        if unknown:
            raise invalid_params(f"unknown parameter(s) {unknown}")
