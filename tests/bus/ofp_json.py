"""The OFP schema read by an independent validator (the `jsonschema` library), and
Hypothesis strategies drawn from the schema: what the broker's compiled checks are
measured against, so a bug in bus/schema.py cannot hide behind itself."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError, validators

EMOJI = "\U0001F600"  # 4 bytes of UTF-8


def _x_bytes(validator, value, instance, node):
    if validator.is_type(instance, "string"):
        try:
            size = len(instance.encode())
        except UnicodeEncodeError:
            yield ValidationError("not valid UTF-8")
            return
        if not value[0] <= size <= value[1] or "\x00" in instance:
            yield ValidationError(f"{size} bytes, not {value[0]}..{value[1]} without NUL")


def _x_finite(validator, value, instance, node):
    if value and validator.is_type(instance, "number") and not math.isfinite(instance):
        yield ValidationError(f"{instance} is not finite")


# msgpack tells ints from floats and from booleans; JSON Schema's "integer" would take 1.0.
_TYPES = Draft202012Validator.TYPE_CHECKER.redefine("integer", lambda _, v: type(v) is int)
OFPValidator = validators.extend(Draft202012Validator, {"x-bytes": _x_bytes, "x-finite": _x_finite},
                                 type_checker=_TYPES)
# Read from the file, not through bus.schema: the judge shares no code with the judged.
DOC = json.loads((Path(__file__).resolve().parents[2] / "bus" / "ofp.schema.json").read_text())
OFPValidator.check_schema(DOC)


def resolved(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOC
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def validator_for(command: str) -> Any:
    ref = DOC["x-commands"][command]["body"]
    return OFPValidator({"$ref": ref, "$defs": DOC["$defs"]})


def conforms(command: str, body: Any) -> None:
    """AssertionError naming the first violation if ``body`` is not a valid ``command`` body."""
    errors = sorted(validator_for(command).iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, f"{command} body breaks the schema at {list(errors[0].absolute_path)}: {errors[0].message}"


# ----------------------------------------------------------------------------- strategies

HOSTILE = st.one_of(
    st.none(), st.booleans(), st.just(""), st.just(EMOJI * 64), st.text(max_size=8),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1), st.just(2 ** 53), st.just(-1),
    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy, clean: bool, odds: int = 6) -> st.SearchStrategy:
    """``bad`` one time in ``odds`` (never when ``clean``): deep bodies stay valid often
    enough that both outcomes are tested."""
    if clean:
        return good
    return st.integers(0, odds - 1).flatmap(lambda i: bad if i == 0 else good)


def _strings(node: dict[str, Any], clean: bool) -> st.SearchStrategy:
    low, high = node.get("x-bytes", [node.get("minLength", 0), 64])
    inside = [EMOJI * (high // 4), "x" * high, "k"]
    outside = [EMOJI * (high // 4) + "ab"[: high % 4 + 1], "x" * (high + 1), "", "a\x00b"]
    if "pattern" in node:
        outside += ["a/b", "a#b"]
    return mostly(st.one_of(st.sampled_from(inside), st.text(alphabet="ab" + EMOJI, min_size=max(low, 1),
                                                             max_size=min(high // 4, 12))),
                  st.sampled_from(outside), clean)


def _numbers(node: dict[str, Any], integer: bool, clean: bool) -> st.SearchStrategy:
    low, high = node.get("minimum", -(2 ** 40)), node.get("maximum", 2 ** 40)
    ints = mostly(st.one_of(st.integers(min_value=int(low), max_value=min(int(high), int(low) + 1000)),
                            st.sampled_from([int(low), int(high)])),
                  st.sampled_from([int(high) + 1, int(low) - 1]), clean)
    if integer:
        return ints
    return st.one_of(ints, mostly(st.floats(min_value=low, max_value=high),
                                  st.sampled_from([math.nan, math.inf, -math.inf, high + 0.5, low - 0.5]), clean))


def instances(node: dict[str, Any], clean: bool = False, depth: int = 0) -> st.SearchStrategy:
    """Values near the schema's edges: mostly the right shape with some fields just in or
    just out of range, sometimes something else entirely; ``clean``: valid ones only."""
    return mostly(_shaped(node, clean, depth), HOSTILE, clean)


def _shaped(node: dict[str, Any], clean: bool, depth: int) -> st.SearchStrategy:  # noqa: C901
    if "$ref" in node:
        return instances(resolved(node), clean, depth)
    if "anyOf" in node:
        return st.one_of([instances(b, clean, depth) for b in node["anyOf"]])
    if "enum" in node:
        return mostly(st.sampled_from(node["enum"]), st.just("nope"), clean)
    if not node:
        return st.one_of(HOSTILE, st.dictionaries(st.integers(), st.integers(), max_size=2))  # opaque: anything
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    options = []
    for t in types:
        if t == "string":
            options.append(_strings(node, clean))
        elif t in ("integer", "number"):
            options.append(_numbers(node, t == "integer", clean))
        elif t == "boolean":
            options.append(st.booleans())
        elif t == "null":
            options.append(st.none())
        elif t == "array":
            item = instances(node.get("items", {}), clean, depth + 1) if depth < 4 else st.nothing()
            low = node.get("minItems", 0)
            options.append(st.lists(item, min_size=low if clean else max(0, low - 1), max_size=max(low, 4)))
        elif t == "object":
            options.append(_object_of(node, clean, depth))
    if not options:
        return HOSTILE
    return st.one_of(options)


@st.composite
def _object_of(draw, node: dict[str, Any], clean: bool, depth: int) -> dict[str, Any]:
    props = node.get("properties", {})
    out: dict[str, Any] = {}
    for name in node.get("required", ()):
        if clean or draw(st.integers(0, 19)):  # a required field is sometimes missing
            out[name] = draw(instances(props.get(name, {}), clean, depth + 1))
    for name in draw(st.lists(st.sampled_from(sorted(props)), max_size=4, unique=True)) if props else []:
        out[name] = draw(instances(props[name], clean, depth + 1))
    if not clean and draw(st.integers(0, 4)) == 0:
        out[draw(st.sampled_from(["zz", "x-new", "ref"]))] = draw(HOSTILE)  # fields a newer peer might add
    if clean:
        for a, b in (("delay", "eta"), ("retry", "max_retries")):  # the schema's 'not' rules
            if a in out and b in out:
                del out[b]
    return out


def body_instances(command: str) -> st.SearchStrategy:
    """Half edge-valid bodies, half bodies with something wrong somewhere (or everywhere)."""
    node = {"$ref": DOC["x-commands"][command]["body"]}
    return st.one_of(instances(node, clean=True), instances(node, clean=False))
