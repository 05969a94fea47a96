"""Recent round-trip latency in STATUS (``latency``: p50, p99 and how many tasks it
covers): what ``orchflow top`` draws, without a metrics server.  The last
``WINDOW`` tasks that an agent answered, from acceptance to final state."""

from __future__ import annotations

from collections import deque
from typing import Any

from ..lifecycle import Middleware
from ..protocol import State
from ..task import Task

WINDOW = 1000


class RecentLatency(Middleware):
    def __init__(self, window: int = WINDOW) -> None:
        self.samples: deque[float] = deque(maxlen=window)

    def finished(self, task: Task) -> None:
        if task.state in (State.DONE, State.FAILED) and task.finished and task.submitted:
            self.samples.append(task.finished - task.submitted)

    def report(self, body: dict[str, Any]) -> None:
        if self.samples:
            ordered = sorted(self.samples)
            n = len(ordered)
            body["latency"] = {"p50": round(ordered[n // 2], 6), "p99": round(ordered[min(n - 1, n * 99 // 100)], 6),
                               "n": n}
