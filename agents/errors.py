"""Errors of the agent SDK, and the exceptions handlers raise to steer the broker."""

from __future__ import annotations


class AgentError(Exception):
    """Misuse of the SDK (no handlers, bad capacity, ...)."""


class Retry(Exception):
    """Raise from a handler to ask the broker to run the task again (within max_retries)."""


class TaskCancelled(Exception):
    """Raised by ``ctx.check_cancelled()`` once the broker cancelled the task."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} was cancelled")
        self.task_id = task_id
