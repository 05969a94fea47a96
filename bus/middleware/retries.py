"""The retry policy in the task's life: after a failure, run again (with backoff) or
end it failed.  The policy itself (``retry`` field, defaults, backoff curve) is
bus/retry.py; this file is when it applies.

A lost task (its agent vanished, or no longer lists it) runs again at once: nothing
says it was at fault.  After an error it waits its backoff.  A handler that asks for
a retry (FAILED with ``retry: true``) gets one while attempts remain, whatever ``on``
says."""

from __future__ import annotations

from .. import retry as retry_policy
from ..lifecycle import Middleware
from ..task import Task


class Retries(Middleware):
    def failure(self, task: Task, cause: str, reason: str) -> tuple[float | None, str]:
        policy = retry_policy.from_field(task.retry, task.max_retries)
        retries = cause == "asked" or policy.retries(cause)
        if retries and task.attempts <= policy.max:
            return (0.0 if cause == "lost" else policy.delay(task.attempts)), reason
        if retries:
            return None, f"{reason}; retries exhausted after {task.attempts} attempts"
        return None, reason
