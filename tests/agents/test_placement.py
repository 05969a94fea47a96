"""Where the SDK runs a plain handler: on a worker thread until it has shown itself
quick, then on the agent's loop, and back on the threads once it is slow or waits; and
the watchdog that heartbeats while a handler holds the loop."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from hypothesis import given, settings, strategies as st

from agents.placement import (LOOP_PREFETCH, MAX_RETURNS, PROMOTE_AFTER, QUICK_RUN, SLOW_ON_LOOP, WAIT_FLOOR, WINDOW,
                              Placement)
from bus import Client

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ the policy


def test_a_streak_of_quick_pool_runs_moves_the_handler_to_the_loop():
    p = Placement("k")
    for _ in range(PROMOTE_AFTER - 1):
        p.ran_on_pool(QUICK_RUN / 2)
    assert not p.on_loop
    p.ran_on_pool(QUICK_RUN * 2)          # one slow run starts the count again
    for _ in range(PROMOTE_AFTER - 1):
        p.ran_on_pool(QUICK_RUN)
    assert not p.on_loop
    p.ran_on_pool(QUICK_RUN)
    assert p.on_loop


def _promoted() -> Placement:
    p = Placement("k")
    for _ in range(PROMOTE_AFTER):
        p.ran_on_pool(0.0)
    assert p.on_loop
    return p


def test_slow_or_waiting_runs_send_it_back_and_the_way_back_gets_longer():
    p = _promoted()
    for _ in range(3 * WINDOW):
        p.ran_on_loop(SLOW_ON_LOOP / 2, SLOW_ON_LOOP / 2)  # busy on the CPU and under the limit: stays
        p.ran_on_loop(WAIT_FLOOR / 2, 0.0)                  # waited, but too briefly to matter: stays
    assert p.on_loop
    p.ran_on_loop(WAIT_FLOOR * 4, WAIT_FLOOR)               # waited through most of its run ...
    assert p.on_loop                                        # ... once: a preemption looks the same
    for _ in range(WINDOW):
        p.ran_on_loop(0.0, 0.0)
    p.ran_on_loop(WAIT_FLOOR * 4, WAIT_FLOOR)               # once again, WINDOW runs later: still once
    assert p.on_loop
    for _ in range(WINDOW - 1):
        p.ran_on_loop(0.0, 0.0)
    p.ran_on_loop(WAIT_FLOOR * 4, WAIT_FLOOR)               # twice within WINDOW runs: back
    assert not p.on_loop
    for _ in range(PROMOTE_AFTER):
        p.ran_on_pool(0.0)
    assert not p.on_loop                                  # the second time takes twice the streak
    for _ in range(PROMOTE_AFTER):
        p.ran_on_pool(0.0)
    assert p.on_loop
    p.ran_on_loop(SLOW_ON_LOOP * 2, SLOW_ON_LOOP * 2)     # too long for the loop, even on the CPU
    p.ran_on_loop(SLOW_ON_LOOP * 2, SLOW_ON_LOOP * 2)
    assert not p.on_loop


def test_a_handler_that_keeps_swinging_stays_on_the_pool():
    p = Placement("k")
    for _ in range(MAX_RETURNS):
        for _ in range(PROMOTE_AFTER << MAX_RETURNS):
            p.ran_on_pool(0.0)
        assert p.on_loop
        p.ran_on_loop(1.0, 1.0)
        p.ran_on_loop(1.0, 1.0)
    for _ in range(PROMOTE_AFTER << (MAX_RETURNS + 2)):
        p.ran_on_pool(0.0)
    assert not p.on_loop


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.01, allow_nan=False), st.floats(0, 0.01, allow_nan=False)), max_size=400))
def test_any_run_history_keeps_the_policy_s_promises(runs):
    """Whatever the durations: the loop only after a full streak of quick pool runs;
    leaving it exactly when a slow or waiting run comes within WINDOW runs of the last
    one; at most MAX_RETURNS moves back."""
    p = Placement("k")
    streak, returns, loop_runs = 0, 0, []  # loop_runs: slow or not, since the handler last moved to the loop
    for took, cpu in runs:
        if p.on_loop:
            p.ran_on_loop(took, cpu)
            slow = took > SLOW_ON_LOOP or (took > WAIT_FLOOR and cpu < took / 2)
            previous = [i for i, s in enumerate(loop_runs) if s]
            loop_runs.append(slow)
            if slow and previous and len(loop_runs) - 1 - previous[-1] <= WINDOW:
                assert not p.on_loop
                returns += 1
                loop_runs = []
            else:
                assert p.on_loop
        else:
            p.ran_on_pool(took)
            streak = streak + 1 if took <= QUICK_RUN else 0
            if p.on_loop:
                assert streak >= PROMOTE_AFTER << returns and returns < MAX_RETURNS
                streak = 0
    assert returns <= MAX_RETURNS


def test_an_unexpected_exception_on_the_loop_sends_the_handler_back_for_good():
    from agents.errors import Retry, TaskError
    p = _promoted()
    assert not p.raised_on_loop(TaskError("a failure the handler chose"))
    assert not p.raised_on_loop(Retry("later"))
    assert p.on_loop
    assert p.raised_on_loop(RuntimeError("bound to its thread"))
    assert not p.on_loop
    for _ in range(PROMOTE_AFTER << (MAX_RETURNS + 2)):
        p.ran_on_pool(0.0)
    assert not p.on_loop


# ------------------------------------------------------------------ a real agent


@pytest.fixture
def placement_agent(procs):
    procs.broker(heartbeat=0.2)
    proc = procs.spawn("placement", [os.path.join(HERE, "placement_agent.py"), procs.endpoints.backend, "0.2"])
    procs.wait_agents(1)
    return procs, proc


def test_a_quick_handler_moves_to_the_loop_a_waiting_one_moves_back_a_pinned_one_stays(placement_agent):
    """And the agent's credit follows: deep while every kind it ran runs on the loop."""
    procs, _ = placement_agent

    def prefetch(c: Client) -> int:
        return c.status()["agents"][0]["prefetch"]

    with Client(procs.endpoints.frontend) as c:
        assert prefetch(c) == 2                                   # capacity 2, nothing run yet
        first = [c.call("quick", None, timeout=10) for _ in range(PROMOTE_AFTER)]
        assert first == ["pool"] * PROMOTE_AFTER
        places = [c.call("quick", None, timeout=10) for _ in range(8 * PROMOTE_AFTER)]
        # a loaded machine may stretch a run past QUICK_RUN and restart the count
        assert "loop" in places, "a quick handler never moved to the loop"
        assert places[places.index("loop"):] == ["loop"] * (len(places) - places.index("loop"))
        assert prefetch(c) == LOOP_PREFETCH
        assert [c.call("quick", 0.005, timeout=10) for _ in range(2)] == ["loop"] * 2  # waited 5 ms twice ...
        assert [c.call("quick", None, timeout=10) for _ in range(5)] == ["pool"] * 5    # ... so back on the pool
        assert prefetch(c) == 2
        assert {c.call("pinned", None, timeout=10) for _ in range(3 * PROMOTE_AFTER)} == {"pool"}
        # submit() batches: the promoted handler runs many tasks of one TASK message in a row
        ids = [c.submit("quick", None) for _ in range(4 * PROMOTE_AFTER)]
        assert {o["state"] for o in c.results(ids, timeout=20)} == {"done"}


