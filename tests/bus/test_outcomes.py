"""Every finished task leaves an outcome record in the shared store (what routing learns from)."""

from __future__ import annotations

import os

import pytest

from bus import Client, TaskFailed
from bus.outcomes import NAMESPACE, payload_features
from store import Memory
from store import env as E


def test_outcomes_are_recorded_with_agent_duration_and_success(procs, run_dir):
    memory_path = os.path.join(run_dir, "memory")
    procs.broker(memory=memory_path, record_outcomes=True)
    procs.agent("fast", capacity=2, kinds="sys.sleep,sys.fail")
    procs.wait_agents(1)
    with Client(procs.endpoints.frontend) as c:
        ids = c.submit_many("sys.sleep", [0.05] * 5 + [0.2] * 5)
        c.results(ids, timeout=20)
        with pytest.raises(TaskFailed):
            c.call("sys.fail", "nope", timeout=10)
        c.status()  # one more broker turn: the last batch is flushed after its commit
    mem = Memory(memory_path)
    records = [v for _, v in mem.items(NAMESPACE)]
    E.close_env(mem.path)
    sleeps = [r for r in records if r["kind"] == "sys.sleep"]
    assert len(sleeps) == 10 and all(r["agent"] == "fast" and r["success"] for r in sleeps)
    short = sorted(r["seconds"] for r in sleeps)[:5]
    long = sorted(r["seconds"] for r in sleeps)[5:]
    assert max(short) < 0.15 <= min(long)             # dispatch-to-answer time tracks the work
    failed = [r for r in records if r["kind"] == "sys.fail"]
    assert len(failed) == 1 and failed[0]["success"] is False
    assert sleeps[0]["features"] == payload_features(0.05) or sleeps[0]["features"] == payload_features(0.2)


def test_payload_features():
    assert payload_features(None) == [0.0, 0.0]
    assert payload_features({"n": 9, "name": "x"})[1] == pytest.approx(2.3026, abs=1e-4)
    assert payload_features(-3)[1] < 0
