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


class TaskError(Exception):
    """Raise from a handler to fail the task with a clear message and keep ``result``
    (an exit code, an output tail) in its outcome: a failure people can act on
    without a traceback.  ``result`` must be msgpack-able, like any result."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result
