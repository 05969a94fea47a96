"""Per-kind priority queues with O(1) push and pop."""

from __future__ import annotations

from collections import deque

from .protocol import PRIORITY_MAX, PRIORITY_MIN, State
from .task import Task


class KindQueue:
    """Tasks of one kind waiting for an agent, highest priority first, FIFO within a priority.

    Priorities are a small fixed range, so one deque per level beats a heap: no
    comparisons on the hot path and stable order for free.  Cancelled or expired
    tasks are left in place and skipped when popped (lazy deletion keeps cancel O(1)).
    """

    __slots__ = ("levels", "live")

    def __init__(self) -> None:
        self.levels: list[deque[Task]] = [deque() for _ in range(PRIORITY_MAX - PRIORITY_MIN + 1)]
        self.live = 0

    def push(self, task: Task, front: bool = False) -> None:
        level = self.levels[task.priority - PRIORITY_MIN]
        if front:
            level.appendleft(task)
        else:
            level.append(task)
        self.live += 1

    def forget(self) -> None:
        """A queued task left the queue without being popped (cancel, expiry)."""
        self.live -= 1

    def pop(self) -> Task | None:
        if self.live <= 0:
            return None
        for level in reversed(self.levels):
            while level:
                task = level.popleft()
                if task.state == State.QUEUED and task.agent is None:
                    self.live -= 1
                    return task
        self.live = 0
        return None

    def oldest(self) -> float | None:
        """When the longest-waiting live task was submitted (for queue-age metrics; walks
        past dead entries at the heads of the levels, so call it at a metrics' pace)."""
        best = None
        for level in self.levels:
            for task in level:
                if task.state == State.QUEUED and task.agent is None:
                    if best is None or task.submitted < best:
                        best = task.submitted
                    break
        return best

    def __len__(self) -> int:
        return self.live
