"""bus/ofp.schema.json against the three things it must agree with: an independent
JSON Schema validator, the broker's parsers, and the tables of docs/PROTOCOL.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from bus import protocol as P
from bus import schema
from bus.errors import ProtocolError

from ofp_json import DOC, body_instances, validator_for  # tests/bus/ofp_json.py

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "docs" / "PROTOCOL.md").read_text()
COMMANDS = sorted(DOC["x-commands"])
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("command", COMMANDS)
def test_compiled_checks_agree_with_jsonschema(command):
    check = schema.body_validator(command)
    independent = validator_for(command)
    seen = set()

    @FAST
    @given(body_instances(command))
    def agree(body):
        try:
            check(body)
            ours = True
        except ProtocolError as exc:
            assert exc.code in ("bad-body", "bad-field") and exc.message
            ours = False
        theirs = independent.is_valid(body)
        assert ours == theirs, f"compiled says {ours}, jsonschema says {theirs} for {body!r}"
        seen.add(ours)
    agree()
    assert seen == {True, False}, "the strategy must reach both valid and invalid bodies"


# What the parsers may refuse beyond the schema: rules between fields and across entries.
SEMANTIC = ("reserved", "used twice", "depends on unknown step", "dependency cycle", "within a year",
            "give 'retry' or 'max_retries'")
PARSERS = {
    "SUBMIT": P.parse_submit,
    "WORKFLOW": P.parse_workflow,
    "READY": P.parse_ready,
    "HEARTBEAT": P.parse_heartbeat,
    "MANAGE": P.parse_manage,
    "CANCEL": lambda b: P.parse_id_list(b, "CANCEL"),
    "FETCH": lambda b: P.parse_id_list(b, "FETCH"),
    "STATUS": lambda b: P.parse_id_list(b, "STATUS"),
    "DONE": lambda b: P.parse_outcomes(b, "DONE"),
    "FAILED": lambda b: P.parse_outcomes(b, "FAILED"),
    "PROGRESS": lambda b: P.parse_outcomes(b, "PROGRESS"),
}


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_the_broker_refuses_exactly_what_the_schema_refuses(command):
    """The parsers the broker calls accept every schema-valid body except for the few
    rules a schema cannot state (listed in SEMANTIC), and refuse every invalid one."""
    parse, independent = PARSERS[command], validator_for(command)
    seen = set()

    @FAST
    @given(body_instances(command))
    def agree(body):
        valid = independent.is_valid(body)
        seen.add(valid)
        try:
            parse(body)
        except ProtocolError as exc:
            assert exc.code in ("bad-body", "bad-field"), exc
            assert not valid or any(rule in exc.message for rule in SEMANTIC), \
                f"schema-valid body refused: {exc.message} for {body!r}"
            return
        assert valid, f"schema-invalid body accepted by the parser: {body!r}"
    agree()
    assert seen == {True, False}, "the strategy must reach both valid and invalid bodies"


def test_protocol_constants_come_from_the_schema():
    props = schema.ofp().properties
    assert P.MAX_ID_BYTES == props("#/$defs/taskMap")["id"]["x-bytes"][1] == 255
    assert P.MAX_KIND_BYTES == 128 and P.MAX_PROJECT_BYTES == 64 and P.MAX_NAME_BYTES == 128
    assert P.MAX_WORKFLOW_ID_BYTES == 128 and P.MAX_STEP_NAME_BYTES == 60
    assert (P.PRIORITY_MIN, P.PRIORITY_MAX, P.PRIORITY_DEFAULT) == (0, 9, 5)
    assert P.MANAGE_OPS == tuple(props("#/$defs/manage")["op"]["enum"])
    for name, entry in DOC["x-commands"].items():
        command = P.Command[name.removesuffix("_AGENT")]
        assert command.value == entry["code"], name


# ----------------------------------------------------------------------------- PROTOCOL.md


def table_rows(heading: str) -> list[list[str]]:
    """The rows of the first table after ``heading`` in PROTOCOL.md, cells stripped."""
    section = SPEC[SPEC.index(heading):]
    rows, started = [], False
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if not set(cells[0]) <= set("-: "):
                rows.append(cells)
        elif started:
            break
    return rows[1:]  # without the header


def quoted_fields(cell: str) -> set[str]:
    return set(re.findall(r'"([a-z_]+)"\??:', cell))


@pytest.mark.parametrize("heading, signature", [("## 4. Client commands", "OFC1"), ("## 5. Agent commands", "OFA1")])
def test_command_tables_match_the_schema(heading, signature):
    by_code = {(e["code"], n.removesuffix("_AGENT")): e for n, e in DOC["x-commands"].items()
               if e["signature"] in (signature, "any")}
    rows = table_rows(heading)
    assert rows
    for code, name, _direction, body in rows:
        entry = by_code.pop((int(code, 16), name), None)
        assert entry is not None, f"{name} {code} is in PROTOCOL.md but not in the schema"
        node = schema.ofp().resolved(schema.ofp().node(entry["body"]))
        fields = set()
        for branch in [node, *[schema.ofp().resolved(b) for b in node.get("anyOf", ())]]:
            fields |= set(branch.get("properties", {}))
            if "items" in branch:
                fields |= set(schema.ofp().resolved(branch["items"]).get("properties", {}))
        assert quoted_fields(body) <= fields, f"{name}: PROTOCOL.md names {quoted_fields(body) - fields} " \
                                              f"that the schema lacks"
    assert not by_code, f"in the schema but not in PROTOCOL.md's table: {sorted(n for _, n in by_code)}"


def test_task_map_table_matches_the_schema():
    fields = schema.ofp().properties("#/$defs/taskMap")
    rows = table_rows("### 4.1 Task map")
    assert {r[0].strip("`") for r in rows} == set(fields)
    for field, typ, default, _meaning in rows:
        node = fields[field.strip("`")]
        if "x-bytes" in node:
            low, high = node["x-bytes"]
            assert f"{low}..{high} bytes" in typ, (field, typ)
        if node.get("type") == "integer":
            assert typ.startswith("int"), (field, typ)
            if "maximum" in node:
                assert f"{node['minimum']}..{node['maximum']}" in typ, (field, typ)
        if node.get("type") == "number":
            assert typ.startswith("number"), (field, typ)
        if "default" in node and not isinstance(node["default"], dict):
            shown = {True: "true", False: "false"}.get(node["default"], node["default"])
            assert str(shown) in default, (field, default, node["default"])


def test_string_limits_in_section_3_match_the_schema():
    limits = dict(re.findall(r"([a-z ]+?) 1\.\.(\d+)", SPEC[SPEC.index("strings that name things"):][:400]))
    limits = {k.strip().split(", ")[-1].replace("LMDB keys): ", ""): int(v) for k, v in limits.items()}
    assert limits == {"task id": P.MAX_ID_BYTES, "workflow id": P.MAX_WORKFLOW_ID_BYTES,
                      "step name": P.MAX_STEP_NAME_BYTES, "kind": P.MAX_KIND_BYTES,
                      "project": P.MAX_PROJECT_BYTES, "agent name": P.MAX_NAME_BYTES}, limits


def test_status_reply_table_lists_every_field():
    documented = {r[0].strip("`") for r in table_rows("### 4.6 STATUS_REPLY")}
    assert documented == set(schema.ofp().properties("#/$defs/statusReply")) - {"protocol"}


def test_every_error_code_is_documented():
    codes = schema.ofp().properties("#/$defs/error")["code"]["enum"]
    section = SPEC[SPEC.index("## 6. Errors"):SPEC.index("## 7. Events")]
    assert [c for c in codes if f"`{c}`" not in section] == []
