"""OFP/1.1 against a real broker, from raw sockets: correlation, reply order, and each
bug issue #16 found while implementing PROTOCOL.md from scratch.  The tests marked
"b788953" failed on that commit."""

from __future__ import annotations

import time

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import Client
from bus import protocol as P
from bus.protocol import Command

from ofp_json import body_instances, conforms  # tests/bus/ofp_json.py
from peers import RawPeer, collect, subscribed  # tests/bus/peers.py

CYCLE = {"id": "wf-cycle", "steps": [{"name": "a", "kind": "k", "deps": ["b"]},
                                     {"name": "b", "kind": "k", "deps": ["a"]}]}


def replies(peer: RawPeer, count: int, timeout: float = 5.0) -> list[tuple[Command, object]]:
    """The next ``count`` replies (RESULT and HEARTBEAT are not replies)."""
    out, deadline = [], time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        got = peer.recv(max(0.0, deadline - time.monotonic()))
        if got is not None and got[0] not in (Command.RESULT, Command.HEARTBEAT):
            out.append(got)
    assert len(out) == count, f"{len(out)} replies of {count}: {out}"
    return out


def test_replies_come_in_request_order(swarm):
    """b788953: five requests back to back came back as STATUS_REPLY, ERROR, ERROR, one
    ACCEPTED for a and d: not matchable to the requests."""
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as peer:
        peer.send(Command.SUBMIT, [{"id": "a", "kind": "k"}])
        peer.send(Command.SUBMIT, [{"id": "b", "kind": "k", "priority": 99}])
        peer.send(Command.STATUS, {"ids": ["a"]})
        peer.send(Command.SUBMIT, [{"id": "d", "kind": "k"}])
        peer.send(Command.WORKFLOW, CYCLE)
        got = replies(peer, 5)
    assert [c for c, _ in got] == [Command.ACCEPTED, Command.ERROR, Command.STATUS_REPLY, Command.ACCEPTED,
                                   Command.ERROR], got
    assert got[0][1] == ["a"] and got[3][1] == ["d"]
    assert got[1][1]["ids"] == ["b"] and "priority" in got[1][1]["message"]
    assert got[2][1]["tasks"] == {"a": "queued"}
    assert got[4][1]["ids"] == ["wf-cycle"] and "cycle" in got[4][1]["message"]


def test_every_request_gets_one_reply_carrying_its_req(swarm):
    """b788953: no request id at all; an ERROR without ids matched nothing."""
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as peer:
        peer.send(Command.SUBMIT, {"req": 1, "tasks": [{"id": "t1", "kind": "k"}, {"kind": "k", "ack": False}]})
        peer.send(Command.SUBMIT, {"req": "two", "tasks": [{"kind": "k", "priority": "high"}]})
        peer.send(Command.STATUS, {"req": 3, "ids": ["t1", "nope"]})
        peer.send(Command.CANCEL, {"req": 4, "ids": ["t1", "nope"]})
        peer.send(Command.FETCH, {"req": 5, "ids": ["t1"]})
        peer.send(Command.WORKFLOW, {**CYCLE, "req": 6})
        peer.send(Command.MANAGE, {"req": 7, "op": "tasks", "state": "live"})
        peer.send(Command.WORKFLOW, {"req": 8, "id": "wf-ok", "steps": [{"name": "s", "kind": "k"}]})
        peer.send(Command.SUBMIT, {"req": 2 ** 53 - 1, "tasks": [{"kind": "k", "ack": False}]})
        got = replies(peer, 9)
    assert [(c, b["req"]) for c, b in got] == [
        (Command.ACCEPTED, 1), (Command.ERROR, "two"), (Command.STATUS_REPLY, 3), (Command.ACCEPTED, 4),
        (Command.ACCEPTED, 5), (Command.ERROR, 6), (Command.MANAGED, 7), (Command.ACCEPTED, 8),
        (Command.ACCEPTED, 2 ** 53 - 1)], got
    assert got[0][1]["ids"] == ["t1"]                       # the ack=false task is not acknowledged
    assert got[2][1]["tasks"] == {"t1": "queued", "nope": None}
    assert got[3][1] == {"req": 4, "ids": ["t1"], "unknown": ["nope"]}
    assert got[4][1] == {"req": 5, "ids": ["t1"]}
    assert got[7][1]["ids"] == ["wf-ok"] and got[8][1]["ids"] == []
    for command, body in got:
        conforms(command.name, body)