def test_a_handler_bound_to_its_worker_thread_keeps_working(placement_agent):
    """Moved to the loop, it raises there; that task runs again on a worker, and the
    handler stays on the workers: no task fails."""
    procs, _ = placement_agent
    with Client(procs.endpoints.frontend) as c:
        results = [c.call("affine", None, timeout=10) for _ in range(8 * PROMOTE_AFTER)]
        assert results == ["pool"] * len(results)
        counters = c.status()["counters"]
    assert (counters["failed"], counters["retried"]) == (0, 0)
    with open(os.path.join(procs.log_dir, "placement.log")) as log:  # it did move, and came back
        assert "for 'affine' back on the thread pool for good: on the loop it raised RuntimeError" in log.read()


def test_a_handler_holding_the_loop_past_the_liveness_window_keeps_the_agent_and_its_tasks(placement_agent):
    """Heartbeats 0.2 s, liveness 3: a handler on the loop for 2 s used to get the agent
    declared lost after 0.6 s and its tasks run a second time (a TASK that came in during
    the block as well).  The watchdog heartbeats for the loop and takes in that TASK."""
    procs, proc = placement_agent
    with Client(procs.endpoints.frontend) as c:
        blocked = c.submit("block", 2.0)
        c.flush()
        time.sleep(0.3)                           # the loop is inside block() now
        during = c.submit("pinned", None)         # the second slot: a TASK the loop cannot read yet
        outcomes = c.results([blocked, during], timeout=20)
        assert all("result" in o for o in outcomes), outcomes
        assert [o["result"] for o in outcomes] == ["loop", "pool"]
        assert [o.get("attempts", 1) for o in outcomes] == [1, 1]
        counters = c.status()["counters"]
    assert (counters["agents_lost"], counters["lease_expired"], counters["retried"]) == (0, 0, 0)
    assert proc.poll() is None


