"""The broker's record of one task, and how it is written to the journal."""

from __future__ import annotations

from typing import Any

from .protocol import State, TaskSpec

_FIELDS = ("id", "kind", "payload", "project", "priority", "deadline", "max_retries",
           "attempts", "state", "result", "error", "submitted", "finished", "parents",
           "owner", "assignee", "retry", "not_before", "retried")
#: The journal's row layout: ``[ROW_FORMAT, *values of _FIELDS]``.  Bump it (and teach
#: :func:`record_from_row` the old layout) whenever _FIELDS changes.  Format 1 rows
#: lack ``owner`` and ``assignee`` (identities came with format 2); format 2 rows lack
#: the retry policy, the delay and the retry history (format 3).
ROW_FORMAT = 3
_ROW_LENGTHS = {1: len(_FIELDS) - 5, 2: len(_FIELDS) - 3, 3: len(_FIELDS)}
ROW_STATE, ROW_FINISHED = 1 + _FIELDS.index("state"), 1 + _FIELDS.index("finished")


class Task:
    """Mutable state of a task while the broker owns it.

    ``__slots__`` keeps a queued task small (tens of thousands may wait in memory)
    and attribute access fast on the dispatch path.
    """

    __slots__ = _FIELDS + ("agent", "watchers", "seq", "caller")

    def __init__(self, task_id: str, kind: str, payload: Any, project: str, priority: int,
                 deadline: float | None, max_retries: int, submitted: float) -> None:
        self.id = task_id
        self.kind = kind
        self.payload = payload
        self.project = project
        self.priority = priority
        self.deadline = deadline
        self.max_retries = max_retries
        self.attempts = 0
        self.state = State.QUEUED
        self.result: Any = None
        self.error: str | None = None
        self.submitted = submitted
        self.finished: float | None = None
        self.agent: bytes | None = None
        self.watchers: list[bytes] = []
        self.caller: bytes | None = None  # submitted with ack=false (Client.call): its RESULT need not wait for a commit
        self.seq = 0
        self.parents: dict[str, Any] | None = None  # results of a workflow step's dependencies
        self.owner: str | None = None     # the identity that submitted it (its rights travel with it)
        self.assignee: str | None = None  # "identity/agent name" it was dispatched to, journaled
        self.retry: dict[str, Any] | None = None  # its RetryPolicy's field (bus/retry.py); None: the default
        self.not_before: float | None = None      # not dispatched before this unix time (delay, backoff)
        self.retried: list[dict[str, Any]] | None = None  # one entry per retry: attempt, error, delay

    @classmethod
    def from_spec(cls, spec: TaskSpec, task_id: str, now: float) -> "Task":
        task = cls(task_id, spec.kind, spec.payload, spec.project, spec.priority,
                   spec.deadline, spec.max_retries, now)
        task.retry = spec.retry.to_field()
        task.not_before = spec.not_before
        return task

    def to_record(self) -> dict[str, Any]:
        # Spelled out, not {f: getattr(self, f) for f in _FIELDS}: twice as fast, and it
        # runs for every accepted task and every final state (test_task checks it
        # against _FIELDS).
        return {"id": self.id, "kind": self.kind, "payload": self.payload, "project": self.project,
                "priority": self.priority, "deadline": self.deadline, "max_retries": self.max_retries,
                "attempts": self.attempts, "state": self.state, "result": self.result, "error": self.error,
                "submitted": self.submitted, "finished": self.finished, "parents": self.parents,
                "owner": self.owner, "assignee": self.assignee, "retry": self.retry, "not_before": self.not_before,
                "retried": self.retried}

    def to_row(self) -> tuple[Any, ...]:
        """The record as the journal stores it: positional, so msgpack packs half the
        bytes in half the time of the dict (tests check it against _FIELDS)."""
        return (ROW_FORMAT, self.id, self.kind, self.payload, self.project, self.priority, self.deadline,
                self.max_retries, self.attempts, self.state, self.result, self.error, self.submitted,
                self.finished, self.parents, self.owner, self.assignee, self.retry, self.not_before, self.retried)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "Task":
        task = cls(rec["id"], rec["kind"], rec.get("payload"), rec.get("project", "default"),
                   rec.get("priority", 5), rec.get("deadline"), rec.get("max_retries", 3),
                   rec.get("submitted", 0.0))
        task.attempts = rec.get("attempts", 0)
        task.state = rec.get("state", State.QUEUED)
        task.result = rec.get("result")
        task.error = rec.get("error")
        task.finished = rec.get("finished")
        task.parents = rec.get("parents")
        task.owner = rec.get("owner")
        task.retry = rec.get("retry")
        task.not_before = rec.get("not_before")
        task.retried = rec.get("retried")
        task.assignee = rec.get("assignee")
        return task

    def outcome(self) -> dict[str, Any]:
        """The RESULT entry a client receives."""
        out: dict[str, Any] = {"id": self.id, "state": self.state, "attempts": self.attempts}
        if self.state == State.DONE:
            out["result"] = self.result
        else:
            out["error"] = self.error
            if self.result is not None:  # a failure's data: exit code, output tail
                out["result"] = self.result
        if self.retried:
            out["retries"] = self.retried
        return out

    def assignment(self) -> dict[str, Any]:
        """The TASK entry an agent receives."""
        entry = {"id": self.id, "kind": self.kind, "payload": self.payload, "project": self.project,
                 "deadline": self.deadline, "attempt": self.attempts}
        if self.parents is not None:
            entry["parents"] = self.parents
        return entry