def test_an_invalid_req_is_refused_like_any_field(swarm):
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as peer:
        for req in ("", "x" * 256, -1, 2 ** 53, 1.5, True, [1]):
            peer.send(Command.STATUS, {"req": req})
            err = peer.expect(Command.ERROR)
            assert err["code"] == "bad-field" and "'req'" in err["message"] and "req" not in err, (req, err)


def test_ids_of_the_wrong_type_are_bad_field(swarm):
    """b788953: `ids` of the wrong type was bad-body, where section 6 says bad-field."""
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as peer:
        for command, body in [(Command.CANCEL, {"ids": "abc"}), (Command.FETCH, {"ids": [1]}),
                              (Command.STATUS, {"ids": 5}), (Command.CANCEL, {"ids": None})]:
            peer.send(command, body)
            err = peer.expect(Command.ERROR)
            assert err["code"] == "bad-field" and "'ids'" in err["message"], (body, err)
        peer.send(Command.CANCEL, ["a"])  # the body itself of the wrong type is bad-body
        assert peer.expect(Command.ERROR)["code"] == "bad-body"


def test_protocol_maps_need_string_keys_but_payloads_may_hold_any(swarm):
    """b788953 accepted a task map with an int key (ignored it); the spec says string keys.
    Payloads are opaque: int keys reach the agent unchanged."""
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as client, \
            RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        client.send(Command.SUBMIT, raw=msgpack.packb([{"kind": "k", 1: "x"}]))
        err = client.expect(Command.ERROR)
        assert err["code"] == "bad-field" and "string keys" in err["message"], err
        agent.send(Command.READY, {"name": "raw", "kinds": ["k"], "capacity": 1})
        client.send(Command.SUBMIT, [{"id": "int-keys", "kind": "k", "payload": {1: "one"}}])
        assert client.expect(Command.ACCEPTED) == ["int-keys"]
        [task] = agent.expect(Command.TASK)
        assert task["payload"] == {1: "one"}


def test_whole_numbers_are_accepted_where_the_spec_says_number(swarm):
    """JavaScript encoders write 1700000000.0 as an int: deadline, delay and eta take ints."""
    far = int(time.time()) + 3600
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as peer:
        peer.send(Command.SUBMIT, [{"kind": "k", "deadline": far}, {"kind": "k", "delay": 60},
                                   {"kind": "k", "eta": far}])
        assert len(peer.expect(Command.ACCEPTED)) == 3
        peer.send(Command.SUBMIT, [{"kind": "k", "priority": 5.0}])  # an int field takes only ints
        assert "priority" in peer.expect(Command.ERROR)["message"]


def test_cancel_answered_by_the_agent_is_not_late_and_unknown_done_is_unassigned(swarm):
    """b788953 counted an agent's FAILED 'cancelled' (what both independent agents sent)
    as a late result.  DONE for an id never dispatched returns no credit."""
    with RawPeer(swarm.endpoints.backend, P.AGENT) as agent, Client(swarm.endpoints.frontend) as c:
        agent.send(Command.READY, {"name": "raw", "kinds": ["k"], "capacity": 1})
        first = c.submit("k", 1)
        [task] = agent.expect(Command.TASK)
        c.cancel(first)
        assert agent.expect(Command.CANCEL) == {"ids": [first]}
        agent.send(Command.DONE, [{"id": "never-dispatched", "result": 1}])
        second = c.submit("k", 2)
        time.sleep(0.3)
        assert agent.drain(0.2) == []  # the credit is still held by the cancelled task
        agent.send(Command.FAILED, [{"id": task["id"], "error": "cancelled"}])
        assert agent.expect(Command.TASK)[0]["id"] == second  # ... and comes back with the answer
        counters = c.status()["counters"]
        assert counters["late_results"] == 0 and counters["unassigned_results"] == 1, counters
        assert c.outcome(first, timeout=5)["state"] == "cancelled"