def test_a_handler_whose_speed_swings_under_load_runs_every_task_once(placement_agent):
    """648 tasks of one handler, mostly instant, some waiting 2-20 ms, four holding the
    loop or a thread for 0.8 s (four liveness windows): the handler moves between loop
    and pool, the credit deepens and shrinks with it (READY mid-flight), the watchdog
    takes in TASKs. Every task must end done, once, with no agent lost."""
    procs, proc = placement_agent
    rng = random.Random(14)
    payloads: list = []
    for _ in range(4):  # quick runs (to the loop, in 32, 64, 128 then never), then a burst of waits (back)
        payloads += [None] * 140 + [0.8] + [None] * 9 + [rng.choice([None, 0.002, 0.005, 0.02]) for _ in range(12)]
    with Client(procs.endpoints.frontend) as c:
        ids = [c.submit("quick", p) for p in payloads]
        outcomes = c.results(ids, timeout=45)
        assert [o["state"] for o in outcomes] == ["done"] * len(ids), [o for o in outcomes if o["state"] != "done"][:3]
        assert {o["result"] for o in outcomes} <= {"loop", "pool"}
        assert "loop" in {o["result"] for o in outcomes}
        long_runs = [o["result"] for o, p in zip(outcomes, payloads) if p == 0.8]
        assert "loop" in long_runs, long_runs  # the watchdog had a loop to cover
        assert {o.get("attempts", 1) for o in outcomes} == {1}
        counters = c.status()["counters"]
    assert (counters["agents_lost"], counters["lease_expired"], counters["retried"], counters["late_results"]) \
        == (0, 0, 0, 0)
    assert proc.poll() is None


def test_kill_9_of_an_agent_holding_a_deep_credit_loses_no_task(procs, run_dir):
    """Two agents at the deep credit (64 beyond capacity) under a stream of tasks; one is
    killed -9 at a random moment. Everything it held runs again elsewhere: every
    acknowledged task ends done, none is lost."""
    procs.broker(heartbeat=0.2, journal=os.path.join(run_dir, "journal"))
    agents = [procs.spawn(f"p{i}", [os.path.join(HERE, "placement_agent.py"), procs.endpoints.backend, "0.2"])
              for i in range(2)]
    procs.wait_agents(2)
    with Client(procs.endpoints.frontend) as c:
        for _ in range(20):  # until both have moved the handler to the loop (a slow run restarts a streak)
            c.results([c.submit("quick", None) for _ in range(100)], timeout=20)
            if {a["prefetch"] for a in c.status()["agents"]} == {LOOP_PREFETCH}:
                break
        assert {a["prefetch"] for a in c.status()["agents"]} == {LOOP_PREFETCH}
        warmed = c.status()["counters"]["done"]
        ids = []
        kill_at = random.Random(9).randrange(500, 2500)
        for i in range(3000):
            ids.append(c.submit("quick", None))
            if i == kill_at:
                c.flush()
                time.sleep(0.005)
                os.kill(agents[0].pid, signal.SIGKILL)
        c.flush()  # every one acknowledged: journaled
        outcomes = c.results(ids, timeout=60)
        assert [o["state"] for o in outcomes] == ["done"] * len(ids)
        counters = c.status()["counters"]
    assert counters["agents_lost"] == 1 and counters["done"] == warmed + len(ids)
    assert counters["retried"] > 0  # the kill caught it holding tasks, which ran again elsewhere
    agents[0].wait(5)
