import msgpack
import pytest

from bus import protocol as P
from bus.errors import PayloadTooLarge, ProtocolError
from bus.protocol import Command


def test_round_trip_of_a_client_message():
    frames = P.client_message(Command.SUBMIT, [{"id": "a", "kind": "k", "payload": {"x": [1, 2]}}])
    command, body = P.parse(frames, P.CLIENT)
    assert command is Command.SUBMIT
    assert body == [{"id": "a", "kind": "k", "payload": {"x": [1, 2]}}]


@pytest.mark.parametrize("frames, code", [
    ([b"OFC1", b"\x01"], "bad-frame"),
    ([b"OFC1", b"\x01", b"", b""], "bad-frame"),
    ([b"OFC2", b"\x01", b""], "bad-version"),
    ([b"XXXX", b"\x01", b""], "bad-signature"),
    ([b"OFA1", b"\x01", b""], "bad-signature"),
    ([b"OFC1", b"\x99", b""], "bad-command"),
    ([b"OFC1", b"\x01\x01", b""], "bad-command"),
    ([b"OFC1", b"\x01", b"\xc1"], "bad-body"),
    ([b"OFC1", b"\x01", b"\x92\x01"], "bad-body"),
])
def test_malformed_frames_have_stable_codes(frames, code):
    with pytest.raises(ProtocolError) as err:
        P.parse(frames, P.CLIENT, P.CLIENT_COMMANDS)
    assert err.value.code == code


def test_agent_command_on_client_socket_is_refused():
    with pytest.raises(ProtocolError) as err:
        P.parse([b"OFC1", bytes([Command.READY]), b""], P.CLIENT, P.CLIENT_COMMANDS)
    assert err.value.code == "bad-command"


def test_oversized_body_is_refused_before_decoding():
    body = msgpack.packb("x" * 2000)
    with pytest.raises(PayloadTooLarge) as err:
        P.parse([b"OFC1", b"\x01", body], P.CLIENT, max_body=1000)
    assert err.value.code == "too-large" and err.value.size == len(body)


@pytest.mark.parametrize("entry, fragment", [
    ("not a map", "must be a map"),
    ({}, "'kind'"),
    ({"kind": ""}, "'kind'"),
    ({"kind": 5}, "'kind'"),
    ({"kind": "k", "priority": 10}, "'priority'"),
    ({"kind": "k", "priority": True}, "'priority'"),
    ({"kind": "k", "priority": "high"}, "'priority'"),
    ({"kind": "k", "deadline": float("nan")}, "'deadline'"),
    ({"kind": "k", "max_retries": -1}, "'max_retries'"),
    ({"kind": "k", "id": ""}, "'id'"),
    ({"kind": "k", "id": "x" * 256}, "'id'"),
    ({"kind": "k", "id": "\U0001F600" * 64}, "'id'"),      # 256 bytes in 64 characters
    ({"kind": "\U0001F600" * 33}, "'kind'"),               # 132 bytes
    ({"kind": "k", "project": "\U0001F600" * 17}, "'project'"),
    ({"kind": "workflow", "payload": []}, "reserved"),
    ({"kind": "k", "ack": "yes"}, "'ack'"),
])
def test_submission_validation_names_the_field(entry, fragment):
    with pytest.raises(ProtocolError) as err:
        P.parse_submission(entry)
    assert err.value.code == "bad-field"
    assert fragment in err.value.message


def test_submission_defaults():
    spec = P.parse_submission({"kind": "k"})
    assert (spec.priority, spec.max_retries, spec.project, spec.deadline, spec.ack) == (5, 3, "default", None, True)


@pytest.mark.parametrize("body", [None, [], {"kinds": []}, {"kinds": [1]}, {"kinds": ["a"], "capacity": -1},
                                  {"kinds": ["a"], "capacity": "many"}])
def test_ready_validation(body):
    with pytest.raises(ProtocolError):
        P.parse_ready(body)


def test_ready_ok():
    ready = P.parse_ready({"name": "n", "kinds": ["a", "b", "a"], "capacity": 3})
    assert (ready.name, ready.kinds, ready.capacity, ready.prefetch, ready.running) == ("n", ["a", "b"], 3, 0, [])
