"""Regression tests for the crashes, wedges and poisonings of issue #11, each against a
real broker process.  Every test here failed on b788953 (the broker died, a task
stayed in flight forever, or the swarm stayed down after a restart)."""

from __future__ import annotations

import os
import time

import msgpack
import pytest

from bus import Client, TaskFailed
from bus import protocol as P
from bus.protocol import Command
from store.journal import TaskJournal

from peers import RawPeer  # tests/bus/peers.py (pytest puts this directory on sys.path)

DEEP_1000 = b"\x91" * 1000 + b"\xc0"     # a list nested 1,000 deep, encoded by hand
EMOJI = "\U0001F600"                      # 4 bytes of UTF-8


def journal_broker(procs, run_dir, **kw):
    return procs.broker(journal=os.path.join(run_dir, "journal"), **kw)


def restart_broker(procs, run_dir, **kw):
    procs.kill("broker")
    return journal_broker(procs, run_dir, **kw)


def alive(procs) -> bool:
    with Client(procs.endpoints.frontend, ack_timeout=5) as c:
        c.status()
    return procs.procs["broker"].poll() is None


# ---------------------------------------------------------------------- single messages


@pytest.mark.parametrize("command", [Command.FETCH, Command.STATUS, Command.CANCEL])
def test_empty_id_is_refused_not_fatal(procs, run_dir, command):
    journal_broker(procs, run_dir)
    with RawPeer(procs.endpoints.frontend, P.CLIENT) as peer:
        peer.send(command, {"ids": [""]})
        err = peer.expect(Command.ERROR)
        assert err["code"] == "bad-field" and "ids" in err["message"]
    assert alive(procs)