def test_cancel_of_a_finished_task_answers_its_result(swarm):
    swarm.agent("a", capacity=1)
    swarm.wait_agents(1)
    with Client(swarm.endpoints.frontend) as c:
        task_id = c.submit("sys.echo", 7)
        assert c.result(task_id, timeout=10) == 7
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as peer:
        peer.send(Command.CANCEL, {"ids": [task_id], "req": "c"})
        assert peer.expect(Command.ACCEPTED) == {"req": "c", "ids": [task_id]}
        [outcome] = peer.expect(Command.RESULT)
        assert outcome["state"] == "done" and outcome["result"] == 7


def test_a_drain_is_agent_drained_not_agent_lost(swarm):
    """b788953 reported a clean drain as agent.lost, 'agent disconnected'."""
    with Client(swarm.endpoints.frontend) as c:
        sub = subscribed(c, "agent.")
        with RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
            agent.send(Command.READY, {"name": "drainer", "kinds": ["k"], "capacity": 2})
            agent.send(Command.READY, {"name": "drainer", "kinds": ["k"], "capacity": 0})
            agent.send(Command.DISCONNECT)
            events = collect(sub, "agent.", 3)
    assert [t for t, _ in events] == ["agent.joined", "agent.draining", "agent.drained"], events
    assert events[2][1] == {"name": "drainer", "completed": 0}


def test_progress_names_the_agent_it_came_from(swarm):
    """b788953: task.progress had no agent, so a stale agent's progress could not be told apart."""
    with Client(swarm.endpoints.frontend) as c, RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        sub = subscribed(c, "task.progress")
        agent.send(Command.READY, {"name": "talker", "kinds": ["k"], "capacity": 1})
        task_id = c.submit("k", None)
        agent.expect(Command.TASK)
        agent.send(Command.PROGRESS, [{"id": task_id, "data": "half"}])
        [(_, event)] = collect(sub, "task.progress", 1)
    assert event["agent"] == "talker" and event["data"] == "half"


def test_what_the_broker_sends_matches_the_schema(swarm):
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as client, \
            RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        agent.send(Command.READY, {"name": "raw", "kinds": ["k"], "capacity": 4})
        client.send(Command.SUBMIT, [{"id": "s1", "kind": "k", "payload": [1], "deadline": time.time() + 60}])
        conforms("ACCEPTED", client.expect(Command.ACCEPTED))
        [task] = agent.expect(Command.TASK)
        conforms("TASK", [task])
        assert task["attempt"] == 1 and "parents" not in task
        client.send(Command.WORKFLOW, {"id": "wf", "steps": [{"name": "root", "kind": "k"}]})
        assert client.expect(Command.ACCEPTED) == ["wf"]
        [step] = agent.expect(Command.TASK)
        conforms("TASK", [step])
        assert step["parents"] == {} and step["deadline"] is None and step["id"] == "wf/root"
        agent.send(Command.DONE, [{"id": "s1", "result": {"ok": True}}])
        agent.send(Command.FAILED, [{"id": "wf/root", "error": "boom"}])
        outcomes: list = []
        while len(outcomes) < 2:  # s1's and the workflow's, in one RESULT or two
            body = client.expect(Command.RESULT)
            conforms("RESULT", body)
            outcomes += body
        assert {o["id"]: o["state"] for o in outcomes} == {"s1": "done", "wf": "failed"}
        client.send(Command.STATUS, {"ids": ["s1", "wf", "unknown"]})
        status = client.expect(Command.STATUS_REPLY)
        conforms("STATUS_REPLY", status)
        assert status["protocol"] == "1.1" and status["tasks"]["unknown"] is None
        client.send(Command.STATUS)
        assert "tasks" not in client.expect(Command.STATUS_REPLY)
        client.send(Command.MANAGE, {"op": "tasks", "ref": "r"})
        conforms("MANAGED", client.expect(Command.MANAGED))
        client.send(Command.CANCEL, {"ids": ["unknown"]})
        conforms("ERROR", client.expect(Command.ERROR))
        client.send(Command.SUBMIT, [{"id": "s2", "kind": "k"}])
        [task] = agent.expect(Command.TASK)
        client.send(Command.CANCEL, {"ids": ["s2"]})
        conforms("CANCEL_AGENT", agent.expect(Command.CANCEL))


HOSTILE_FOR = st.sampled_from(["SUBMIT", "CANCEL", "STATUS", "FETCH", "WORKFLOW", "MANAGE"]).flatmap(
    lambda name: st.tuples(st.just(name), body_instances(name)))


