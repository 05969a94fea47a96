"""Durable periodic schedules, and the MANAGE ops around tasks (issue #13).

On b788953 there were no schedules, no way to list tasks, purge a kind that nobody
serves, or run a failed task again.
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import Client, TaskRejected
from bus.errors import ProtocolError
from bus.journal import MemoryJournal
from bus.schedules import MAX_CATCH_UP, Scheduler, due_ticks

pytestmark = pytest.mark.timeout(120)


class Host:
    """The scheduler's view of a broker: it records what it was asked to run."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.events: list[tuple[str, dict]] = []

    def submit_scheduled(self, spec, task_id, owner) -> bool:
        if task_id in self.ids:
            return False
        self.ids.append(task_id)
        return True

    def publish_event(self, topic, body) -> None:
        self.events.append((topic, body))


def test_ticks_fire_once_and_missed_ones_are_caught_up_within_a_bound():
    now = [1_800_000_000.0]
    journal, host = MemoryJournal(), Host()
    sched = Scheduler(journal, host, clock=lambda: now[0])
    sched.add({"name": "beat", "cron": "* * * * * *", "kind": "k"}, "p", "local")
    journal.commit()
    for _ in range(3):
        now[0] += 1.0
        sched.fire_due()
        journal.commit()
    assert host.ids == [f"beat@{1_800_000_000 + i}" for i in (1, 2, 3)]
    # the broker dies before a commit: the tick it fired is gone with its task ...
    now[0] += 1.0
    sched.fire_due()
    lost_ids = list(host.ids)
    host.ids = lost_ids[:3]
    again = Scheduler(journal, host, clock=lambda: now[0])  # restarted from what was committed
    again.fire_due()
    journal.commit()
    assert host.ids == [f"beat@{1_800_000_000 + i}" for i in (1, 2, 3, 4)]  # ... and fired again, once
    # down for an hour: the latest MAX_CATCH_UP ticks run, not 3,600
    now[0] += 3600
    again.fire_due()
    assert len(host.ids) == 4 + MAX_CATCH_UP and host.ids[-1] == f"beat@{int(now[0])}"
    assert ("schedule.fired", {"name": "beat", "project": "p", "task": host.ids[-1], "tick": now[0]}) in host.events
    assert due_ticks("0 0 1 1 *", now[0], now[0] + 60) == []


@settings(max_examples=300, deadline=None)
@given(body=st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.text(max_size=10), st.integers(), st.none(), st.just("a@b"), st.just("x" * 200)),
    "cron": st.one_of(st.text(max_size=30), st.integers(), st.just("* * * * *"), st.just("61 * * * *"),
                      st.just("*/0 * * * *"), st.just("* * * * * * * *")),
    "kind": st.one_of(st.text(max_size=10), st.none(), st.just("")),
    "priority": st.one_of(st.integers(-3, 12), st.text(max_size=2)),
    "retry": st.one_of(st.none(), st.integers(-1, 200), st.text(max_size=3))}))
def test_hostile_schedules_are_refused_with_bad_field(body):
    journal = MemoryJournal()
    sched = Scheduler(journal, Host())
    try:
        added = sched.add(body, "p", None)
    except ProtocolError as exc:
        assert exc.code == "bad-field"
        assert sched.schedules == {}
        return
    assert added.next_at > time.time() - 1 and sched.schedules


def test_a_schedule_survives_broker_kill_without_losing_or_doubling_a_tick(procs, run_dir):
    journal = os.path.join(run_dir, "journal")
    procs.broker(journal=journal)
    procs.agent("a", capacity=4)
    procs.wait_agents(1)
    with Client(procs.endpoints.frontend, ack_timeout=5) as c:
        c.schedule("beat", "* * * * * *", "sys.echo", "tick")
        time.sleep(2.6)
        procs.kill("broker")   # SIGKILL, at whatever point of a tick it was
        time.sleep(1.5)        # ticks come and go while it is down
        procs.broker(journal=journal)
        time.sleep(2.6)
        [listed] = c.schedules()
        c.unschedule("beat")
        # Every second from the first tick to the last has its task, done, found by id in
        # the journal (FETCH): a lost tick would be an unknown id.  Ids are name@second, so
        # a tick cannot run twice under two ids.
        first, last = int(listed["created"]) + 1, int(listed["last_task"].split("@")[1])
        beats = [f"beat@{t}" for t in range(first, last + 1)]
        assert len(beats) >= 6, listed
        outcomes = c.results(beats, timeout=20)
        assert [(o["state"], o["result"]) for o in outcomes] == [("done", "tick")] * len(beats)
        assert listed["fired"] >= len(beats) - 1  # fired counts only what the surviving broker fired
        assert c.schedules() == []


def test_list_purge_and_requeue(swarm):
    swarm.agent("a", capacity=2)
    swarm.wait_agents(1)
    with Client(swarm.endpoints.frontend, project="web") as c, Client(swarm.endpoints.frontend, project="ops") as ops:
        failed = c.submit("sys.fail", "disk full")
        c.outcome(failed, timeout=10)
        stuck = [c.submit("nobody.serves", i) for i in range(3)]
        theirs = ops.submit("nobody.serves", "ops")
        assert [t["id"] for t in c.tasks(state="failed")] == [failed]
        assert {t["id"] for t in c.tasks(state="queued", kind="nobody.serves", project="web")} == set(stuck)
        assert c.purge("nobody.serves", project="web") == 3
        assert all(c.outcome(i, timeout=5)["state"] == "cancelled" for i in stuck)
        assert ops.status([theirs])["tasks"][theirs] == "queued"  # another project's work is untouched
        [(old, new)] = c.requeue(failed).items()
        assert old == failed and new != failed
        assert c.outcome(new, timeout=10)["state"] == "failed"  # it ran again (and failed again)
        with pytest.raises(TaskRejected) as err:
            c.manage("tasks", limit=0)
        assert err.value.code == "bad-field"
        ops.purge("nobody.serves")
