"""Workflows: DAG ordering, fan-out/fan-in, strategies, failure propagation, retries, durability."""

from __future__ import annotations

import os
import time

import pytest

from bus import Client, TaskFailed, TaskRejected

HERE = os.path.dirname(os.path.abspath(__file__))


def start_agents(group, count: int = 2, capacity: int = 4) -> None:
    for i in range(count):
        group.spawn(f"wf{i}", [os.path.join(HERE, "workflow_agent.py"), group.endpoints.backend, f"wf{i}",
                               str(capacity)])
    group.wait_agents(count)


def step(name: str, deps=(), **payload) -> dict:
    return {"name": name, "kind": "wf.step", "deps": list(deps), "payload": {"name": name, **payload}}


def test_fan_out_fan_in_in_dependency_order(swarm):
    start_agents(swarm)
    steps = [step("fetch", sleep=0.1)] + [step(f"lint{i}", ["fetch"], sleep=0.3) for i in range(4)] + \
        [step("report", [f"lint{i}" for i in range(4)])]
    with Client(swarm.endpoints.frontend, ack_timeout=5) as c:
        sub = c.subscribe("workflow.")
        for _ in range(50):  # a probe workflow until the subscription is known to be live
            probe = c.submit_workflow([step("probe", sleep=0.0)])
            c.result(probe, timeout=10)
            seen = []
            while (event := sub.recv(timeout=0.1)) is not None:
                seen.append(event[1].get("id"))
            if probe in seen:
                break
        wf = c.submit_workflow(steps, strategy="parallel")
        result = c.result(wf, timeout=30)
        assert set(result) == {"fetch", "lint0", "lint1", "lint2", "lint3", "report"}
        lints = [result[f"lint{i}"] for i in range(4)]
        assert all(l["start"] >= result["fetch"]["end"] for l in lints)           # after their parent
        assert result["report"]["start"] >= max(l["end"] for l in lints)          # fan-in waits for all
        assert max(l["start"] for l in lints) < min(l["end"] for l in lints)      # fan-out ran together
        assert set(result["report"]["parents"]) == {f"lint{i}" for i in range(4)}
        assert result["lint2"]["parents"]["fetch"]["name"] == "fetch"             # parents' results
        topics = set()
        while (event := sub.recv(timeout=0.5)) is not None:
            if event[1].get("id") == wf:
                topics.add(event[0])
        assert {"workflow.started", "workflow.step", "workflow.done"} <= topics
        status = c.status([wf])
        assert status["tasks"][wf] == "done" and status["workflows"][wf]["steps"]["report"] == "done"


def test_sequential_strategy_runs_one_step_at_a_time(swarm):
    start_agents(swarm)
    steps = [step(f"s{i}", sleep=0.15) for i in range(4)]   # independent, yet one by one
    with Client(swarm.endpoints.frontend, ack_timeout=5) as c:
        result = c.result(c.submit_workflow(steps, strategy="sequential"), timeout=30)
    spans = sorted((r["start"], r["end"]) for r in result.values())
    assert all(nxt[0] >= prev[1] for prev, nxt in zip(spans, spans[1:]))
    assert [result[f"s{i}"]["start"] for i in range(4)] == sorted(r["start"] for r in result.values())


def test_failure_fails_dependents_with_the_cause_and_retries_rerun(swarm):
    start_agents(swarm, count=1)  # the test agent counts runs per process: one process sees them all
    steps = [step("build", fail_runs=5), step("test", ["build"]), step("deploy", ["test"]),
             step("docs"), step("flaky", fail_runs=2)]
    steps[-1]["retries"] = 2  # two failures, then success on the third run
    with Client(swarm.endpoints.frontend, ack_timeout=5) as c:
        wf = c.submit_workflow(steps)
        with pytest.raises(TaskFailed) as err:
            c.result(wf, timeout=30)
        assert err.value.state == "failed" and "build" in err.value.error
        states = c.status([wf])["workflows"][wf]["steps"]
        assert states == {"build": "failed", "test": "failed", "deploy": "failed", "docs": "done", "flaky": "done"}
        assert c.result(f"{wf}/flaky#3", timeout=5)["run"] == 3
        with pytest.raises(TaskFailed) as dep:
            c.result(f"{wf}/build", timeout=5)
        assert "fails on run 1" in dep.value.error


def test_invalid_workflows_are_rejected(swarm):
    with Client(swarm.endpoints.frontend, ack_timeout=5) as c:
        for steps, fragment in [([step("a", ["b"]), step("b", ["a"])], "cycle"),
                                ([step("a", ["nope"])], "unknown step"),
                                ([step("a"), step("a")], "twice"),
                                ([], "steps")]:
            with pytest.raises(TaskRejected) as err:
                c.submit_workflow(steps)
            assert fragment in str(err.value)


def test_workflow_resumes_after_broker_kill(procs, run_dir):
    journal = os.path.join(run_dir, "journal")
    procs.broker(journal=journal)
    start_agents(procs, count=2, capacity=2)
    steps = [step("a", sleep=0.1)] + [step(f"b{i}", ["a"], sleep=0.8) for i in range(3)] + \
        [step("c", [f"b{i}" for i in range(3)])]
    with Client(procs.endpoints.frontend, ack_timeout=10) as c:
        wf = c.submit_workflow(steps)
        import time
        deadline = time.monotonic() + 10
        while c.status([wf])["workflows"][wf]["steps"].get("b0") not in ("active",) and time.monotonic() < deadline:
            time.sleep(0.05)
        procs.kill("broker")
        procs.broker(journal=journal)
        result = c.result(wf, timeout=60)
    assert set(result) == {"a", "b0", "b1", "b2", "c"}
    assert set(result["c"]["parents"]) == {"b0", "b1", "b2"}


def test_cancelling_a_workflow_with_a_running_step_and_a_dependent_ends_cancelled(swarm):
    """Issue #16: CANCEL of a workflow whose running step had a dependent ended 'failed'
    ("dependency 'slow' cancelled"), while a one-step workflow ended 'cancelled'."""
    start_agents(swarm, count=1)
    with Client(swarm.endpoints.frontend, ack_timeout=5) as c, c.subscribe("workflow.") as sub:
        assert sub.wait_live(swarm.endpoints.events_in)
        wf = c.submit_workflow([step("slow", sleep=30), step("after", ["slow"])])
        deadline = time.monotonic() + 10
        while c.status([wf])["workflows"][wf]["steps"]["slow"] != "active" and time.monotonic() < deadline:
            time.sleep(0.05)
        c.cancel(wf)
        outcome = c.outcome(wf, timeout=10)
        assert outcome["state"] == "cancelled", outcome
        topics = []
        while (event := sub.recv(timeout=1.0)) is not None:
            if event[1].get("id") == wf:
                topics.append(event[0])
        assert "workflow.cancelled" in topics and "workflow.failed" not in topics