def test_hostile_requests_with_a_req_each_get_exactly_one_reply(swarm):
    """Generated bodies of every client command, each made a map with a req where it is
    one: whatever the body, exactly one reply comes back and it carries that req."""
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as peer:
        counter = iter(range(1, 10 ** 9))

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(HOSTILE_FOR)
        def one_reply(case):
            name, body = case
            if name == "SUBMIT":
                body = {"tasks": body if isinstance(body, list) else [body]}
            if not isinstance(body, dict):
                body = {"ids": body}
            req = next(counter)
            body["req"] = req
            try:
                raw = msgpack.packb(body, use_bin_type=True)
            except (ValueError, OverflowError, TypeError):
                return  # not encodable: nothing to send
            assert peer.send(Command[name], raw=raw)
            [(command, reply)] = replies(peer, 1)
            assert reply.get("req") == req, (name, body, command, reply)
            assert command in (Command.ERROR, Command.ACCEPTED, Command.STATUS_REPLY, Command.MANAGED)
            conforms(command.name, reply)
            extra = [c for c, _ in peer.drain(0.02) if c not in (Command.RESULT, Command.HEARTBEAT)]
            assert extra == [], f"a second reply to one request: {extra}"
        one_reply()
    with Client(swarm.endpoints.frontend) as c:
        assert c.status()["counters"]["internal_errors"] == 0


def test_a_heartbeat_of_encoded_nil_is_an_empty_heartbeat(swarm):
    """b788953 refused HEARTBEAT 0xC0 as 'carries a body'; section 3 says empty = nil, and
    libraries that encode null send exactly that."""
    with RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        agent.send(Command.READY, {"name": "nil", "kinds": ["k"], "capacity": 1})
        agent.send(Command.HEARTBEAT, raw=b"\xc0")
        agent.send(Command.DISCONNECT, raw=b"\xc0")
        assert [c for c, _ in agent.drain(0.5) if c is not Command.HEARTBEAT] == []
    with Client(swarm.endpoints.frontend) as c:
        assert c.status()["counters"]["malformed_backend"] == 0


def test_work_nobody_serves_is_announced_once_per_kind(swarm):
    """kind.unserved lets a launcher start agents on demand (the neural pool does)."""
    with Client(swarm.endpoints.frontend) as c:
        sub = subscribed(c, "kind.unserved")
        for _ in range(3):
            c.submit("lonely.kind", None)
        events = collect(sub, "kind.unserved", 3, timeout=1.5)
        assert [e["kind"] for _, e in events].count("lonely.kind") == 1, events
        with RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
            agent.send(Command.READY, {"name": "late", "kinds": ["lonely.kind"], "capacity": 3})
            assert len(agent.expect(Command.TASK)) >= 1
        c.submit("lonely.kind", None)  # its agent left (the RawPeer closed): announced again
        deadline = time.monotonic() + 10
        again = []
        while not again and time.monotonic() < deadline:
            if not c.status()["agents"]:
                c.submit("lonely.kind", None)
                again = collect(sub, "kind.unserved", 1, timeout=1.0)
    assert again and again[0][1]["kind"] == "lonely.kind"


def test_an_id_twice_in_one_submit_is_one_task(swarm):
    """Found when the client began batching submit()s: the broker accepted both entries,
    so one id was queued, and run, twice (reachable from any client since 1.0)."""
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as peer, \
            RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        agent.send(Command.READY, {"name": "raw", "kinds": ["k"], "capacity": 4})
        peer.send(Command.SUBMIT, [{"id": "twice", "kind": "k", "payload": 1},
                                   {"id": "twice", "kind": "k", "payload": 2}])
        assert peer.expect(Command.ACCEPTED) == ["twice", "twice"]
        assert [t["id"] for t in agent.expect(Command.TASK)] == ["twice"]
        assert [c for c, _ in agent.drain(0.5) if c is not Command.HEARTBEAT] == []  # no second run
        peer.send(Command.SUBMIT, [{"id": "split", "kind": "k"}, {"id": "split", "kind": "k", "project": "other"}])
        assert peer.expect(Command.ERROR)["code"] == "bad-field"
    with Client(swarm.endpoints.frontend) as c:
        assert c.status()["counters"]["duplicates"] == 1
