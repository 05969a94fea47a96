"""The agent SDK from a third party's side: decorators, async handlers, Retry, drain."""

from __future__ import annotations

import os
import signal
import time

import pytest

from bus import Client, TaskFailed

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def third_party(swarm):
    proc = swarm.spawn("third-party", [os.path.join(HERE, "third_party_agent.py"), swarm.endpoints.backend])
    swarm.wait_agents(1)
    return swarm, proc


def test_decorated_sync_async_and_retrying_handlers(third_party):
    swarm, _ = third_party
    with Client(swarm.endpoints.frontend, project="web") as c:
        assert c.call("greet", {"name": "ide"}, timeout=10) == "hello ide"
        t = time.monotonic()
        ids = [c.submit("slow.async", 0.3) for _ in range(4)]   # capacity 4: concurrently on one loop
        assert [r["result"] for r in c.results(ids, timeout=10)] == [{"slept": 0.3, "project": "web"}] * 4
        assert time.monotonic() - t < 1.0
        outcome = c.outcome(c.submit("flaky", None, max_retries=5), timeout=10)
        retries = outcome.pop("retries")
        assert outcome == {"id": outcome["id"], "state": "done", "attempts": 3, "result": 3}
        assert [r["attempt"] for r in retries] == [1, 2] and all(r["delay"] > 0 for r in retries)
        with pytest.raises(TaskFailed) as err:
            c.call("flaky", None, max_retries=1, timeout=10)      # retries exhausted
        assert "attempt 2 not yet" in err.value.error


def test_sigterm_drains_running_work(third_party):
    swarm, proc = third_party
    with Client(swarm.endpoints.frontend) as c:
        task = c.submit("slow.async", 1.0)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)       # drain: finish what runs, take nothing new
        assert c.result(task, timeout=10) == {"slept": 1.0, "project": "default"}
        proc.wait(10)
        assert proc.returncode == 0
        assert c.status()["counters"]["retried"] == 0


def test_one_unsendable_outcome_does_not_take_the_others_data():
    """A FAILED batch where one TaskError result cannot be packed: before, every entry of
    the batch lost its data; now only that one does, with the reason."""
    from bus import protocol as P
    from agents.runtime import _bodies
    entries = [{"id": "a", "error": "exit code 2", "result": {"exit_code": 2}},
               {"id": "b", "error": "bad", "result": object()},
               {"id": "c", "error": "big", "result": "x" * (P.MAX_BODY + 1)}]
    bodies, unsendable = _bodies(entries)
    sent = [e for body in bodies for e in P.unpack(body)]
    assert sent == [entries[0]]
    assert [(e["id"], why.split(":")[0]) for e, why in unsendable] == [("b", "is not serializable"),
                                                                       ("c", "too-large")]
