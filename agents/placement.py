"""Where a plain ``def`` handler runs: on the agent's loop, or on its thread pool.

A task handed to a worker thread costs two thread wake-ups and two GIL hand-offs
(pool queue, then the outcome back to the loop): 70-90 µs of a ``call()``'s latency
for a handler like ``return 2 * x`` (``bench/handlers.py``).  Run on the loop, that
handler costs a function call.  But a handler on the loop
holds everything up while it runs, and one that waits (I/O, sleep) would serialize
work that threads overlap.  So a handler nobody placed (``inline=None``) earns the
loop by being quick, and loses it by being slow or by waiting:

* it starts on the pool, and moves to the loop after ``PROMOTE_AFTER`` runs in a row
  that each took at most ``QUICK_RUN``;
* on the loop, a run is slow if it took over ``SLOW_ON_LOOP``, or over ``WAIT_FLOOR``
  with less than half of it on the CPU (it waited for something a thread could have
  overlapped).  A second slow run within ``WINDOW`` runs of the last one sends it
  back to the pool; one alone does not, since a loaded machine preempts the loop now
  and then, and a preempted run looks exactly like a waiting one;
* each return doubles the streak it needs to come back, and after ``MAX_RETURNS``
  it stays on the pool: a handler whose speed swings does not flap;
* a handler that raises on the loop (any exception but TaskError, Retry and
  TaskCancelled, which are outcomes it chose) goes back for good, and that task runs
  again on the pool, once.  A handler bound to its thread, say a sqlite3 connection
  made on the one worker of a capacity-1 agent, fails on the loop; this way it keeps
  working, at the price of one extra run of a task that was failing anyway.

An agent whose every kind (of those it has run) runs on the loop asks the broker for a
deeper credit, ``LOOP_PREFETCH`` tasks beyond its capacity (``Agent(prefetch=None)``,
the default; an explicit ``prefetch`` stays as given).  Those tasks run the moment
they arrive, so holding more of them costs no imbalance worth the name, while a
shallow credit left such an agent idle for a broker round trip after every few
tasks: with 2 agents x 4, that round trip, not the CPU, set the pace
(``bench/handlers.py``).  The first task of a kind on the pool (or async) brings the
credit back to the capacity.

A run that blocks the loop for long is still safe: the agent's watchdog keeps
heartbeating for it (``agents/watchdog.py``), so the broker does not take the agent
for dead.  ``inline=True`` and ``inline=False`` pin a handler where its author wants it.
"""

from __future__ import annotations

import logging

from .errors import Retry, TaskCancelled, TaskError

log = logging.getLogger("orchflow.agent")
_DELIBERATE = (TaskError, Retry, TaskCancelled)  # outcomes a handler chooses, wherever it runs

QUICK_RUN = 250e-6     # seconds; a pool run this short counts toward the loop
PROMOTE_AFTER = 32     # runs in a row
SLOW_ON_LOOP = 1e-3    # seconds; a loop run longer than this goes back to the pool
WAIT_FLOOR = 50e-6     # seconds; below this, waiting is cheaper than a thread hop
WINDOW = 16            # runs; two slow ones this close send a handler back to the pool
MAX_RETURNS = 4
LOOP_PREFETCH = 64     # tasks held beyond capacity by an agent whose kinds all run on the loop


class Placement:
    """The running record of one adaptive handler; touched by the loop thread only."""

    __slots__ = ("kind", "on_loop", "_streak", "_needed", "_returns", "_since_slow")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.on_loop = False
        self._streak = 0
        self._needed = PROMOTE_AFTER
        self._returns = 0
        self._since_slow = WINDOW  # loop runs since the last slow one (WINDOW: none that counts)

    def ran_on_pool(self, took: float) -> bool:
        """Count a run on the pool; True if the handler now moves to the loop."""
        if self.on_loop:  # a run queued before the move, finishing after it
            return False
        if took > QUICK_RUN:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= self._needed and self._returns < MAX_RETURNS:
            self.on_loop = True
            self._streak = 0
            log.info("handler for %r runs on the agent's loop: %d runs in a row under %.0f µs", self.kind,
                     self._needed, QUICK_RUN * 1e6)
            return True
        return False

    def ran_on_loop(self, took: float, cpu: float) -> bool:
        """Count a run on the loop (``cpu``: its thread CPU time, only looked at past
        WAIT_FLOOR); True if the handler now goes back to the pool."""
        if took <= SLOW_ON_LOOP and (took <= WAIT_FLOOR or cpu >= took / 2):
            self._since_slow += 1
            return False
        if self._since_slow >= WINDOW:  # the first slow run in a while: a preemption, maybe
            self._since_slow = 0
            return False
        self.on_loop = False
        self._since_slow = WINDOW
        self._returns += 1
        self._needed *= 2
        log.info("handler for %r back on the thread pool: two of its runs on the loop within %d were slow or waited "
                 "(the last: %.0f µs)%s", self.kind, WINDOW, took * 1e6, "" if self._returns < MAX_RETURNS else "; for good")
        return True

    def raised_on_loop(self, error: BaseException) -> bool:
        """True if the handler, having raised ``error`` on the loop, now goes back to
        the pool for good (its task to run again there); False for a deliberate outcome."""
        if isinstance(error, _DELIBERATE) or not isinstance(error, Exception):
            return False
        self.on_loop = False
        self._returns = MAX_RETURNS
        log.warning("handler for %r back on the thread pool for good: on the loop it raised %s (bound to its "
                    "thread?); the task runs again on a worker", self.kind, type(error).__name__)
        return True
