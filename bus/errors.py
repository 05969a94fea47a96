"""Every error the bus raises, in one place so callers can catch by family."""

from __future__ import annotations


class BusError(Exception):
    """Base class of everything the bus package raises."""


class ProtocolError(BusError):
    """A frame or body that does not follow OFP/1.

    ``code`` is the short machine-readable reason that also travels in ERROR
    replies, so a peer in another language can switch on it.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PayloadTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__("too-large", f"body of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class AuthError(BusError):
    """Keys or identities that cannot be used: missing, malformed, or not allowed."""


class BrokerUnavailable(BusError):
    """No broker answered in time; raised fast so the IDE never hangs."""


class TaskFailed(BusError):
    """The task ended in a state other than ``done``."""

    def __init__(self, task_id: str, state: str, error: str | None, result: object = None) -> None:
        super().__init__(f"task {task_id} {state}: {error}")
        self.task_id = task_id
        self.state = state
        self.error = error
        self.result = result  # data the agent kept beside the failure (a shell task's exit code, output)


class TaskRejected(BusError):
    """The broker refused a submission (bad field, too large, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class UnknownTask(BusError):
    """The broker knows no such task, and this client holds no submission to resend."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"the broker knows no task {task_id!r}")
        self.task_id = task_id
