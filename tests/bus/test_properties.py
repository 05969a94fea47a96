"""Property-based hostile input: messages of every command on every socket of a real
broker process.  Shapes are valid, values are hostile: empty strings, strings at the
byte limits in 4-byte UTF-8, nesting past the limit (and 1,000 deep), NaN/inf, huge
ints, wrong types, reserved names, oversize batches.

The rule checked after every example: the broker process lives, a legitimate call
still completes, the real agent is still registered, and every client message got
an answer.  ``ORCHFLOW_FUZZ_EXAMPLES`` sets the examples per socket (default 300;
the #11 closing note reports a run of 20,000).  The count of messages sent is
printed at the end of the module.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import Client
from bus import protocol as P
from bus.protocol import Command

EXAMPLES = int(os.environ.get("ORCHFLOW_FUZZ_EXAMPLES", "300"))
PROBE_KIND = "sys.echo"
SENT = {"frontend": 0, "backend": 0, "events_in": 0}
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# ---------------------------------------------------------------------- values

WIDE = "\U0001F600"  # 4 bytes in UTF-8


def text_of_bytes(n: int, wide: bool) -> str:
    """A string of exactly ``n`` UTF-8 bytes, mostly 4-byte characters if ``wide``."""
    if not wide:
        return "a" * n
    return WIDE * (n // 4) + "b" * (n % 4)


LIMITS = [P.MAX_ID_BYTES, P.MAX_KIND_BYTES, P.MAX_PROJECT_BYTES, P.MAX_NAME_BYTES,
          P.MAX_WORKFLOW_ID_BYTES, P.MAX_STEP_NAME_BYTES]
edge_text = st.builds(text_of_bytes, st.sampled_from([n + d for n in LIMITS for d in (-1, 0, 1)] + [0, 511, 512]),
                      st.booleans())
hostile_text = st.one_of(
    st.just(""), edge_text, st.text(max_size=40),
    st.sampled_from(["workflow", "\x00", "a\x00b", "/", "#", "../..", "\ud800".encode("utf-8", "surrogatepass")
                     .decode("utf-8", "replace"), "sys.echo\x00", " "]),
)
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1),
    st.sampled_from([0, -1, 2 ** 31, 2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    hostile_text, st.binary(max_size=64),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5),
    st.dictionaries(st.one_of(hostile_text, st.integers(-5, 5)), inner, max_size=5)), max_leaves=20)


def field(good: st.SearchStrategy) -> st.SearchStrategy:
    """A field's value: a plausible one, or any hostile value (wrong type included)."""
    return st.one_of(good, values)