def test_ids_are_limited_in_bytes_not_characters(procs, run_dir):
    journal_broker(procs, run_dir)
    procs.agent("a", capacity=2)
    procs.wait_agents(1)
    with RawPeer(procs.endpoints.frontend, P.CLIENT) as peer:
        peer.send(Command.SUBMIT, [{"id": EMOJI * 128, "kind": "sys.echo"}])    # 512 bytes
        assert peer.expect(Command.ERROR)["code"] == "bad-field"
        peer.send(Command.WORKFLOW, {"id": EMOJI * 40, "steps": [{"name": "s", "kind": "sys.echo"}]})  # 160 bytes
        assert peer.expect(Command.ERROR)["code"] == "bad-field"
    with Client(procs.endpoints.frontend, ack_timeout=5) as c:
        # The longest ids allowed, in 4-byte characters, run and finish (120 crashed it at the end).
        task_id = EMOJI * (P.MAX_ID_BYTES // 4)
        c.submit("sys.echo", "x", task_id=task_id)
        assert c.result(task_id, timeout=10) == "x"
        wf = c.submit_workflow([{"name": EMOJI * 15, "kind": "sys.echo", "payload": 1}],
                               workflow_id=EMOJI * (P.MAX_WORKFLOW_ID_BYTES // 4))
        assert c.result(wf, timeout=10) == {EMOJI * 15: 1}
    assert alive(procs)


def test_failed_with_error_nested_1000_deep(swarm):
    with RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        agent.send(Command.READY, {"name": "evil", "kinds": ["k"], "capacity": 1})
        with Client(swarm.endpoints.frontend) as c:
            task_id = c.submit("k", None)
            [assignment] = agent.expect(Command.TASK)
            raw = msgpack.packb([{"id": assignment["id"]}])[:-1]  # reopen the map to add 'error'
            body = b"\x91\x82\xa2id" + msgpack.packb(assignment["id"]) + b"\xa5error" + DEEP_1000
            agent.send(Command.FAILED, raw=body)
            assert agent.expect(Command.ERROR)["code"] == "too-deep"
            # A bounded but odd error (a nested map) is kept as a bounded string.
            agent.send(Command.FAILED, [{"id": task_id, "error": {"a": [[[1]]] * 5000}}])
            with pytest.raises(TaskFailed) as failed:
                c.result(task_id, timeout=10)
            assert failed.value.error.startswith("(non-string error)") and len(failed.value.error) < 1000
    assert swarm.procs["broker"].poll() is None


def test_workflow_step_payload_nested_past_the_limit(procs, run_dir):
    journal_broker(procs, run_dir)
    deep: object = None
    for _ in range(P.MAX_DEPTH + 1):
        deep = [deep]
    with RawPeer(procs.endpoints.frontend, P.CLIENT) as peer:
        peer.send(Command.WORKFLOW, {"steps": [{"name": "s", "kind": "k", "payload": deep}]})
        assert peer.expect(Command.ERROR)["code"] == "too-deep"
    assert alive(procs)


def test_reserved_kind_is_refused_and_status_survives(procs, run_dir):
    journal_broker(procs, run_dir)
    with RawPeer(procs.endpoints.frontend, P.CLIENT) as peer:
        peer.send(Command.SUBMIT, [{"id": "w1", "kind": "workflow", "payload": [1, 2]}])
        err = peer.expect(Command.ERROR)
        assert err["code"] == "bad-field" and "reserved" in err["message"] and err["ids"] == ["w1"]
        peer.send(Command.STATUS, {"ids": ["w1"]})
        assert peer.expect(Command.STATUS_REPLY)["tasks"] == {"w1": None}


def test_empty_submit_gets_an_error(swarm):
    with RawPeer(swarm.endpoints.frontend, P.CLIENT) as peer:
        peer.send(Command.SUBMIT, [])
        assert peer.expect(Command.ERROR)["code"] == "bad-body"


# ---------------------------------------------------------------------- poisoned restarts


def test_replay_quarantines_what_it_cannot_restore(procs, run_dir):
    """A workflow-kind record with a list payload (what `orchflow submit workflow` wrote)
    and a row with a wrong-typed field: both quarantined, the good task replays and runs."""
    from bus.task import Task
    path = os.path.join(run_dir, "journal")
    journal = TaskJournal(path)
    journal.write(Task("poison-wf", "workflow", [1, 2], "default", 5, None, 3, time.time()))
    bad = Task("poison-kind", "sys.echo", None, "default", 5, None, 3, time.time())
    bad.priority = "high"  # type: ignore[assignment]
    journal.write(bad)
    journal.write(Task("good", "sys.echo", "survivor", "default", 5, None, 3, time.time()))
    journal.commit()
    journal.close()
    journal_broker(procs, run_dir)
    procs.agent("a")
    procs.wait_agents(1)
    with Client(procs.endpoints.frontend, ack_timeout=5) as c:
        assert c.result("good", timeout=10) == "survivor"
        st = c.status(["poison-wf"])
        assert st["quarantined"] == 2 and st["tasks"] == {"poison-wf": None}
    procs.kill("broker")
    journal = TaskJournal(path)
    assert set(journal.quarantined()) == {"poison-wf", "poison-kind"}
    journal.close()


def test_bad_routing_model_falls_back_to_least_loaded(procs, run_dir):
    """`neural.load` of a model named router with meta {"pairs": 5} killed the broker
    on its next dispatch, and on every restart."""
    from neural.routing_model import new_model
    from store import Memory
    memory_dir = os.path.join(run_dir, "memory")
    memory = Memory(memory_dir)
    memory.put("neural", "router@1", {"fann": new_model().dumps(), "meta": {"pairs": 5}})
    memory.put("neural", "router/latest", 1)
    del memory  # one env per process and path (store.env.open_env): nothing to close
    procs.broker(memory=memory_dir, learned_routing=True)
    procs.agent("a", capacity=2)
    procs.wait_agents(1)
    with Client(procs.endpoints.frontend) as c:
        ids = c.submit_many("sys.echo", list(range(20)))
        assert [o["result"] for o in c.results(ids, timeout=10)] == list(range(20))
    assert procs.procs["broker"].poll() is None


def test_a_finished_client_id_is_not_run_again_after_restart(procs, run_dir):
    journal_broker(procs, run_dir)
    procs.agent("a")
    procs.wait_agents(1)
    with Client(procs.endpoints.frontend, ack_timeout=5) as c:
        c.submit("sys.echo", "first", task_id="once")
        assert c.result("once", timeout=10) == "first"
    restart_broker(procs, run_dir)
    procs.wait_agents(1)
    with Client(procs.endpoints.frontend, ack_timeout=5) as c:
        c.submit("sys.echo", "second", task_id="once")
        assert c.result("once", timeout=10) == "first"
        counters = c.status()["counters"]
        assert counters["submitted"] == 0 and counters["duplicates"] == 1


def test_a_submit_batch_mixing_finished_and_new_ids_after_restart(procs, run_dir):
    """The journal is read once for a whole SUBMIT: the finished ids in it are answered
    from their records, the new ones run, and an id twice is one task."""
    journal_broker(procs, run_dir)
    procs.agent("a")
    procs.wait_agents(1)
    with Client(procs.endpoints.frontend, ack_timeout=5) as c:
        for i in range(3):
            c.submit("sys.echo", f"first {i}", task_id=f"old-{i}")
        assert c.results([f"old-{i}" for i in range(3)], timeout=10)[2]["result"] == "first 2"
    restart_broker(procs, run_dir)
    procs.wait_agents(1)
    with Client(procs.endpoints.frontend, ack_timeout=5) as c:
        ids = ["new-0", "old-0", "new-1", "old-2", "new-0", "old-1"]
        for task_id in ids:  # one SUBMIT: submit() batches what follows it within the linger
            c.submit("sys.echo", f"second {task_id}", task_id=task_id)
        outcomes = {o["id"]: o["result"] for o in c.results(list(dict.fromkeys(ids)), timeout=10)}
        assert outcomes == {"new-0": "second new-0", "new-1": "second new-1",
                            "old-0": "first 0", "old-1": "first 1", "old-2": "first 2"}
        counters = c.status()["counters"]
        assert counters["submitted"] == 2 and counters["duplicates"] == 4


def test_call_resubmits_what_a_restarted_broker_never_journaled(procs):
    """A broker without a journal forgets everything; call() sends the task again."""
    import threading
    procs.broker()
    outcome: dict = {}

    def caller():
        with Client(procs.endpoints.frontend, ack_timeout=2) as c:
            outcome["value"] = c.call("sys.echo", "again", timeout=30)

    thread = threading.Thread(target=caller)
    thread.start()
    time.sleep(0.5)  # queued: no agent yet
    procs.kill("broker")
    procs.broker()
    procs.agent("a")
    thread.join(30)
    assert outcome.get("value") == "again"


# ---------------------------------------------------------------------- agents and registration


def test_invalid_ready_from_an_unknown_agent_gets_error_only(swarm):
    with RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        agent.send(Command.READY, {"name": "x", "kinds": []})
        replies = agent.drain(0.5)
        assert [cmd for cmd, _ in replies] == [Command.ERROR]


def test_a_backlog_from_an_unknown_agent_draws_one_disconnect(swarm):
    with RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        for _ in range(8):
            agent.send(Command.HEARTBEAT)
        agent.send(Command.HEARTBEAT, raw=b"\xc0")  # encoded nil = empty body (section 3)
        replies = agent.drain(0.5)
        assert [cmd for cmd, _ in replies] == [Command.DISCONNECT]


def test_malformed_frames_count_as_a_sign_of_life(procs):
    procs.broker(heartbeat=0.2)
    with RawPeer(procs.endpoints.backend, P.AGENT) as agent:
        agent.send(Command.READY, {"name": "noisy", "kinds": ["k"], "capacity": 1})
        end = time.monotonic() + 2.0  # over three liveness windows (0.6 s)
        while time.monotonic() < end:
            agent.sock.send_multipart([P.AGENT, b"\x23", b"\xc1"])  # DONE with invalid msgpack
            time.sleep(0.1)
        with Client(procs.endpoints.frontend) as c:
            assert [a["name"] for a in c.status()["agents"]] == ["noisy"]


# ---------------------------------------------------------------------- size limits and leases


def test_big_tasks_queued_before_an_agent_joins_all_finish(swarm):
    """4 x 5 MB went out as one 20 MB TASK the agent dropped: 4/4 in flight forever."""
    blob = "x" * (5 * 1024 * 1024)
    with Client(swarm.endpoints.frontend, ack_timeout=5) as c:
        ids = [c.submit("sys.echo", blob) for _ in range(4)]
        swarm.agent("a", capacity=4)
        outcomes = c.results(ids, timeout=60)
        assert [len(o["result"]) for o in outcomes] == [len(blob)] * 4


def test_an_assignment_over_the_agents_limit_fails_its_task(swarm):
    with RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        agent.send(Command.READY, {"name": "small", "kinds": ["k"], "capacity": 2, "max_body": 4096})
        with Client(swarm.endpoints.frontend) as c:
            big, small = c.submit("k", "y" * 10_000), c.submit("k", "ok")
            [assignment] = agent.expect(Command.TASK)
            assert assignment["id"] == small
            with pytest.raises(TaskFailed) as failed:
                c.result(big, timeout=10)
            assert "too-large" in failed.value.error


def test_a_shell_result_over_the_limit_fails_with_a_clear_error(swarm):
    swarm.agent("a")
    with Client(swarm.endpoints.frontend) as c:
        with pytest.raises(TaskFailed) as failed:
            c.call("shell", {"cmd": "head -c 20000000 /dev/zero | tr '\\0' x"}, timeout=60)
        assert "too-large" in failed.value.error


def test_an_oversize_done_from_a_raw_agent_fails_the_task(swarm):
    with RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        agent.send(Command.READY, {"name": "raw", "kinds": ["k"], "capacity": 1})
        with Client(swarm.endpoints.frontend) as c:
            task_id = c.submit("k", None)
            agent.expect(Command.TASK)
            agent.send(Command.DONE, [{"id": task_id, "result": "z" * (P.MAX_BODY + 10)}])
            with pytest.raises(TaskFailed) as failed:
                c.result(task_id, timeout=10)
            assert "too-large" in failed.value.error


def test_a_task_the_agent_does_not_hold_is_requeued(procs):
    """The lease: an agent whose HEARTBEAT no longer lists a task lost it."""
    procs.broker(heartbeat=0.2)
    with RawPeer(procs.endpoints.backend, P.AGENT) as forgetful:
        forgetful.send(Command.READY, {"name": "forgetful", "kinds": ["sys.echo"], "capacity": 1})
        with Client(procs.endpoints.frontend) as c:
            task_id = c.submit("sys.echo", "kept")
            forgetful.expect(Command.TASK)
            forgetful.send(Command.READY, {"name": "forgetful", "kinds": ["sys.echo"], "capacity": 0})
            procs.agent("honest")
            end = time.monotonic() + 10
            while time.monotonic() < end:
                forgetful.send(Command.HEARTBEAT, {"running": []})
                time.sleep(0.1)
                if c.status([task_id])["tasks"][task_id] == "done":
                    break
            assert c.result(task_id, timeout=5) == "kept"
            assert c.status()["counters"]["lease_expired"] == 1


def test_progress_events_are_bounded_in_bytes(swarm):
    from bus.events import MAX_EVENT_BYTES, bounded
    body = bounded({"id": "t", "data": "p" * 100_000})
    assert body["data"]["truncated"] is True and body["data"]["bytes"] > 100_000
    assert len(P.pack(body)) <= MAX_EVENT_BYTES
    with RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
        agent.send(Command.READY, {"name": "chatty", "kinds": ["k"], "capacity": 1})
        with Client(swarm.endpoints.frontend) as c:
            sub = c.subscribe("task.progress")
            time.sleep(0.3)
            task_id = c.submit("k", None)
            agent.expect(Command.TASK)
            agent.send(Command.PROGRESS, [{"id": task_id, "data": "p" * 1_000_000}])
            topic, event = sub.recv(timeout=5)
            assert topic == "task.progress" and event["data"]["truncated"] is True
            assert len(P.pack(event)) <= MAX_EVENT_BYTES
