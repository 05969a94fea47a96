"""Retry policies with backoff, and delayed tasks (issue #13).

On b788953 only agent loss was retried: a handler's exception with max_retries=2 gave
``attempts: 1``, there was no backoff, and no task could wait for a later time.
"""

from __future__ import annotations

import os
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import Client, TaskFailed, retry
from bus import protocol as P
from bus.errors import ProtocolError, TaskRejected
from bus.protocol import Command

from peers import RawPeer  # tests/bus/peers.py

pytestmark = pytest.mark.timeout(120)

hostile = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                                 st.floats(allow_nan=True, allow_infinity=True)),
                       lambda inner: st.one_of(st.lists(inner, max_size=3),
                                               st.dictionaries(st.sampled_from(["max", "on", "backoff", "backoff_max",
                                                                                "x"]), inner, max_size=4)),
                       max_leaves=8)


@settings(max_examples=500, deadline=None)
@given(value=hostile, legacy=st.one_of(st.none(), st.integers(-5, 200)))
def test_any_retry_field_is_a_policy_or_a_clear_refusal(value, legacy):
    try:
        policy = retry.parse(value, legacy)
    except ProtocolError as exc:
        assert exc.code == "bad-field" and ("retry" in exc.message or "max_retries" in exc.message)
        return
    assert 0 <= policy.max <= retry.MAX_RETRIES and policy.on in retry.ON
    assert 0 <= policy.backoff <= retry.MAX_BACKOFF and 0 <= policy.backoff_max <= retry.MAX_BACKOFF
    for attempt in (1, 2, 10, 1000):
        assert 0 <= policy.delay(attempt) <= policy.backoff_max


def test_backoff_doubles_with_equal_jitter_up_to_the_cap():
    policy = retry.parse({"max": 10, "backoff": 1.0, "backoff_max": 5.0})
    rng = random.Random(7)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed
    assert retry.parse(3) == retry.RetryPolicy(max=3, on="both")
    assert retry.parse(None, 2) == retry.RetryPolicy(max=2, on="lost")  # the legacy field
    assert retry.parse(None) == retry.DEFAULT and retry.DEFAULT.to_field() is None


def test_errors_retry_with_backoff_recorded_in_the_outcome(swarm):
    swarm.agent("a", capacity=2)
    swarm.wait_agents(1)
    with Client(swarm.endpoints.frontend) as c:
        once = c.outcome(c.submit("sys.fail", "no retry asked"), timeout=10)
        assert once["state"] == "failed" and once["attempts"] == 1 and "retries" not in once

        started = time.time()
        outcome = c.outcome(c.submit("sys.fail", "flaky disk", retry={"max": 2, "backoff": 0.4}), timeout=20)
        assert outcome["state"] == "failed" and outcome["attempts"] == 3
        assert outcome["error"] == "RuntimeError: flaky disk; retries exhausted after 3 attempts"
        first, second = outcome["retries"]
        assert [first["attempt"], second["attempt"]] == [1, 2]
        assert 0.2 <= first["delay"] <= 0.4 and 0.4 <= second["delay"] <= 0.8
        assert second["at"] - first["at"] >= first["delay"] - 0.01  # it really waited
        assert time.time() - started >= first["delay"] + second["delay"] - 0.05


def test_retry_on_error_only_does_not_rerun_a_lost_task(swarm):
    with Client(swarm.endpoints.frontend) as c:
        for policy, expected in (({"max": 3, "on": "error"}, "failed"), (None, "queued")):
            with RawPeer(swarm.endpoints.backend, P.AGENT) as agent:
                agent.send(Command.READY, {"name": "vanishing", "kinds": ["k"], "capacity": 1})
                task_id = c.submit("k", None, **({"retry": policy} if policy else {}))
                agent.expect(Command.TASK)
                agent.send(Command.DISCONNECT)  # gone with the task in flight: a loss
                deadline = time.monotonic() + 5
                while c.status([task_id])["tasks"][task_id] == "running" and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert c.status([task_id])["tasks"][task_id] == expected
            if expected == "failed":
                with pytest.raises(TaskFailed, match="agent disconnected on vanishing"):
                    c.result(task_id, timeout=5)
            else:
                c.cancel(task_id)


def test_delayed_tasks_wait_and_can_be_cancelled(swarm):
    swarm.agent("a", capacity=2)
    swarm.wait_agents(1)
    with Client(swarm.endpoints.frontend) as c:
        t0 = time.time()
        later = c.submit("sys.echo", "later", delay=1.0)
        at = c.submit("sys.echo", "at", eta=t0 + 1.5)
        doomed = c.submit("sys.echo", "never", delay=30)
        status = c.status([later, at, doomed])
        assert status["delayed"] == 3 and set(status["tasks"].values()) == {"queued"}
        assert c.call("sys.echo", "now", timeout=5) == "now"  # others are not held up
        assert c.result(later, timeout=10) == "later" and time.time() - t0 >= 1.0
        assert c.result(at, timeout=10) == "at" and time.time() - t0 >= 1.5
        c.cancel(doomed)
        assert c.outcome(doomed, timeout=5)["state"] == "cancelled"
        status = c.status()
        assert status["delayed"] == 0 and status["queues"] == {}
        assert c.call("sys.echo", "still fine", timeout=5) == "still fine"
        for bad in ({"delay": -1}, {"delay": float("inf")}, {"eta": "noon"}, {"delay": 1, "eta": 2}):
            with pytest.raises(TaskRejected) as err:
                c.submit("sys.echo", 1, **bad)
                c.flush()  # a refusal arrives with the acknowledgements
            assert err.value.code == "bad-field"


def test_a_delayed_task_survives_a_broker_kill_and_still_waits(procs, run_dir):
    journal = os.path.join(run_dir, "journal")
    procs.broker(journal=journal)
    procs.agent("a")
    procs.wait_agents(1)
    with Client(procs.endpoints.frontend, ack_timeout=5) as c:
        submitted = time.time()
        task_id = c.submit("sys.echo", "kept", delay=2.0)
        procs.kill("broker")
        procs.broker(journal=journal)
        assert c.result(task_id, timeout=20) == "kept"
        assert time.time() - submitted >= 2.0


def test_workflow_steps_take_the_same_retry_policy(swarm):
    swarm.agent("a", capacity=2)
    swarm.wait_agents(1)
    with Client(swarm.endpoints.frontend) as c:
        wf = c.submit_workflow([{"name": "flaky", "kind": "sys.fail", "payload": "nope",
                                 "retry": {"max": 1, "backoff": 0.1}}])
        outcome = c.outcome(wf, timeout=20)
        assert outcome["state"] == "failed"
        step = c.outcome(f"{wf}/flaky", timeout=5)
        assert step["attempts"] == 2 and len(step["retries"]) == 1