_NUMBER = (int, float)


def restored_task(rec: Any) -> Task:
    """The Task of a journal record, checked field by field; ValueError if any field
    could not have been written by a broker (a foreign or damaged row must not reach
    the queues, where a wrong type would fail far from its cause)."""
    if not isinstance(rec, dict):
        raise ValueError("record is not a map")
    for name, types in (("id", str), ("kind", str), ("project", str), ("state", str)):
        if not isinstance(rec.get(name, "default" if name == "project" else None), types):
            raise ValueError(f"field {name!r} is not a string")
    if rec["state"] not in State.ALL:
        raise ValueError(f"unknown state {rec['state']!r}")
    for name in ("priority", "max_retries", "attempts"):
        value = rec.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 31:
            raise ValueError(f"field {name!r} is not a small integer")
    for name in ("deadline", "finished", "submitted", "not_before"):
        value = rec.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, _NUMBER)):
            raise ValueError(f"field {name!r} is not a number")
    if rec.get("error") is not None and not isinstance(rec["error"], str):
        raise ValueError("field 'error' is not a string")
    if rec.get("parents") is not None and not isinstance(rec["parents"], dict):
        raise ValueError("field 'parents' is not a map")
    if rec.get("retry") is not None and not isinstance(rec["retry"], dict):
        raise ValueError("field 'retry' is not a map")
    if rec.get("retried") is not None and not isinstance(rec["retried"], list):
        raise ValueError("field 'retried' is not a list")
    for name in ("owner", "assignee"):
        if rec.get(name) is not None and not isinstance(rec[name], str):
            raise ValueError(f"field {name!r} is not a string")
    return Task.from_record(rec)


def outcome_of_record(rec: dict[str, Any]) -> dict[str, Any]:
    return Task.from_record(rec).outcome()


def record_from_row(row: Any) -> dict[str, Any]:
    """The record dict of a journal row; ValueError if it is not one."""
    if (not isinstance(row, (list, tuple)) or not row or type(row[0]) is not int
            or _ROW_LENGTHS.get(row[0]) != len(row) - 1):
        raise ValueError("not a task row of a known format")
    return dict(zip(_FIELDS, row[1:]))  # a format-1 row: owner and assignee stay absent