def maybe_map(entries: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """A map with any subset of these fields."""
    return st.fixed_dictionaries({}, optional=entries)


id_s = field(st.one_of(hostile_text, st.text(min_size=1, max_size=20)))
kind_s = field(hostile_text.filter(lambda k: k != PROBE_KIND))
task_map = maybe_map({"id": id_s, "kind": kind_s, "payload": values, "project": field(hostile_text),
                      "priority": field(st.integers(-3, 12)), "deadline": field(st.floats()),
                      "max_retries": field(st.integers(-2, 200)), "ack": field(st.booleans()),
                      "retry": field(st.one_of(st.integers(-2, 200), st.fixed_dictionaries(
                          {}, optional={"max": field(st.integers(-2, 200)), "on": field(st.sampled_from(
                              ["lost", "error", "both", "never"])), "backoff": field(st.floats()),
                              "backoff_max": field(st.floats())}))),
                      "delay": field(st.floats()), "eta": field(st.floats())})
ids_body = maybe_map({"ids": field(st.lists(id_s, max_size=5))})
step_map = maybe_map({"name": field(hostile_text), "kind": kind_s, "payload": values,
                      "deps": field(st.lists(hostile_text, max_size=3)), "retries": field(st.integers(-2, 20)),
                      "priority": field(st.integers(-3, 12))})
workflow_body = maybe_map({"id": id_s, "strategy": field(st.sampled_from(["parallel", "sequential", "adaptive"])),
                           "project": field(hostile_text), "steps": field(st.lists(step_map, max_size=4))})
ready_body = maybe_map({"name": field(hostile_text), "kinds": field(st.lists(kind_s, max_size=4)),
                        "capacity": field(st.integers(-2, 200_000)), "prefetch": field(st.integers(-2, 200_000)),
                        "running": field(st.lists(id_s, max_size=3)),
                        "max_body": field(st.integers(0, 2 ** 40))})
outcome_map = maybe_map({"id": id_s, "result": values, "error": values, "data": values, "retry": values})

manage_body = maybe_map({"op": field(st.sampled_from(list(P.MANAGE_OPS))), "ref": field(hostile_text),
                         "state": field(st.sampled_from(["live", "failed", "queued", "nope"])),
                         "kind": field(hostile_text), "project": field(hostile_text),
                         "limit": field(st.integers(-1, 20_000)), "ids": field(st.lists(id_s, max_size=3)),
                         "name": field(hostile_text), "cron": field(st.sampled_from(
                             ["* * * * *", "*/0 * * * *", "61 * * * *", "", "* * * * * * *", "@hourly"])),
                         "payload": values, "priority": field(st.integers(-3, 12)), "retry": values})

client_messages = st.one_of(
    st.tuples(st.just(Command.MANAGE), field(manage_body)),
    st.tuples(st.just(Command.SUBMIT), field(st.lists(task_map, max_size=4))),
    st.tuples(st.sampled_from([Command.CANCEL, Command.FETCH, Command.STATUS]), field(ids_body)),
    st.tuples(st.just(Command.WORKFLOW), field(workflow_body)),
)
agent_messages = st.one_of(
    st.tuples(st.just(Command.READY), field(ready_body)),
    st.tuples(st.sampled_from([Command.DONE, Command.FAILED, Command.PROGRESS]), field(st.lists(outcome_map, max_size=4))),
    st.tuples(st.just(Command.HEARTBEAT), field(maybe_map({"running": field(st.lists(id_s, max_size=3))}))),
    st.tuples(st.just(Command.DISCONNECT), st.one_of(st.none(), values)),
)


def deep(depth: int) -> bytes:
    """A list nested ``depth`` deep, as raw msgpack (packb itself stops at 512)."""
    return b"\x91" * depth + b"\xc0"


def encode(body: Any, depth: int | None) -> bytes:
    """The body frame; with ``depth``, the body is replaced by a nesting of that depth
    (in the shape of the command: a map or a list around it)."""
    if depth is not None:
        return deep(depth)
    try:
        return msgpack.packb(body, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return b"\xc1"  # unpackable value: send invalid msgpack instead


depths = st.one_of(st.none(), st.none(), st.none(), st.sampled_from([P.MAX_DEPTH - 1, P.MAX_DEPTH, P.MAX_DEPTH + 1, 1000]))

# ---------------------------------------------------------------------- fixture


@pytest.fixture(scope="module")
def fuzz_swarm(tmp_path_factory):
    """One broker with a durable journal and one real agent, shared by every example:
    the point is that it survives all of them."""
    import shutil
    import tempfile

    from launcher.procs import ProcessGroup
    root = tempfile.mkdtemp(prefix="of-fz-")
    group = ProcessGroup(os.path.join(root, "run"))
    try:
        group.broker(journal=os.path.join(root, "journal"))
        group.agent("real", capacity=4)
        group.wait_agents(1)
        yield group
    finally:
        group.close()
        shutil.rmtree(root, ignore_errors=True)
        print(f"\nhostile messages sent: {SENT}")


def check_swarm(group, client: Client, n: int) -> None:
    assert group.procs["broker"].poll() is None, "the broker process died"
    assert client.call(PROBE_KIND, n, timeout=20) == n
    names = [a["name"] for a in client.status()["agents"]]
    assert "real" in names, f"the real agent was disturbed: {names}"


def dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    return sock


@pytest.fixture(scope="module")
def probe(fuzz_swarm):
    with Client(fuzz_swarm.endpoints.frontend, ack_timeout=10) as c:
        yield c


# ---------------------------------------------------------------------- properties


@FUZZ
@given(messages=st.lists(st.tuples(client_messages, depths), min_size=1, max_size=4))
def test_frontend_survives_hostile_messages(fuzz_swarm, probe, messages):
    sock = dealer(fuzz_swarm.endpoints.frontend)
    try:
        # Every client message is answered (an ERROR names what was wrong), except a
        # valid SUBMIT of ack=false tasks, which its RESULT answers when they end.  One
        # at a time: the broker acknowledges a loop turn's SUBMITs in one ACCEPTED, so
        # messages sent back to back may share an answer.
        for (command, body), depth in messages:
            sock.send_multipart([P.CLIENT, bytes([command]), encode(body, depth)])
            SENT["frontend"] += 1
            if (command is Command.SUBMIT and depth is None and isinstance(body, list)
                    and any(isinstance(e, dict) and e.get("ack") is False for e in body)):
                continue
            assert sock.poll(10_000), f"no answer to {command.name}"
            reply_command, reply = P.parse(sock.recv_multipart(), P.CLIENT)
            if reply_command is Command.ERROR:
                assert isinstance(reply.get("code"), str) and reply.get("message")
    finally:
        sock.close()
    check_swarm(fuzz_swarm, probe, SENT["frontend"])


@FUZZ
@given(messages=st.lists(st.tuples(agent_messages, depths), min_size=1, max_size=4))
def test_backend_survives_hostile_messages(fuzz_swarm, probe, messages):
    sock = dealer(fuzz_swarm.endpoints.backend)
    try:
        for (command, body), depth in messages:
            sock.send_multipart([P.AGENT, bytes([command]), encode(body, depth)])
            SENT["backend"] += 1
        time.sleep(0.002)
    finally:
        sock.close()  # a hostile agent that registered is lost by heartbeat; its kinds are never the probe's
    check_swarm(fuzz_swarm, probe, SENT["backend"])


@FUZZ
@given(frames=st.lists(st.one_of(st.binary(max_size=64), values.map(lambda v: encode(v, None))), min_size=1, max_size=4))
def test_events_in_survives_hostile_publishers(fuzz_swarm, probe, frames):
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.linger = 100
    pub.connect(fuzz_swarm.endpoints.events_in)
    try:
        pub.send_multipart(frames)
        SENT["events_in"] += 1
    finally:
        pub.close()
    check_swarm(fuzz_swarm, probe, SENT["events_in"])


def test_oversize_bodies_and_batches_are_refused(fuzz_swarm, probe):
    sock = dealer(fuzz_swarm.endpoints.frontend)
    try:
        sock.send_multipart([P.CLIENT, bytes([Command.SUBMIT]), b"\x00" * (P.MAX_BODY + 1)])
        assert P.parse(sock.recv_multipart(), P.CLIENT)[1]["code"] == "too-large"
        sock.send_multipart(P.client_message(Command.SUBMIT, [{"kind": "k"}] * (P.MAX_BATCH + 1)))
        assert sock.poll(10_000)
        assert P.parse(sock.recv_multipart(), P.CLIENT)[1]["code"] == "bad-body"
        sock.send_multipart(P.client_message(Command.FETCH, {"ids": ["x"] * (P.MAX_IDS + 1)}))
        assert sock.poll(10_000)
        assert P.parse(sock.recv_multipart(), P.CLIENT)[1]["code"] == "bad-field"
    finally:
        sock.close()
    check_swarm(fuzz_swarm, probe, 1)
