"""The OFP body schema (``bus/ofp.schema.json``), compiled into fast checks.

The schema is the one statement of what each body may hold: third parties read it
(any JSON Schema 2020-12 validator takes it; the ``x-`` keywords only add the byte
limits and finiteness a JSON validator cannot know), the broker validates what it
receives with it, and the tests hold it against PROTOCOL.md and against what the
broker sends.  Spec and code cannot drift apart when the code reads the spec.

A generic JSON Schema validator walks its keywords on every instance and costs far
more per task than the broker's whole dispatch; here each schema node becomes one
closure that does only the checks that node has, once, at import.  Only the subset
of JSON Schema the file uses is supported; an unknown keyword fails at compile
time, never silently at run time.
"""

from __future__ import annotations

import json
import math
import re
import os
from functools import lru_cache
from typing import Any, Callable

from .errors import ProtocolError

Check = Callable[[Any], None]

_ANNOTATIONS = {"description", "default", "title", "$comment", "examples"}
_KNOWN = _ANNOTATIONS | {"$ref", "type", "enum", "anyOf", "allOf", "not", "required", "properties",
                         "additionalProperties", "items", "minItems", "maxItems", "minimum", "maximum",
                         "minLength", "pattern", "x-bytes", "x-finite"}

_TYPES: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: v is True or v is False,
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) is int or type(v) is float,
    "string": lambda v: type(v) is str,
    "array": lambda v: type(v) is list,
    "object": lambda v: type(v) is dict,
}
_WORDS = {"null": "nil", "boolean": "a boolean", "integer": "an integer", "number": "a number",
          "string": "a string", "array": "an array", "object": "a map"}


class Invalid(Exception):
    """A value the schema refuses; ``path`` is filled in by the containers on the way out."""

    def __init__(self, message: str, sentence: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.sentence = sentence  # a whole clause ("gives a and b together"), not "must be <message>"
        self.path: list[str | int] = []


def _pass(_: Any) -> None:
    return None


class Schema:
    """One schema document, with a compiled check per node, made once and reused."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self._compiled: dict[str, Check] = {}

    # ---------------------------------------------------------------- lookups
    def node(self, ref: str) -> dict[str, Any]:
        """The schema node at a local reference such as ``#/$defs/taskMap``."""
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported, not {ref!r}")
        node: Any = self.doc
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    def resolved(self, node: dict[str, Any]) -> dict[str, Any]:
        """``node`` with its ``$ref`` followed (siblings win, as in 2020-12's merge)."""
        while "$ref" in node:
            node = {**self.node(node["$ref"]), **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def properties(self, ref: str) -> dict[str, dict[str, Any]]:
        """The fields of an object node, each resolved: what PROTOCOL.md's tables list."""
        return {name: self.resolved(sub) for name, sub in self.resolved(self.node(ref)).get("properties", {}).items()}

    def defaults(self, ref: str) -> dict[str, Any]:
        return {name: sub["default"] for name, sub in self.properties(ref).items() if "default" in sub}

    def limit(self, ref: str, keyword: str) -> Any:
        """A bound of one node, e.g. ``limit('#/$defs/taskId', 'x-bytes')[1]`` is 255."""
        return self.resolved(self.node(ref))[keyword]

    def command(self, name: str) -> dict[str, Any]:
        return self.doc["x-commands"][name]

    # ---------------------------------------------------------------- compile
    def check(self, ref: str) -> Check:
        """The compiled check of the node at ``ref``; raises :class:`Invalid`."""
        if ref not in self._compiled:
            self._compiled[ref] = _pass  # a placeholder breaks reference cycles while compiling
            compiled = self._compile(self.node(ref))
            self._compiled[ref] = compiled
        return self._compiled[ref]

    def _compile(self, node: dict[str, Any]) -> Check:  # noqa: C901 - one branch per keyword
        unknown = set(node) - _KNOWN
        if unknown:
            raise ValueError(f"schema keywords not supported: {sorted(unknown)}")
        fused = self._fused(node)
        if fused is not None:
            return fused
        checks: list[Check] = []
        if "$ref" in node:
            checks.append(self.check(node["$ref"]))  # the file has no reference cycles
        if "type" in node:
            checks.append(_type_check(node["type"]))
        if "enum" in node:
            checks.append(_enum_check(node["enum"]))
        if "x-bytes" in node:
            checks.append(_bytes_check(*node["x-bytes"]))
        elif "minLength" in node:
            low = node["minLength"]
            checks.append(lambda v: None if type(v) is not str or len(v) >= low
                          else _fail(f"at least {low} characters"))
        if "pattern" in node:
            checks.append(_pattern_check(node["pattern"]))
        if "minimum" in node or "maximum" in node or node.get("x-finite"):
            checks.append(_number_check(node.get("minimum"), node.get("maximum"), bool(node.get("x-finite"))))
        if "items" in node or "minItems" in node or "maxItems" in node:
            checks.append(self._array_check(node))
        if "properties" in node or "required" in node or "additionalProperties" in node:
            checks.append(self._object_check(node))
        for sub in node.get("allOf", ()):
            checks.append(self._compile(sub))
        if "not" in node:
            checks.append(_not_check(node["not"]))
        if "anyOf" in node:
            checks.append(self._any_check(node["anyOf"]))
        if not checks:
            return _pass
        if len(checks) == 1:
            return checks[0]

        def all_of(value: Any) -> None:
            for check in checks:
                check(value)
        return all_of

    def _fused(self, node: dict[str, Any]) -> Check | None:
        """One closure for the common node shapes (a typed string, number, map or list
        with its limits), instead of a chain of one closure per keyword: the task map
        is checked for every task, and each call saved there is a broker's per-task cost."""
        keys = set(node) - _ANNOTATIONS
        kind = node.get("type")
        if kind == "string" and "x-bytes" in node and keys <= {"type", "minLength", "x-bytes", "pattern"}:
            return _text_check(node["x-bytes"], node.get("pattern"))
        if kind in ("integer", "number") and keys <= {"type", "minimum", "maximum", "x-finite"}:
            return _strict_number_check(kind, node.get("minimum"), node.get("maximum"), bool(node.get("x-finite")))
        if kind == "array" and keys <= {"type", "items", "minItems", "maxItems"}:
            return self._array_check(node, strict=True)
        if kind == "object" and keys <= {"type", "properties", "required", "additionalProperties", "allOf"} \
                and all(set(sub) == {"not"} for sub in node.get("allOf", ())):
            return self._object_check(node, strict=True,
                                      conflicts=[tuple(sub["not"]["required"]) for sub in node.get("allOf", ())])
        return None

    def _array_check(self, node: dict[str, Any], strict: bool = False) -> Check:
        item = self._compile(node["items"]) if "items" in node else _pass
        low, high = node.get("minItems", 0), node.get("maxItems", math.inf)

        def array(value: Any) -> None:
            if type(value) is not list:
                if strict:
                    _fail(f"an array, not {_describe(value)}")
                return  # the type keyword, if any, speaks for the type
            if not low <= len(value) <= high:
                _fail(f"a list of {low}..{high} entries" if high != math.inf else f"a list of at least {low}")
            if item is not _pass:
                for i, entry in enumerate(value):
                    try:
                        item(entry)
                    except Invalid as exc:
                        exc.path.append(i)
                        raise
        return array

    def _object_check(self, node: dict[str, Any], strict: bool = False,
                      conflicts: list[tuple[str, ...]] | None = None) -> Check:
        props = {name: self._compile(sub) for name, sub in node.get("properties", {}).items()}
        required = tuple(node.get("required", ()))
        extra = node.get("additionalProperties", True)
        extra_check = None if extra is True or extra is False else self._compile(extra)
        closed = extra is False
        pairs = conflicts or []

        def obj(value: Any) -> None:
            if type(value) is not dict:
                if strict:
                    _fail(f"a map, not {_describe(value)}")
                return
            for fields in pairs:
                if fields[0] in value and all(f in value for f in fields):
                    words = " and ".join(f"'{f}'" for f in fields)
                    raise Invalid(f"gives {words} together; give one or the other", sentence=True)
            for key in required:
                if key not in value:
                    exc = Invalid("present")
                    exc.path.append(key)
                    raise exc
            for key, sub in value.items():
                check = props.get(key)
                if check is _pass:
                    continue
                if check is None:
                    if type(key) is not str:
                        _fail(f"a map with string keys, not {type(key).__name__} key {str(key)[:20]!r}")
                    if closed:
                        _fail(f"a map without key {key[:40]!r} (known keys: {', '.join(props)})")
                    check = extra_check
                    if check is None:
                        continue  # a field this version does not know: ignored (forward compatible)
                try:
                    check(sub)
                except Invalid as exc:
                    exc.path.append(key)
                    raise
        return obj

    def _any_check(self, branches: list[dict[str, Any]]) -> Check:
        compiled = [(self._compile(b), _type_of(self.resolved(b))) for b in branches]
        words = " or ".join(sorted({_WORDS[t] for _, types in compiled for t in types}))

        def any_of(value: Any) -> None:
            mismatch: Invalid | None = None
            for check, types in compiled:
                if types and not any(_TYPES[t](value) for t in types):
                    continue
                try:
                    check(value)
                    return
                except Invalid as exc:
                    mismatch = mismatch or exc
            raise mismatch or Invalid(words)
        return any_of


def _type_of(node: dict[str, Any]) -> list[str]:
    t = node.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _fail(expected: str) -> None:
    raise Invalid(expected)


def _type_check(types: str | list[str]) -> Check:
    names = [types] if isinstance(types, str) else list(types)
    tests = [_TYPES[n] for n in names]
    expected = " or ".join(_WORDS[n] for n in names)
    if len(tests) == 1:
        test = tests[0]

        def one(value: Any) -> None:
            if not test(value):
                _fail(f"{expected}, not {_describe(value)}")
        return one

    def several(value: Any) -> None:
        for test in tests:
            if test(value):
                return
        _fail(f"{expected}, not {_describe(value)}")
    return several


def _text_check(limits: list[int], pattern: str | None) -> Check:
    """A string within ``limits`` UTF-8 bytes without NUL (and matching ``pattern``)."""
    low, high = limits
    fast = high // 4  # at most this many characters are within `high` bytes whatever they are
    search = re.compile(pattern).search if pattern else None

    def text(value: Any) -> None:
        if type(value) is not str:
            _fail(f"a string, not {_describe(value)}")
        n = len(value)
        if not (low <= n <= fast) or "\x00" in value:
            try:
                size = len(value.encode())
            except UnicodeEncodeError:
                _fail("valid UTF-8")
            if not low <= size <= high or "\x00" in value:
                _fail(f"{low}..{high} UTF-8 bytes without NUL (got {size} bytes)")
        if search is not None and search(value) is None:
            _fail(f"a string matching {pattern}")
    return text


def _strict_number_check(kind: str, low: float | None, high: float | None, finite: bool) -> Check:
    lo = -math.inf if low is None else low
    hi = math.inf if high is None else high
    words = f"in {low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
    integer = kind == "integer"
    bounded = low is not None or high is not None  # unbounded: NaN passes, as in JSON Schema

    def number(value: Any) -> None:
        t = type(value)
        if t is not int and (integer or t is not float):
            _fail(f"{_WORDS[kind]}, not {_describe(value)}")
        if finite and t is float and not math.isfinite(value):
            _fail(f"a finite number, not {value}")
        if bounded and not lo <= value <= hi:
            _fail(words)
    return number


def _enum_check(values: list[Any]) -> Check:
    allowed = [v for v in values]
    shown = ", ".join("nil" if v is None else str(v) for v in allowed)

    def enum(value: Any) -> None:
        # `True == 1`: compare types too, so a boolean never passes for a number or a string
        if not any(value == v and type(value) is type(v) for v in allowed):
            _fail(f"one of {shown}")
    return enum


def _bytes_check(low: int, high: int) -> Check:
    """The byte limit alone, for a node whose type keyword allows more than strings."""
    text = _text_check([low, high], None)

    def bounded(value: Any) -> None:
        if type(value) is str:
            text(value)
    return bounded


def _pattern_check(pattern: str) -> Check:
    search = re.compile(pattern).search

    def matches(value: Any) -> None:
        if type(value) is str and search(value) is None:
            _fail(f"a string matching {pattern}")
    return matches


def _number_check(low: float | None, high: float | None, finite: bool) -> Check:
    """Range and finiteness alone, for a node whose type keyword allows more than numbers."""
    number = _strict_number_check("number", low, high, finite)

    def bounded(value: Any) -> None:
        if type(value) is int or type(value) is float:
            number(value)
    return bounded


def _not_check(node: dict[str, Any]) -> Check:
    if set(node) != {"required"}:
        raise ValueError("only 'not': {'required': [...]} is supported")
    fields = tuple(node["required"])
    words = " and ".join(f"'{f}'" for f in fields)

    def conflict(value: Any) -> None:
        if type(value) is dict and all(f in value for f in fields):
            raise Invalid(f"gives {words} together; give one or the other", sentence=True)
    return conflict


def _describe(value: Any) -> str:
    if value is None:
        return "nil"
    if value is True or value is False:
        return "a boolean"
    return {int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a map",
            bytes: "binary"}.get(type(value), type(value).__name__)


def describe(exc: Invalid, root: str = "") -> str:
    """``field 'kind' (SUBMIT[3].kind) must be ...``: the field by name, then where it is."""
    leaf = next((p for p in exc.path if isinstance(p, str)), None)
    where = format_path(exc.path, root)
    name = repr(leaf) if leaf is not None else repr(where or root or "body")
    if leaf is not None and where != leaf:
        name += f" ({where})"
    if exc.message == "present":
        return f"field {name} is required"
    return f"field {name} {exc.message}" if exc.sentence else f"field {name} must be {exc.message}"


def format_path(path: list[str | int], root: str = "") -> str:
    """``['kind', 3]`` (innermost first, as collected) as ``tasks[3].kind``."""
    out = root
    for part in reversed(path):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@lru_cache(maxsize=1)
def ofp() -> Schema:
    """The OFP schema shipped with this package."""
    # a plain open, not importlib.resources: that pulls in zipfile and friends (~3 ms per process)
    with open(os.path.join(os.path.dirname(__file__), "ofp.schema.json"), encoding="utf-8") as f:
        return Schema(json.load(f))


def validator(ref: str, root: str = "") -> Callable[[Any], None]:
    """A check that raises ProtocolError ``bad-field`` naming the field, for protocol code.
    Compiled on first use: clients import the protocol module but never validate."""
    compiled: list[Check] = []

    def validate(value: Any) -> None:
        if not compiled:
            compiled.append(ofp().check(ref))
        check = compiled[0]
        if check is _pass:
            return
        try:
            check(value)
        except Invalid as exc:
            raise ProtocolError("bad-field", describe(exc, root)) from None
    return validate


def body_validator(command: str) -> Callable[[Any], None]:
    """The check of one command's body: ``bad-body`` when the body is not even of the
    right type (a map where a list belongs), ``bad-field`` naming the field otherwise.
    Compiled on first use, as :func:`validator`."""
    compiled: list[Any] = []

    def compile_once() -> tuple[list[Callable[[Any], bool]], str, str, Check]:
        schema = ofp()
        ref = schema.command(command)["body"]
        node = schema.resolved(schema.node(ref))
        types = _type_of(node) or [t for branch in node.get("anyOf", ()) for t in _type_of(schema.resolved(branch))]
        words = " or ".join(dict.fromkeys(_WORDS[t] for t in types))
        return [_TYPES[t] for t in types], words, command.split("_AGENT")[0], schema.check(ref)

    def validate(body: Any) -> None:
        if not compiled:
            compiled.append(compile_once())
        tests, words, name, check = compiled[0]
        if tests and not any(test(body) for test in tests):
            raise ProtocolError("bad-body", f"{name} body must be {words}, not {_describe(body)}")
        try:
            check(body)
        except Invalid as exc:  # the body's own shape (an empty list) is bad-body; a field in it, bad-field
            raise ProtocolError("bad-field" if exc.path else "bad-body", describe(exc, name)) from None
    return validate
